"""Export and --init-from on real runs (CPU ranks, fp32):

* the export of a tp2, a pp2 and an sd2 stage-2 checkpoint equals the export of the dp1 run they are equivalent to
  (one saved initialisation, the same data and global batch; plain SGD without clipping, so that every weight moves
  by its gradient and nothing amplifies rounding as Adam's normalisation does): same tensors, each within 1e-5 of
  its largest value. llmpt's runs save unified checkpoints (PaddleNLP merges the tp/pp shards on save, see
  llmpt/strategies/expand.py), so this covers reading them; merging per-rank files (model_state.tpNN_ppNN.pdparams,
  what PaddleNLP writes without unified checkpoints) is proven against PaddleNLP's own split in
  test_interop_reference.py;
* `llmpt export` -> `llmpt train --init-from EXPORT` gives the first-step loss of continuing from the run itself
  (--init-from RUN), for a trained llama run and for every other exported family's initialisation (measured: equal
  to the last digit);
* the exported tokenizer files are the run's, byte for byte, and the Hugging Face source is converted once into the
  cache.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.integration.conftest import losses

pytest.importorskip("paddlenlp")
pytestmark = [pytest.mark.paddle, pytest.mark.slow]

COMMON = ("--device", "cpu", "--set", "train.report_to=none", "--json")
SGD = ("--set", "train.optimizer=sgd", "--set", "train.max_grad_norm=0", "--set", "train.learning_rate=0.5",
       "--set", "train.warmup_steps=0")  # fmt: skip
# strategy -> (micro batch, accumulation): 8 sequences per step everywhere
LAYOUTS = {"dp1": (4, 2), "tp2": (4, 2), "pp2": (4, 2), "sd2_stage2": (4, 1)}
TOLERANCE = 1e-5


def _init(out: Path, model: str) -> Path:
    subprocess.run(
        [sys.executable, "-m", "llmpt.train.init_weights", model, str(out), "--vocab-size", "2048"],
        check=True,
        capture_output=True,
    )
    return out


@pytest.fixture(scope="module")
def runs(llmpt, tmp_path_factory) -> dict[str, Path]:
    """llama-tiny trained 2 steps from one initialisation in each layout, checkpoint-2 saved."""
    root = tmp_path_factory.mktemp("layouts")
    init = _init(root / "init", "llama-tiny")
    out = {}
    for strategy, (micro, accum) in LAYOUTS.items():
        llmpt.json(
            "train", "llama-tiny", "--strategy", strategy, "--init-from", init, "--max-steps", 2, "--save-steps", 2,
            "-o", root / strategy, "--set", f"strategy.batch.micro_batch_size={micro}",
            "--set", f"strategy.batch.grad_accum={accum}", *SGD, *COMMON, timeout=900,
        )  # fmt: skip
        out[strategy] = root / strategy
    return out


@pytest.fixture(scope="module")
def exports(llmpt, runs) -> dict[str, tuple[dict, Path]]:
    out = {}
    for strategy, run in runs.items():
        target = run.parent / f"{strategy}-hf"
        out[strategy] = (llmpt.json("export", run / "checkpoint-2", "--output", target, "--json"), target)
    return out


def _tensors(directory: Path) -> dict[str, np.ndarray]:
    from llmpt.interop import safetensors

    return {n: np.array(safetensors.load(i)) for n, i in safetensors.read_headers(directory).items()}


@pytest.mark.parametrize("strategy", ["tp2", "pp2", "sd2_stage2"])
def test_the_export_of_a_layout_equals_the_export_of_dp1(exports, strategy):
    report, directory = exports[strategy]
    assert report["weights"].startswith("checkpoint-2 of run") and report["merged"]["files"]
    reference, got = _tensors(exports["dp1"][1]), _tensors(directory)
    assert {n: a.shape for n, a in got.items()} == {n: a.shape for n, a in reference.items()}
    worst = max(float(np.max(np.abs(got[n] - reference[n])) / np.max(np.abs(reference[n]))) for n in reference)
    print(f"{strategy}: export differs from dp1's by at most {worst:.1e} of a tensor's largest value")
    assert worst <= TOLERANCE, f"{strategy}: {worst:.2e}"


def test_the_exported_tokenizer_is_the_runs(runs, exports):
    from llmpt.run_config import load_run_yaml

    tokenizer = Path(load_run_yaml(runs["dp1"] / "run.yaml").data.tokenizer_dir)
    _, directory = exports["dp1"]
    for f in tokenizer.iterdir():
        assert (directory / f.name).read_bytes() == f.read_bytes(), f.name
    assert (directory / "tokenizer.model").read_bytes() == (tokenizer / "sentencepiece.bpe.model").read_bytes()


def _first_loss(llmpt, out: Path, model: str, init: Path) -> tuple[float, dict]:
    from llmpt.run_config import load_run_yaml

    summary = llmpt.json("train", model, "--strategy", "dp1", "--init-from", init, "--max-steps", 1, "-o", out, *COMMON)
    return losses(summary)[0], load_run_yaml(out / "run.yaml").model.init_source


def test_init_from_the_export_of_a_run_starts_where_the_run_does(llmpt, runs, tmp_path):
    run = runs["dp1"]  # its final model (step 2)
    exported = tmp_path / "hf"
    llmpt("export", run, "--output", exported)
    own, _ = _first_loss(llmpt, tmp_path / "from-run", "llama-tiny", run)
    via_export, source = _first_loss(llmpt, tmp_path / "from-export", "llama-tiny", exported)
    print(f"llama-tiny: first-step loss {own!r} from the run, {via_export!r} from its export")
    assert via_export == own
    assert source["layout"] == "hf" and Path(source["converted_to"], "llmpt-converted.json").is_file()
    assert source["tokenizer"]["files"]["tokenizer.model"] == source["tokenizer"]["files"]["sentencepiece.bpe.model"]


@pytest.mark.parametrize("model", ["qwen-tiny", "gpt-tiny", "opt-tiny", "bloom-tiny", "chatglm2-tiny"])
def test_init_from_an_export_gives_the_first_step_loss_of_its_source(llmpt, tmp_path, model):
    init = _init(tmp_path / "init", model)
    exported = tmp_path / "hf"
    llmpt("export", init, "--output", exported)
    own, _ = _first_loss(llmpt, tmp_path / "from-paddle", model, init)
    via_export, source = _first_loss(llmpt, tmp_path / "from-export", model, exported)
    print(f"{model}: first-step loss {own!r} from PaddleNLP's weights, {via_export!r} from their export")
    assert source["layout"] == "hf"
    assert via_export == own
