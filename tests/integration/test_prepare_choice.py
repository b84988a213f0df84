"""prepare-data's default choice of encoder, for real: a small input that PaddleNLP's class finishes before the
fast encoder is ready, and a larger one that switches from the class to the fast encoder part-way, are both
byte-identical to PaddleNLP's pipeline (bench/prepare_data.py's re-statement of create_pretraining_data.py), and
the manifest says which encoder ran and why."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmpt.data.prepare import prepare_data, read_manifest

pytest.importorskip("paddlenlp")
pytestmark = pytest.mark.paddle

GPT = Path(__file__).resolve().parents[2] / "llmpt" / "assets" / "test_tokenizers" / "gpt"


@pytest.fixture(autouse=True)
def _fresh_cache(tmp_path, monkeypatch):
    """Each run knows no set-up time: a set-up measured under load by an earlier run (the user's LLMPT_CACHE) would
    raise the floor past what these inputs need, and the class would rightly encode them alone."""
    monkeypatch.setenv("LLMPT_CACHE", str(tmp_path / "cache"))


def _corpus(path: Path, mb: float) -> Path:
    from bench.prepare_data import make_corpus

    return make_corpus(path, mb)


def _same_as_pipeline(prefix: Path, baseline: Path) -> bool:
    return all(Path(f"{prefix}.{e}").read_bytes() == Path(f"{baseline}.{e}").read_bytes() for e in ("bin", "idx"))


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    from bench.prepare_data import run_baseline

    root = tmp_path_factory.mktemp("small")
    corpus = _corpus(root / "small.jsonl", 0.02)
    run_baseline(corpus, str(root / "pipeline"), workers=1, tokenizer_dir=GPT)
    return corpus, root / "pipeline"


@pytest.fixture(scope="module")
def larger(tmp_path_factory):
    """~3 s of PaddleNLP's GPTTokenizer (~1 MB/s): longer than the fast path takes to be ready (~1 s)."""
    from bench.prepare_data import run_baseline

    root = tmp_path_factory.mktemp("larger")
    corpus = _corpus(root / "larger.jsonl", 3)
    run_baseline(corpus, str(root / "pipeline"), workers=2, tokenizer_dir=GPT)
    return corpus, root / "pipeline"


def test_a_small_input_is_encoded_by_the_class_alone_and_identical(small, tmp_path):
    corpus, pipeline = small
    r = prepare_data([str(corpus)], output=str(tmp_path / "o"), tokenizer=str(GPT), workers=2)
    assert _same_as_pipeline(tmp_path / "o", pipeline)
    enc = read_manifest(tmp_path / "o")["encoder"]
    sel = enc["selection"]
    assert enc["backend"] == "paddlenlp" and sel["mode"] == "race"
    assert sel["class_documents"] == r.documents > 0 and sel["fast_documents"] == 0
    assert "encoded the whole input" in sel["why"]
    assert enc["self_check"]["sampled_documents"] == 0  # the class is the pipeline: nothing to compare


@pytest.mark.parametrize("workers", [1, 2])
def test_a_run_switches_from_the_class_to_the_fast_encoder_and_stays_identical(larger, tmp_path, workers):
    corpus, pipeline = larger
    r = prepare_data([str(corpus)], output=str(tmp_path / "o"), tokenizer=str(GPT), workers=workers)
    assert _same_as_pipeline(tmp_path / "o", pipeline)
    enc = read_manifest(tmp_path / "o")["encoder"]
    sel = enc["selection"]
    assert enc["backend"] == "fastokens" and sel["fast_ready_seconds"] > 0
    assert sel["class_documents"] > 0 and sel["fast_documents"] > 0
    assert sel["class_documents"] + sel["fast_documents"] == r.documents
    assert "fastokens the rest" in sel["why"]
    # the fast part was checked: the probe before it, and samples of it
    assert enc["self_check"]["probe_documents"] > 100 and enc["self_check"]["sampled_documents"] >= 1


def test_a_later_run_builds_the_remembered_fast_encoder_during_the_import_and_stays_identical(
    larger, tmp_path, monkeypatch
):
    import llmpt.data.prepare as prepare

    corpus, pipeline = larger
    # as if PaddleNLP's fastest class were 10x slower: this 3 MB input then starts the fast encoder's workers with
    # the run (a real one does from 6.3 MB with one worker)
    monkeypatch.setattr(prepare, "FASTEST_CLASS_BYTES_PER_S", prepare.FASTEST_CLASS_BYTES_PER_S / 10)
    runs = []
    for k in range(2):
        prepare_data([str(corpus)], output=str(tmp_path / f"o{k}"), tokenizer=str(GPT), workers=2)
        assert _same_as_pipeline(tmp_path / f"o{k}", pipeline)
        runs.append(read_manifest(tmp_path / f"o{k}")["encoder"])
    first, second = (e["selection"] for e in runs)
    assert runs[0]["backend"] == runs[1]["backend"] == "fastokens"
    assert not first["spec_remembered"] and second["spec_remembered"]
    assert "remembered by an earlier run" in second["setup_floor_source"] and second["setup_floor_seconds"] == 0
    assert runs[1]["self_check"]["probe_documents"] > 100 and runs[1]["self_check"]["sampled_documents"] >= 1
