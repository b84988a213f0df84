"""`llmpt train` for real: paddle.distributed.launch, PaddleNLP's Trainer, CPU ranks over gloo.

Numbers checked: the loss falls; dp2 and sharding stage 1 equal dp1 at equal global batch; a run stopped at step
10 and resumed equals the uninterrupted run step by step (tests/integration/test_reliability.py); every trainable
family's tiny model trains (chatglm and glm: tests/integration/test_glm_families.py)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from llmpt.run_dir import RunDir
from tests.integration.conftest import losses

pytest.importorskip("paddlenlp")
pytestmark = [pytest.mark.paddle, pytest.mark.slow]

BATCH8 = ("--set", "train.warmup_steps=5", "--set", "train.learning_rate=3e-3")
MBS4 = ("--set", "strategy.batch.micro_batch_size=4", "--set", "strategy.batch.grad_accum=1")  # x 2 ranks = 8
MB = 2**20


def train(llmpt, out: Path, *args) -> dict:
    return llmpt.json(
        "train", "llama-tiny", "--device", "cpu", "--json", "--set", "train.report_to=none", "-o", out, *args
    )


def planned(out: Path) -> dict:
    import yaml

    return yaml.safe_load((out / "run.yaml").read_text())["estimate"]


def ranks(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in RunDir(out).rank_reports()]  # ranks/rankN.json, not progress files


@pytest.fixture(scope="module")
def dp1_30(llmpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "dp1"
    mbs8 = ("--set", "strategy.batch.micro_batch_size=8", "--set", "strategy.batch.grad_accum=1")
    return out, train(llmpt, out, "--strategy", "dp1", "--max-steps", "30", *mbs8, *BATCH8)


@pytest.fixture(scope="module")
def two_rank_30(llmpt, tmp_path_factory):
    """`strategy -> (out, summary)` of a 30-step two-rank run at dp1_30's global batch, run on first use."""
    runs: dict[str, tuple[Path, dict]] = {}

    def get(strategy: str) -> tuple[Path, dict]:
        if strategy not in runs:
            out = tmp_path_factory.mktemp("runs") / strategy
            runs[strategy] = out, train(llmpt, out, "--strategy", strategy, "--max-steps", "30", *MBS4, *BATCH8)
        return runs[strategy]

    return get


def test_dp1_trains_30_steps_with_falling_loss(dp1_30):
    _, dp1_30 = dp1_30
    ls = losses(dp1_30)
    assert dp1_30["steps"] == 30 and len(ls) == 30
    assert sum(ls[-5:]) / 5 < ls[0] - 1.0, ls
    assert dp1_30["tokens_per_card_per_sec"] > 0 and dp1_30["peak_memory_mb"] > 100


@pytest.mark.parametrize("strategy", ["dp2", "sd2_stage1"])
def test_two_ranks_equal_dp1_at_equal_global_batch(dp1_30, two_rank_30, strategy):
    a, b = losses(dp1_30[1]), losses(two_rank_30(strategy)[1])
    assert len(b) == 30
    rel = max(abs(x - y) / abs(x) for x, y in zip(a, b, strict=True))
    assert rel < 1e-4, (rel, a, b)
    assert sum(b[-5:]) / 5 < b[0] - 1.0


def test_sharding_stage1_holds_the_planned_share_of_the_moments(two_rank_30):
    # stage 1 shards the Adam moments: the planner's per-rank half, summed over the ranks, is what they hold
    out, _ = two_rank_30("sd2_stage1")
    est = planned(out)
    held = [r["tensor_bytes"] for r in ranks(out)]
    moments = sum(h["optimizer_moments"] for h in held)
    assert moments == 8 * est["params_per_card"]
    assert moments == pytest.approx(est["memory_mb"]["optimizer_moments"] * 2 * MB, abs=200)
    assert all(h["weights"] == h["gradients"] == 4 * est["params_per_card"] for h in held)


def test_planner_bytes_match_a_real_cpu_run(dp1_30):
    """What the planner says a CPU rank holds, against what the rank counted tensor by tensor and what Paddle's
    host allocator saw at its peak."""
    out, summary = dp1_30
    est = planned(out)
    (rank,) = ranks(out)
    held = rank["tensor_bytes"]
    n = est["params_per_card"]
    assert held["weights"] == n * 4 == pytest.approx(est["memory_mb"]["weights"] * MB, abs=100)  # fp32, exact count
    assert held["gradients"] == n * 4
    assert held["optimizer_moments"] == n * 8 == pytest.approx(est["memory_mb"]["optimizer_moments"] * MB, abs=100)
    assert held["master_weights"] == 0 == est["memory_mb"]["master_weights"]
    tensors = est["memory_mb_per_card"] - est["memory_mb"]["runtime"]
    ratio = rank["allocated_peak_mb"] / tensors
    print(
        f"CPU llama-tiny dp1 mbs8 seq128: planner {tensors:.1f} MB of tensors, Paddle host peak "
        f"{rank['allocated_peak_mb']:.1f} MB allocated (ratio {ratio:.2f}); peak RSS {rank['peak_memory_mb']:.0f} MB"
    )
    assert 0.75 < ratio < 1.25
    assert summary["predicted"]["memory_mb_per_card"] == est["memory_mb_per_card"]


@pytest.mark.parametrize("model", ["qwen-tiny", "gpt-tiny", "opt-tiny", "bloom-tiny", "chatglm2-tiny", "baichuan-tiny"])
def test_every_trainable_family_trains(llmpt, tmp_path, model):
    summary = llmpt.json(
        "train", model, "--strategy", "dp1", "--device", "cpu", "--json", "--max-steps", "12",
        "--set", "train.report_to=none", "--set", "strategy.batch.grad_accum=2", "-o", tmp_path / model, *BATCH8,
    )  # fmt: skip
    ls = losses(summary)
    assert len(ls) == 12 and ls[-1] < ls[0], ls


def test_failing_rank_exits_nonzero_and_shows_its_log(llmpt, tmp_path, dp1_30):
    out, _ = dp1_30
    bad = tmp_path / "init"
    bad.mkdir()
    shutil.copy(out / "config.json", bad / "config.json")
    # the run's weights (a unified checkpoint: safetensors), cut short and named as a paddle.save file
    (bad / "model_state.pdparams").write_bytes((out / "model-00001-of-00001.safetensors").read_bytes()[:1000])
    r = llmpt(
        "train", "llama-tiny", "--strategy", "dp2", "--device", "cpu", "--init-from", bad, "--max-steps", "3",
        "-o", tmp_path / "run", check=False,
    )  # fmt: skip
    assert r.returncode == 1, r.stderr
    # the launcher's word for the first failed rank: "rank 0 exited with code 1"
    assert re.search(r"training failed: rank [01] exited with code 1 \(logs: ", r.stderr), r.stderr[-2000:]
    assert "ValueError: `paddle.load` can not parse the file" in r.stderr  # the rank's own last log lines follow


def test_init_from_refusals(llmpt, tmp_path):
    init = tmp_path / "a"
    init.mkdir()

    def refusal(config_json: str) -> str:
        (init / "config.json").write_text(config_json)
        r = llmpt("train", "llama-tiny", "--strategy", "dp1", "--device", "cpu", "--init-from", init, check=False)
        assert r.returncode == 2, r.stderr
        return r.stderr

    assert "config.json is not valid JSON" in refusal("{ not json")
    assert "a 'gpt' checkpoint, but the model is a llama model" in refusal('{"model_type": "gpt"}')


def test_outputs_of_a_run(dp1_30):
    from llmpt.run_config import load_run_yaml

    out, summary = dp1_30
    assert set(summary) >= {
        "tokens_per_card_per_sec",
        "peak_memory_mb",
        "losses",
        "final_loss",
        "steps",
        "strategy",
        "model",
    }
    assert summary["throughput_window"] == [3, 30]
    assert json.loads((out / "summary.json").read_text()) == summary
    cfg = load_run_yaml(out / "run.yaml")
    assert (cfg.model.id, cfg.strategy.name, cfg.world_size) == ("llama-tiny", "dp1", 1)
    assert (out / "loss.png").read_bytes()[:4] == b"\x89PNG"
    # the final model is a unified checkpoint (whole tensors, safetensors + index) that any layout loads
    assert (out / "model.safetensors.index.json").is_file() and (out / "config.json").is_file()
    assert summary["final_loss"] == summary["losses"][-1]["loss"]


def test_init_from_a_trained_checkpoint_starts_where_it_ended(llmpt, tmp_path, dp1_30):
    out, first = dp1_30
    # a 3-step run: BATCH8's 5 warm-up steps would not end before it does (refused), so 1 here
    again = train(llmpt, tmp_path / "cont", "--strategy", "dp2", "--init-from", out, "--max-steps", "3", *MBS4, *BATCH8,
                  "--set", "train.warmup_steps=1")  # fmt: skip
    assert losses(again)[0] < losses(first)[0] - 1.0
