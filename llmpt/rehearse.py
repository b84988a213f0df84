"""`llmpt rehearse`: run a strategy's exact topology on CPU ranks with the model shrunk within its family,
and report pass/fail per stage (plan, ranks up, groups formed, loss finite, checkpoint round-trip)."""

from __future__ import annotations

import difflib
import json
import math
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmpt.errors import LlmptError
from llmpt.fsutil import check_writable, why_unwritable
from llmpt.launch.summary import read_metrics
from llmpt.launch.supervise import TrainingFailed, prepare_output_dir, run_training
from llmpt.models.registry import NOT_TRAINABLE, ModelSpec, all_models, resolve_model
from llmpt.resolve import RunRequest, resolve_plan, resolve_run
from llmpt.run_dir import EVENT_BEGIN, RunDir

STEPS = 4
SAVE_AT = 2
HEAD_DIM = 16


@dataclass
class Stage:
    name: str
    ok: bool | None = None  # None: not reached
    detail: str = ""


@dataclass
class Rehearsal:
    model: str
    strategy: str
    ranks: int
    stages: list[Stage] = field(default_factory=list)
    settings: list[str] = field(default_factory=list)  # the --set items rehearsed with the strategy

    @property
    def passed(self) -> bool:
        return all(s.ok for s in self.stages)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "strategy": self.strategy,
            "ranks": self.ranks,
            "set": self.settings,
            "passed": self.passed,
            "stages": [{"name": s.name, "ok": s.ok, "detail": s.detail} for s in self.stages],
        }


def tiny_of(spec: ModelSpec) -> ModelSpec:
    """The tiny model of the same family, matrix row and position encoding (Baichuan's ALiBi llama, Llama-3's GQA
    and rope scaling), else the family's own."""
    for m in all_models():
        if m.id.endswith("-tiny") and (m.family, m.matrix_row, m.position) == (
            spec.family,
            spec.matrix_row,
            spec.position,
        ):
            return m
    return resolve_model(f"{spec.family}-tiny")


def shrink(tiny: ModelSpec, tp: int, stages: int) -> ModelSpec:
    """The tiny model reshaped so that tp divides heads, kv heads and FFN width, and pp x vpp divides layers."""
    group = tiny.num_attention_heads // tiny.num_key_value_heads
    kv = math.lcm(tiny.num_key_value_heads, tp)
    heads = kv * group
    hidden = heads * HEAD_DIM
    ffn = math.ceil(hidden * 11 / 4 / tp) * tp  # ~llama's 2.75 x hidden, split evenly over tp
    layers = math.ceil(max(tiny.num_hidden_layers, stages) / stages) * stages
    return tiny.model_copy(
        update={
            "hidden_size": hidden,
            "num_attention_heads": heads,
            "num_key_value_heads": kv,
            "intermediate_size": 2 * ffn if tiny.family == "qwen" else ffn,
            "num_hidden_layers": layers,
        }
    )


def rehearse(
    model: str, strategy: str, output_dir: str | None = None, keep: bool = False, set_items: tuple[str, ...] = ()
) -> Rehearsal:
    """The strategy (with `set_items`, --set's KEY=VALUE overrides: a tune pick's micro batch, recompute, …) checked
    on the real model, then run on CPU ranks with the family's tiny model: train, save, resume, compare."""
    spec = resolve_model(model)
    out = Path(output_dir or f"runs/rehearse-{spec.id.replace('/', '--')}-{strategy}")
    # bad input (an unknown or malformed strategy, a cell the matrix refuses, what CPU ranks cannot run) is
    # refused like everywhere else: LlmptError, exit 2, before anything runs
    # capability matrix + real shapes, on the strategy's own world size
    plan = resolve_plan(RunRequest(model=spec, strategy=strategy, local=False, set_items=tuple(set_items)))
    _check_rehearsal_dir(out)
    plan_stage = Stage(
        "plan (real model, GPU topology)",
        True,
        f"{plan.expansion.world_size} ranks, {plan.expansion.degrees.describe()}, micro batch "
        f"{plan.strategy.batch.micro_batch_size} x {plan.strategy.batch.grad_accum}",
    )
    d = plan.expansion.degrees
    small = shrink(tiny_of(spec), d.tp, d.pp * plan.strategy.parallel.virtual_pp)
    result = Rehearsal(spec.id, plan.strategy.name, plan.expansion.world_size, [plan_stage], list(set_items))
    init = out / "init"
    first = out / "run"
    common = dict(
        model=small,
        strategy=strategy,
        device="cpu",
        gpus=str(plan.expansion.world_size),
        max_steps=STEPS,
        save_steps=SAVE_AT,
        set_items=("train.report_to=none", "train.warmup_steps=1", *set_items),
        allow_partial=True,
    )
    cfg = resolve_run(RunRequest(output_dir=str(first), **common))  # vocab and seq len of the run
    shutil.rmtree(out, ignore_errors=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "llmpt.train.init_weights",
            small.id,
            str(init),
            "--vocab-size",
            str(cfg.model.config["vocab_size"]),
            "--seq-len",
            str(cfg.data.seq_len),
            "--shape",
            json.dumps({k: getattr(small, k) for k in _SHAPE}),
        ],
        check=True,
        capture_output=True,
    )
    common["init_from"] = str(init)
    cfg = resolve_run(RunRequest(output_dir=str(first), overwrite=True, **common))
    failure = None
    try:
        prepare_output_dir(cfg, overwrite=True)
        summary = run_training(cfg)
    except TrainingFailed as e:
        failure, summary = e.message.splitlines()[0], None
    result.stages += _judge_first_run(first, cfg.world_size, failure, summary)
    rt = Stage("checkpoint round-trip")
    if summary is not None:
        again = first.parent / "resumed"
        shutil.copytree(RunDir(first).checkpoint(SAVE_AT), RunDir(again).checkpoint(SAVE_AT))
        cfg2 = resolve_run(RunRequest(output_dir=str(again), resume=True, **common))
        try:
            prepare_output_dir(cfg2, overwrite=False)
            s2 = run_training(cfg2)
            a = {p["step"]: p["loss"] for p in summary["losses"]}
            b = {p["step"]: p["loss"] for p in s2["losses"]}
            diffs = [abs(a[k] - b[k]) / abs(a[k]) for k in b if k > SAVE_AT and k in a]
            rt.ok = bool(diffs) and max(diffs) <= 1e-5
            rt.detail = (
                f"steps {SAVE_AT + 1}..{STEPS} after reload: max relative difference {max(diffs):.1e}"
                if diffs
                else "no steps after the reload"
            )
        except TrainingFailed as e:
            rt.ok, rt.detail = False, e.message.splitlines()[0]
    result.stages.append(rt)
    if not keep and result.passed:
        shutil.rmtree(out, ignore_errors=True)
    return result


_PARTS = ("init", "run", "resumed")  # what a rehearsal writes in its directory


def _check_rehearsal_dir(out: Path) -> None:
    """The rehearsal replaces its directory: it must be writable and hold nothing but an earlier rehearsal's parts
    (checked before anything is written or removed)."""
    try:
        check_writable(out)
    except OSError as e:
        raise LlmptError(f"--output-dir {out}: {why_unwritable(out, e)}", "choose a writable --output-dir") from None
    if out.is_dir() and (other := sorted(p.name for p in out.iterdir() if p.name not in _PARTS)):
        raise LlmptError(
            f"--output-dir {out} holds files that are not a rehearsal's ({', '.join(other[:3])}"
            f"{', …' if len(other) > 3 else ''}); a rehearsal replaces its directory",
            "pass a new or empty --output-dir",
        )


_RUN_STAGES = ("ranks up", "groups formed", "loss finite", "checkpoint round-trip")
_SHAPE = ("hidden_size", "num_attention_heads", "num_key_value_heads", "intermediate_size", "num_hidden_layers")


def _judge_first_run(run: Path, world: int, failure: str | None, summary: dict | None) -> list[Stage]:
    rd = RunDir(run)
    logs = RunDir.worker_logs(rd.log_dir())
    records = read_metrics(rd.metrics)
    up = Stage("ranks up", len(logs) == world, f"{len(logs)}/{world} rank logs")
    began = any(r.get("event") == EVENT_BEGIN for r in records)
    groups = Stage("groups formed", began, "fleet initialised, model built" if began else (failure or "no start"))
    losses = [p["loss"] for p in summary["losses"]] if summary else []
    finite = bool(losses) and all(math.isfinite(x) for x in losses)
    loss = Stage(
        "loss finite",
        finite,
        f"{losses[0]:.4f} -> {losses[-1]:.4f} over {len(losses)} steps" if losses else (failure or "no losses"),
    )
    return [up, groups, loss]


# the representative strategy that exercises each matrix column on 2 CPU ranks
VERIFY_STRATEGY = {
    "dp": "dp2",
    "tp": "tp2",
    "pp": "pp2",
    "sp": "tp2_sp",
    "s1_rc": "sd2_stage1_rc",
    "s1_dp": "sd2_stage1",
    "s2_rc": "sd2_stage2_rc",
    "s2_dp": "sd2_stage2",
    "s3_rc": "sd2_stage3_rc",
    "s3_dp": "sd2_stage3",
    "sr": "dp2_rccore",
}
GPU_ONLY = {"fa": "flash attention has no CPU kernel in Paddle"}


def verify_strategy(spec: ModelSpec, column: str) -> str:
    """The strategy that rehearses `column` for `spec`: VERIFY_STRATEGY's, with ep = dp where the family's MoE layer
    splits the experts over the data-parallel ranks (qwen2_moe, deepseek_v2: plain dp2 is refused for them)."""
    from llmpt.models.registry import EXPERT_PARALLEL_FAMILIES
    from llmpt.strategies.grammar import parse_name, rename

    name = VERIFY_STRATEGY[column]
    dp = parse_name(name).parallel.dp or 1
    return rename(name, ep=dp) if spec.family in EXPERT_PARALLEL_FAMILIES and dp > 1 else name


def verified_path() -> Path:
    from llmpt.fsutil import cache_dir

    return cache_dir() / "matrix_verified.json"


def load_verified() -> dict[str, dict[str, dict[str, str]]]:
    p = verified_path()
    return json.loads(p.read_text()) if p.is_file() else {}


def verify_matrix(model: str | None = None, cells: list[str] | None = None, progress=None) -> dict:
    """Rehearse every supported (or partial) cell of each row (or of MODEL's row); store and return results."""
    import datetime

    from llmpt.models.matrix import load_matrix

    m = load_matrix()
    rows = [m.row(resolve_model(model).matrix_row)] if model else list(m.rows)
    known = [c.key for c in m.columns]
    for c in cells or []:
        if c not in known:
            close = difflib.get_close_matches(c, known, n=1)
            mean = f" (did you mean {close[0]!r}?)" if close else ""
            raise LlmptError(f"--cells: unknown column {c!r}{mean}; allowed: {', '.join(known)}")
    today = datetime.date.today().isoformat()
    results = load_verified()
    for row in rows:
        members = [x for x in all_models() if x.matrix_row == row.name]
        if model:
            members.sort(key=lambda x: x.id != resolve_model(model).id)
        trainable = [x for x in members if x.family not in NOT_TRAINABLE]
        for col in m.columns:
            if (cells and col.key not in cells) or row.cells[col.key].status not in ("supported", "partial"):
                continue
            if col.key in GPU_ONLY:
                entry = {"status": "gpu-only", "detail": GPU_ONLY[col.key]}
            elif not trainable:
                entry = {"status": "failed", "detail": NOT_TRAINABLE[members[0].family]}
            else:
                strategy = verify_strategy(trainable[0], col.key)
                what = f"{trainable[0].id} {strategy}"
                try:
                    r = rehearse(trainable[0].id, strategy)
                except LlmptError as e:
                    entry = {"status": "failed", "detail": f"{what}: refused: {e.message}"}
                else:
                    bad = next((st for st in r.stages if not st.ok), None)
                    entry = {
                        "status": "verified" if r.passed else "failed",
                        "detail": what + (f": {bad.name}: {bad.detail}" if bad else ""),
                    }
            entry["source"] = f"llmpt rehearse on CPU {today}"
            results.setdefault(row.name, {})[col.key] = entry
            if progress:
                progress(row.name, col.key, entry)
    verified_path().parent.mkdir(parents=True, exist_ok=True)
    verified_path().write_text(json.dumps(results, indent=1) + "\n")
    return results
