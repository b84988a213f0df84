"""--resume: what a checkpoint was saved by, and whether this run may continue it (on the same layout or another).

Every checkpoint's completion marker (llmpt/launch/checkpoints.py) records the run that saved it (`SavedRun`): the
model, the layout and the batch. A resume continues the saved run only where that is exact:
  * the same model (registry id and every integer of its config: widths, layers, heads, vocabulary, positions);
  * the same sequence length and the same global batch (sequences per optimizer step): PaddleNLP's Trainer puts the
    data position at global step x global batch and the schedule counts steps, so a different batch would skip or
    repeat samples and stretch the schedule. Refused, with the --set that keeps it on the new layout;
  * on another layout, a unified checkpoint: PaddleNLP's unified checkpoint holds whole tensors (weights and AdamW
    moments) and re-splits them for the new tp/pp/sharding on load. PaddleNLP 3.0.0b4 writes none under sharding
    stage 3 (it saves per rank there), nor did llmpt before it turned them on: such a checkpoint resumes only on
    the layout that saved it.
Nothing here imports paddle; the refusals are made before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from llmpt.errors import LlmptError
from llmpt.launch.checkpoints import read_marker
from llmpt.run_config import RunConfig
from llmpt.run_dir import RunDir
from llmpt.strategies.parallel_dims import ParallelDims

# unified checkpoint's index files (paddlenlp.utils.env SAFE_WEIGHTS_INDEX_NAME, SAFE_OPTIMIZER_INDEX_NAME)
UNIFIED_INDEXES = ("model.safetensors.index.json", "optimizer.safetensors.index.json")


def model_dims(config: dict[str, Any]) -> dict[str, int]:
    """The integers of a PaddleNLP model config (widths, layers, heads, vocabulary, positions, token ids): what must
    not change for a checkpoint's tensors to fit the model."""
    return {k: v for k, v in sorted(config.items()) if isinstance(v, int) and not isinstance(v, bool)}


@dataclass(frozen=True)
class SavedRun:
    """The run that saved a checkpoint: its model, layout and batch."""

    model: str
    model_dims: dict[str, int]
    strategy: str
    degrees: ParallelDims
    stage: int  # sharding stage; 0 without sharding
    micro_batch_size: int
    grad_accum: int
    seq_len: int
    init_from: str | None = None
    virtual_pp: int = 1  # pipeline chunks per stage: which layers a stage holds

    @property
    def global_batch(self) -> int:
        """Sequences per optimizer step."""
        return self.micro_batch_size * self.grad_accum * self.degrees.data_degree

    @property
    def layout(self) -> tuple[ParallelDims, int, int]:
        """What decides how the tensors are split over the ranks."""
        return self.degrees, self.stage, self.virtual_pp

    @property
    def layout_text(self) -> str:
        """'tp2sd2_stage1 (dp1 x tp2 x sd2)'; just the name when it says everything."""
        described = self.degrees.describe()
        return self.strategy if described == self.strategy else f"{self.strategy} ({described})"

    @property
    def batch_text(self) -> str:
        return f"micro batch {self.micro_batch_size} x accumulation {self.grad_accum} x {_readers(self.degrees)}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "model_dims": self.model_dims,
            "strategy": self.strategy,
            "degrees": self.degrees.to_dict(),
            "stage": self.stage,
            "micro_batch_size": self.micro_batch_size,
            "grad_accum": self.grad_accum,
            "global_batch": self.global_batch,
            "seq_len": self.seq_len,
            "init_from": self.init_from,
            "virtual_pp": self.virtual_pp,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SavedRun:
        return cls(
            model=d["model"],
            model_dims=dict(d["model_dims"]),
            strategy=d["strategy"],
            degrees=ParallelDims.from_dict(d["degrees"]),
            stage=int(d["stage"]),
            micro_batch_size=int(d["micro_batch_size"]),
            grad_accum=int(d["grad_accum"]),
            seq_len=int(d["seq_len"]),
            init_from=d.get("init_from"),
            virtual_pp=int(d.get("virtual_pp", 1)),
        )

    @classmethod
    def of(cls, cfg: RunConfig) -> SavedRun:
        return cls(
            model=cfg.model.id,
            model_dims=model_dims(cfg.model.config),
            strategy=cfg.strategy.name,
            degrees=cfg.degrees,
            stage=cfg.strategy.parallel.stage if cfg.degrees.sharding > 1 else 0,
            micro_batch_size=cfg.strategy.batch.micro_batch_size,
            grad_accum=cfg.strategy.batch.grad_accum,
            seq_len=cfg.data.seq_len,
            init_from=cfg.model.init_from,
            virtual_pp=cfg.strategy.parallel.virtual_pp,
        )


def _readers(d: ParallelDims) -> str:
    """'2 data-parallel ranks (dp2)': the ranks that read different data."""
    n = d.data_degree
    parts = [p for p in (f"dp{d.dp}" if (d.dp or 1) > 1 else "", f"sd{d.sharding}" if d.sharding > 1 else "") if p]
    return f"{n} data-parallel rank{'s' if n > 1 else ''}" + (f" ({' x '.join(parts)})" if parts else "")


def saved_run_record(cfg: RunConfig) -> dict[str, Any]:
    """What the rank writes into each checkpoint's completion marker (llmpt.launch.checkpoints.mark_complete)."""
    return SavedRun.of(cfg).to_dict()


def saved_run(ckpt: Path) -> SavedRun | None:
    """The run that saved `ckpt`: from its marker; for a marker written before llmpt recorded it, from the run
    directory's run.yaml (the last attempt's); None when neither says."""
    record = (read_marker(ckpt) or {}).get("run")
    try:
        if record:
            return SavedRun.from_dict(record)
    except (KeyError, TypeError, ValueError, LlmptError):
        return None
    run_yaml = RunDir(ckpt.parent).run_yaml
    try:
        data = yaml.safe_load(run_yaml.read_text(encoding="utf-8"))
        return SavedRun.of(RunConfig.model_validate(data))
    except Exception:  # noqa: BLE001 - a missing or foreign run.yaml says nothing about the checkpoint
        return None


def is_unified(ckpt: Path) -> bool:
    """A PaddleNLP unified checkpoint: whole tensors with a safetensors index for the weights and the optimizer."""
    return all((ckpt / name).is_file() for name in UNIFIED_INDEXES)


def batch_that_keeps(global_batch: int, degrees: ParallelDims, micro_batch_size: int) -> tuple[int, int] | None:
    """(micro batch, accumulation) giving `global_batch` sequences per step on `degrees`: the largest micro batch
    up to `micro_batch_size` that divides the share of each data-parallel rank; None when no split does."""
    readers = degrees.data_degree
    if global_batch % readers:
        return None
    share = global_batch // readers
    micro = max(m for m in range(1, min(micro_batch_size, share) + 1) if share % m == 0)
    return micro, share // micro


def check_resume(cfg: RunConfig) -> RunConfig:
    """`cfg` (resolved with --resume) if it may continue its checkpoint, with a note when the layout changes;
    LlmptError naming what differs otherwise."""
    assert cfg.resume_from is not None
    ckpt = Path(cfg.resume_from)
    saved = saved_run(ckpt)
    if saved is None:
        return cfg  # a checkpoint from before llmpt recorded its run, without a run.yaml: as before, unchecked
    now = SavedRun.of(cfg)
    where = f"{ckpt.name} (saved by {saved.model} on {saved.strategy})"
    if now.model != saved.model:
        raise LlmptError(
            f"--resume: {where} holds {saved.model}, not {now.model}",
            f"resume it as {saved.model}, or start {now.model} in another --output-dir",
        )
    if now.seq_len != saved.seq_len:
        raise LlmptError(
            f"--resume --seq-len {now.seq_len}: {where} was trained on {saved.seq_len}-token sequences; the data "
            f"position counts sequences of {saved.seq_len}",
            f"resume with --seq-len {saved.seq_len}",
        )
    keys = sorted(set(saved.model_dims) | set(now.model_dims))
    changed = [k for k in keys if saved.model_dims.get(k) != now.model_dims.get(k)]
    if changed:
        k = changed[0]
        init = f"--init-from {saved.init_from}" if saved.init_from else "no --init-from"
        raise LlmptError(
            f"--resume: {where} holds a model with {k} {saved.model_dims.get(k)}; this run builds "
            f"{now.model_dims.get(k)}",
            f"resume with the model settings of the run that saved it ({init})",
        )
    moves = now.layout != saved.layout
    if moves and not is_unified(ckpt):
        stage3 = saved.stage == 3
        why = (
            "PaddleNLP writes no unified checkpoint under sharding stage 3"
            if stage3
            else "it predates llmpt's unified checkpoints"
        )
        stays = "under sharding stage 3 every checkpoint stays on its layout" if stage3 else "its next ones can move"
        raise LlmptError(
            f"--resume --strategy {now.strategy}: {where} was saved per rank, not as a unified checkpoint ({why}); "
            f"it can only continue on {saved.layout_text}",
            f"resume with --strategy {saved.strategy}; {stays}",
        )
    if now.global_batch != saved.global_batch:
        keep = batch_that_keeps(saved.global_batch, now.degrees, now.micro_batch_size)
        how = (
            f"keep it with --set strategy.batch.micro_batch_size={keep[0]} --set strategy.batch.grad_accum={keep[1]}"
            if keep
            else f"no micro batch x accumulation on {now.strategy} ({_readers(now.degrees)}) makes {saved.global_batch}"
            f"; pick a layout whose dp x sharding divides {saved.global_batch}"
        )
        raise LlmptError(
            f"--resume --strategy {now.strategy}: global batch {now.global_batch} sequences per step "
            f"({now.batch_text}) but {where} was trained with {saved.global_batch} ({saved.batch_text}); the schedule "
            f"and the data position count steps of {saved.global_batch}",
            f"{how}"
            + (
                f"; to go on with another global batch, start a new run from its weights with --init-from {ckpt} "
                "(the optimizer state starts afresh)"
                if is_unified(ckpt)
                else ""
            ),
        )
    if not moves:
        return cfg
    step = int(ckpt.name.rsplit("-", 1)[1])
    note = (
        f"--resume: {ckpt.name} was saved by {saved.layout_text}; continuing on {now.layout_text}: PaddleNLP's "
        f"unified checkpoint re-splits the weights and optimizer state; global batch {now.global_batch} x "
        f"{now.seq_len} tokens kept, data continues at sequence {step * now.global_batch}"
    )
    return cfg.model_copy(update={"notes": [*cfg.notes, note]})
