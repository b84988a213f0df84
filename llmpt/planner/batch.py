"""The batch of a strategy whose preset and user leave it unset: the global batch of its preset family, split into
micro batch x accumulation the way the planner predicts fastest on the target card (CPU ranks: the largest micro
batch that fits this machine's RAM)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from llmpt.planner.devices import Device
from llmpt.planner.estimate import Layout, estimate, host_memory_mb
from llmpt.strategies.parallel_dims import ParallelDims

# The seed configurations' global batch (llm/llama/pretrain-*-tp2sd4_stage2.json): micro batch 2 x accumulation 8
# x 4 data-parallel ranks of 4096 tokens. The batch of a layout with no preset family holds this many tokens.
SEED_GLOBAL_TOKENS = 2 * 8 * 4 * 4096


@dataclass(frozen=True)
class BatchChoice:
    micro_batch_size: int
    grad_accum: int
    why: str


def family_batch(dims: ParallelDims, stage: int, seq_len: int) -> tuple[int, str]:
    """Sequences per data-parallel rank per step, and where that number comes from: the shipped presets that split
    the model the same way (tp, pp, sharding, sep, cp; the same sharding stage first), else the seed's tokens."""
    from llmpt.strategies.grammar import parse_name
    from llmpt.strategies.presets import list_presets, presets_dir, read_yaml

    same = []
    for name in list_presets():
        p = parse_name(name).parallel
        batch = read_yaml(presets_dir() / f"{name}.yaml").get("batch") or {}
        if (p.tp, p.pp, p.sharding, p.sep, p.cp) == (dims.tp, dims.pp, dims.sharding, dims.sep, dims.cp) and batch:
            same.append((p.stage != stage, name, batch.get("micro_batch_size", 1) * batch.get("grad_accum", 1)))
    if same:
        _, name, per_rank = min(same)
        return per_rank, f"preset family {name}: {per_rank} sequences per data-parallel rank"
    per_rank = max(1, round(SEED_GLOBAL_TOKENS / seq_len / dims.data_degree))
    return per_rank, f"the seed's global batch of {SEED_GLOBAL_TOKENS} tokens"


def choose_batch(lay: Layout, device: Device | None) -> BatchChoice:
    """Split the family's batch into micro batch x accumulation: of the splits that fit, the fastest (CPU: the
    largest micro batch); if none fits, micro batch 1 (the fit check then names the knob to turn)."""
    s, d = lay.strategy, lay.degrees
    per_rank, why = family_batch(d, s.parallel.stage, lay.seq_len)
    pp, vpp = d.pp, s.parallel.virtual_pp
    splits = []
    mbs = 1
    while mbs <= per_rank:
        acc = per_rank // mbs
        # 1F1B wants at least one micro batch per stage; the interleaved schedule a multiple of the stages
        if per_rank % mbs == 0 and acc >= pp and (vpp == 1 or acc % pp == 0):
            splits.append((mbs, acc))
        mbs *= 2
    if not splits:
        splits = [(1, max(per_rank, pp))]
    capacity = _capacity(lay, device)
    scored = []
    for mbs, acc in splits:
        trial = replace(lay, strategy=s.model_copy(update={"batch": s.batch.model_copy(update={
            "micro_batch_size": mbs, "grad_accum": acc})}))  # fmt: skip
        e = estimate(trial, device)
        fits = capacity is None or e.memory_mb_per_card <= capacity
        speed = e.tokens_per_card_per_sec if e.tokens_per_card_per_sec is not None else float(mbs)
        scored.append((fits, speed, -mbs, mbs, acc))
    fits, _, _, mbs, acc = max(scored)
    if not fits:
        mbs, acc = splits[0]
    where = device.name if device else "CPU rank"
    verdict = "fastest fitting split" if fits else "nothing fits; the smallest micro batch"
    return BatchChoice(mbs, acc, f"planner: {verdict} on {where} ({why})")


def _capacity(lay: Layout, device: Device | None) -> float | None:
    from llmpt.planner.estimate import usable_mb

    if device is not None:
        return usable_mb(device)
    ram = host_memory_mb()
    return None if ram is None else ram / lay.nproc_per_node
