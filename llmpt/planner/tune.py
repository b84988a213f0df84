"""`llmpt tune`: every layout of a model on N devices that the grammar, the matrix and the model's shape allow, at a
fixed global batch, ranked by the planner's predicted tokens/card/s among those that fit.

The axes: tensor parallel (1, 2, 4, 8 within a node; with or without sequence parallel), pipeline parallel (with
interleaving vpp 2 where the layers divide), the rest of the devices as data parallel x sharding (stage 1-3, with
optimizer offload from stage 2), recompute granularity, expert parallel over the dp ranks for mixture-of-experts
models, and micro batch x accumulation (powers of two) at the global batch. Each candidate is a strategy name plus
the --set list that makes `llmpt plan` resolve exactly it, so its estimate replays (tests/unit/test_tune.py)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, replace

from llmpt.models.registry import ModelSpec
from llmpt.planner.devices import Device
from llmpt.planner.estimate import RECOMPUTE_ORDER, Estimate, Layout, allowed, estimate, renamed
from llmpt.planner.shapes import GSHARD_DISPATCH as MOE_LAYER_FAMILIES

TP_CHOICES = (1, 2, 4, 8)  # within one node's NVLink domain
PP_CHOICES = (1, 2, 4, 8, 16)
MAX_MICRO_BATCH = 16


@dataclass(frozen=True)
class Candidate:
    layout: Layout
    estimate: Estimate

    @property
    def fits(self) -> bool:
        return bool(self.estimate.fits)

    @property
    def speed(self) -> float:
        return self.estimate.tokens_per_card_per_sec or 0.0

    def why(self) -> str:
        """One line: what the layout does and what it costs."""
        s, d = self.layout.strategy, self.layout.degrees
        parts = [f"tp{d.tp}" + ("+sp" if s.parallel.sequence_parallel else "")]
        if d.pp > 1:
            parts.append(f"pp{d.pp}" + (f" vpp{s.parallel.virtual_pp}" if s.parallel.virtual_pp > 1 else ""))
        if d.dp > 1:
            parts.append(f"dp{d.dp}" + (f" (experts over ep{d.ep})" if d.ep > 1 else ""))
        if d.sharding > 1:
            parts.append(f"sharding{d.sharding} stage {s.parallel.stage}" + (" +offload" if s.parallel.offload else ""))
        parts.append(f"recompute {s.recompute.granularity}")
        parts.append(f"micro batch {s.batch.micro_batch_size} x {s.batch.grad_accum}")
        e = self.estimate
        spare = (e.capacity_mb or 0) - e.memory_mb_per_card
        room = f"{spare / 1024:.1f} GiB spare" if self.fits else f"{-spare / 1024:.1f} GiB over"
        return f"{', '.join(parts)}: {room}"


def base_strategy(spec: ModelSpec, world: int) -> str:
    """The strategy tune renames every candidate from (its preset carries the defaults): pure data parallel; for an
    MoE model whose MoE layer takes the dp ranks as expert parallel (qwen2_moe, deepseek_v2: llmpt/models/shape.py
    refuses dp without ep), dp with ep; where its experts do not divide over `world`, sharding stage 1 instead."""
    if world == 1:
        return "dp1"
    if spec.num_experts and spec.family in MOE_LAYER_FAMILIES:
        return f"dp{world}ep{world}" if spec.num_experts % world == 0 else f"sd{world}_stage1"
    return f"dp{world}"


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def batches(per_replica: int, pp: int, vpp: int) -> list[tuple[int, int]]:
    """(micro batch, accumulation) splits of `per_replica` sequences, micro batch ascending (powers of two): 1F1B
    wants a micro batch per stage, the interleaved schedule a multiple of the stages."""
    out, mbs = [], 1
    while mbs <= min(per_replica, MAX_MICRO_BATCH):
        acc = per_replica // mbs
        if per_replica % mbs == 0 and acc >= pp and (vpp == 1 or acc % pp == 0):
            out.append((mbs, acc))
        mbs *= 2
    return out


def layouts(base: Layout, world: int, per_node: int, global_seqs: int) -> Iterator[tuple[Layout, int]]:
    """Every parallel layout of `world` devices for base's model: (layout, sequences per data-parallel replica)."""
    spec, s = base.spec, base.strategy
    layers = spec.num_hidden_layers
    flash = s.kernels.flash_attention
    granularities = [g for g in RECOMPUTE_ORDER if not (g == "core_attn" and flash)]  # flash keeps no scores
    tps = [t for t in TP_CHOICES if t <= per_node and world % t == 0]
    for tp, pp in itertools.product(tps, PP_CHOICES):
        if pp > layers or world % (tp * pp):
            continue
        rest = world // (tp * pp)
        for dp in _divisors(rest):
            sd = rest // dp
            if global_seqs % (dp * sd):
                continue
            stages = (1, 2, 3) if sd > 1 else (1,)
            vpps = (1, 2) if pp > 1 and layers % (pp * 2) == 0 else (1,)
            sps = (False, True) if tp > 1 else (False,)
            # expert parallel splits an MoE model's experts over the dp ranks (ep = dp on the pinned stack; which
            # families take it is the model check's call, in `allowed`)
            eps = (1, dp) if spec.num_experts and dp > 1 else (1,)
            for stage, vpp, sp, g, ep in itertools.product(stages, vpps, sps, granularities, eps):
                for offload in (False, True) if sd > 1 and stage >= 2 else (False,):
                    extra = {"ep": ep} if ep > 1 else {}
                    try:
                        st = renamed(
                            s, base.degrees, dp=dp if dp > 1 else None, tp=tp, pp=pp, sharding=sd,
                            stage=stage, offload=offload, virtual_pp=vpp, sequence_parallel=sp, granularity=g, **extra,
                        )  # fmt: skip
                        dims = replace(base.degrees, dp=dp, tp=tp, pp=pp, sharding=sd, **extra)
                    except Exception:  # noqa: BLE001 - a combination the grammar refuses is not a candidate
                        continue
                    if dims.unclipped_beside_ep():  # refused with the default gradient clipping
                        continue
                    yield replace(base, strategy=st, degrees=dims, nproc_per_node=per_node), global_seqs // (dp * sd)


def with_batch(lay: Layout, mbs: int, acc: int) -> Layout:
    st = lay.strategy
    batch = st.batch.model_copy(update={"micro_batch_size": mbs, "grad_accum": acc})
    return replace(lay, strategy=st.model_copy(update={"batch": batch}))


def _order(lay: Layout, e: Estimate) -> tuple:
    """Fastest first; at equal predicted speed the simpler layout: without optimizer offload, a lower sharding
    stage, less recompute, then less memory."""
    p = lay.strategy.parallel
    speed = round(e.tokens_per_card_per_sec or 0.0, 6)
    recompute = RECOMPUTE_ORDER.index(lay.strategy.recompute.granularity)
    return (-speed, p.offload, p.stage if lay.degrees.sharding > 1 else 0, recompute, e.memory_mb_per_card)


def replica_counts(world: int, per_node: int, layers: int) -> list[int]:
    """How many data-parallel replicas (dp x sharding) the layouts of `world` devices can have: world / (tp x pp)."""
    return sorted(
        {world // (tp * pp) for tp in TP_CHOICES for pp in PP_CHOICES
         if tp <= per_node and pp <= layers and world % (tp * pp) == 0}
    )  # fmt: skip


def rank(base: Layout, world: int, per_node: int, global_seqs: int, device: Device, top: int) -> tuple[list, int]:
    """The `top` fastest layouts that fit (fewer if fewer fit), fastest first; and how many layouts fit.
    The matrix and shape checks (`allowed`) run only on the estimates that could make the list."""
    scored = []
    for parallel, per_replica in layouts(base, world, per_node, global_seqs):
        p = parallel.strategy.parallel
        for mbs, acc in batches(per_replica, parallel.degrees.pp, p.virtual_pp):
            lay = with_batch(parallel, mbs, acc)
            try:
                e = estimate(lay, device)
            except (ValueError, ZeroDivisionError):
                break
            if not e.fits:
                break  # memory grows with the micro batch: no larger one fits either
            scored.append((_order(lay, e), lay, e))
    scored.sort(key=lambda x: x[0])
    picked: list[Candidate] = []
    seen: set[tuple[str, int, int]] = set()
    for _, lay, e in scored:
        key = (lay.strategy.name, lay.strategy.batch.micro_batch_size, lay.strategy.batch.grad_accum)
        if key in seen or not allowed(lay):
            continue
        seen.add(key)
        picked.append(Candidate(lay, e))
        if len(picked) == top:
            break
    return picked, len(scored)
