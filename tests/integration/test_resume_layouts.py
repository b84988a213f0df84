"""--resume on another layout continues the run exactly: weights, AdamW moments and the data position.

One uninterrupted 12-step dp1 run is the reference. One run directory is then trained as a chain, each attempt
stopping with a checkpoint (train.stop_at_step) and the next resuming it with --resume on another strategy:

    pp2 [1..3] -> dp1 [4..5] -> sd2_stage1 [6..7] -> tp2 [8..9] -> dp2 [10..12]

which covers pipeline -> data parallel (and fewer devices), one device -> two (more devices), sharding -> tensor
parallel and tensor -> data parallel, each once, in five launches. Every run starts from one saved initialisation and
trains the same global batch (8 sequences: micro batch x accumulation x dp x sharding), fp32, dropout off, so each
attempt's losses must equal the reference's within 1e-4 relative (measured: within 1e-7). A resume that lost the
optimizer state, skipped or repeated data, or split a tensor wrongly moves them by far more.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from llmpt.launch.checkpoints import read_marker
from llmpt.run_config import load_run_yaml

pytest.importorskip("paddlenlp")
pytestmark = [pytest.mark.paddle, pytest.mark.slow]

STEPS = 12
COMMON = ("--set", "train.report_to=none", "--set", "train.warmup_steps=2", "--set", "train.learning_rate=3e-3")


@dataclass(frozen=True)
class Segment:
    strategy: str
    micro_batch: int
    accum: int
    stop: int  # the last step this attempt trains (STEPS: to the end)


REFERENCE = Segment("dp1", 4, 2, STEPS)
CHAIN = (
    Segment("pp2", 4, 2, 3),
    Segment("dp1", 4, 2, 5),
    Segment("sd2_stage1", 4, 1, 7),
    Segment("tp2", 4, 2, 9),
    Segment("dp2", 4, 1, STEPS),
)
TRANSITIONS = {
    "pp2 -> dp1 (pipeline to data parallel, 2 devices to 1)": 1,
    "dp1 -> sd2_stage1 (1 device to 2)": 2,
    "sd2_stage1 -> tp2 (sharding to tensor parallel)": 3,
    "tp2 -> dp2 (tensor to data parallel)": 4,
}


@dataclass
class Attempt:
    segment: Segment
    summary: dict | None = None
    notes: tuple[str, ...] = ()
    error: str | None = None


def _train(llmpt, out: Path, seg: Segment, init: Path, *extra: str, check: bool = True):
    args = (
        "train", "llama-tiny", "--strategy", seg.strategy, "--device", "cpu", "--init-from", init,
        "--max-steps", STEPS, "--json", "-o", out,
        "--set", f"strategy.batch.micro_batch_size={seg.micro_batch}", "--set", f"strategy.batch.grad_accum={seg.accum}",
        *COMMON, *extra,
    )  # fmt: skip
    return llmpt.json(*args, timeout=600) if check else llmpt(*args, check=False)


@pytest.fixture(scope="module")
def init(llama_tiny_init) -> Path:
    return llama_tiny_init


@pytest.fixture(scope="module")
def reference(llmpt, init, tmp_path_factory) -> dict[int, float]:
    summary = _train(llmpt, tmp_path_factory.mktemp("ref") / "run", REFERENCE, init)
    return {p["step"]: p["loss"] for p in summary["losses"]}


@pytest.fixture(scope="module")
def chain(llmpt, init, tmp_path_factory) -> tuple[Path, list[Attempt]]:
    """The chained run: every attempt's summary and run.yaml notes; after a failed attempt the rest are not run."""
    out = tmp_path_factory.mktemp("chain") / "run"
    attempts = []
    for i, seg in enumerate(CHAIN):
        attempt = Attempt(seg)
        attempts.append(attempt)
        if i and attempts[i - 1].summary is None:
            attempt.error = f"not run: attempt {i} ({CHAIN[i - 1].strategy}) failed"
            continue
        extra = (("--resume",) if i else ()) + (("--set", f"train.stop_at_step={seg.stop}") if seg.stop < STEPS else ())
        try:
            attempt.summary = _train(llmpt, out, seg, init, *extra)
        except AssertionError as e:
            attempt.error = str(e)
            continue
        attempt.notes = tuple(load_run_yaml(out / "run.yaml").notes)
    return out, attempts


def _worst(reference: dict[int, float], summary: dict, steps: range) -> float:
    got = {p["step"]: p["loss"] for p in summary["losses"]}
    assert set(steps) <= set(got), (sorted(got), steps)
    return max(abs(got[s] - reference[s]) / abs(reference[s]) for s in steps)


def test_reference_learns(reference):
    assert sorted(reference) == list(range(1, STEPS + 1)) and reference[STEPS] < reference[1] - 0.3


def test_the_first_layout_matches_the_reference(chain, reference):
    _, attempts = chain
    first = attempts[0]
    assert first.summary is not None, first.error
    assert _worst(reference, first.summary, range(1, first.segment.stop + 1)) <= 1e-4


@pytest.mark.parametrize("transition", list(TRANSITIONS))
def test_resume_on_another_layout_continues_exactly(transition, chain, reference):
    _, attempts = chain
    i = TRANSITIONS[transition]
    before, now = attempts[i - 1], attempts[i]
    assert now.summary is not None, now.error
    load = now.summary["checkpoint_loads"][-1]  # this attempt's load: the checkpoint the previous one stopped with
    assert (load["checkpoint"], load["saved_by"], load["step"]) == (
        f"checkpoint-{before.segment.stop}",
        before.segment.strategy,
        before.segment.stop,
    )
    assert any(
        f"saved by {before.segment.strategy}" in n and f"continuing on {now.segment.strategy}" in n for n in now.notes
    )
    steps = range(before.segment.stop + 1, now.segment.stop + 1)
    worst = _worst(reference, now.summary, steps)
    print(f"{transition}: steps {steps.start}..{steps.stop - 1}, max relative loss difference {worst:.2e}")
    assert worst <= 1e-4, f"{transition}: max relative difference {worst:.2e}"


def test_the_summary_reports_every_save_and_load(chain):
    out, attempts = chain
    last = attempts[-1].summary
    assert last is not None, attempts[-1].error
    saves = last["checkpoint_saves"]
    assert [s["step"] for s in saves] == [seg.stop for seg in CHAIN]
    assert all(s["seconds"] > 0 and s["bytes"] > 0 for s in saves), saves
    final = out / f"checkpoint-{STEPS}"  # the marker lists every rank's files: the size is theirs
    assert saves[-1]["bytes"] == sum((read_marker(final) or {})["files"].values())
    loads = last["checkpoint_loads"]
    assert [ld["saved_by"] for ld in loads] == [seg.strategy for seg in CHAIN[:-1]]
    assert all(ld["seconds"] > 0 and ld["model_seconds"] > 0 and ld["optimizer_seconds"] > 0 for ld in loads), loads
    assert json.loads((out / "summary.json").read_text())["checkpoint_loads"] == loads


def test_a_changed_global_batch_is_refused_before_anything_runs(llmpt, chain, init):
    out, attempts = chain
    assert attempts[-1].summary is not None, attempts[-1].error
    before = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    r = _train(llmpt, out, Segment("dp2", 4, 2, STEPS), init, "--resume", check=False)  # dp2 at 4 x 2: 16 per step
    assert r.returncode == 2, r.stderr
    error = json.loads(r.stderr.strip().splitlines()[-1])
    assert "global batch 16 sequences per step" in error["error"] and "was trained with 8" in error["error"]
    assert "--set strategy.batch.micro_batch_size=4 --set strategy.batch.grad_accum=1" in error["hint"]
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == before
