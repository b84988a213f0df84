"""prepare-data for real: PaddleNLP's own reader and pretraining dataset builder read what llmpt writes,
the bytes equal PaddleNLP's pipeline's, and bad input fails cleanly with nothing left behind."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from llmpt.cli.main import app
from llmpt.data.mmap import read_index
from llmpt.data.prepare import output_paths, prepare_data, read_manifest
from llmpt.data.tokenizer import SHIPPED_CORPUS, SHIPPED_TOKENIZER

pytest.importorskip("paddlenlp")
pytestmark = pytest.mark.paddle


def _sample_corpus(path: Path, n: int = 120) -> Path:
    with gzip.open(SHIPPED_CORPUS, "rt", encoding="utf-8") as f, path.open("w", encoding="utf-8") as out:
        for i, line in enumerate(f):
            if i >= n:
                break
            out.write(line)
    return path


@pytest.fixture(scope="module")
def shipped(shipped_corpus):
    """prepare_data(None): the shipped corpus, as the session prepared it (tests/integration/conftest.py)."""
    return shipped_corpus.result, shipped_corpus.prefix


@pytest.fixture(scope="module")
def tokenizer():
    from paddlenlp.transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(SHIPPED_TOKENIZER))


def _files(prefix) -> list[Path]:
    parent = Path(prefix).parent
    return sorted(parent.iterdir()) if parent.exists() else []


def test_shipped_corpus_matches_tokenizer_doc_by_doc(shipped, tokenizer):
    r, prefix = shipped
    assert (r.documents, r.skipped, r.dtype) == (1189, 0, "uint16")
    docs = [json.loads(line)["text"] for line in gzip.open(SHIPPED_CORPUS, "rt", encoding="utf-8")]
    ds = read_index(prefix)
    assert len(ds) == 1189 and int(ds.sizes.sum()) == r.tokens
    for i in (0, 1, 500, 1188):
        expected = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(docs[i].strip())) + [tokenizer.eos_token_id]
        assert ds[i].tolist() == expected


def test_paddlenlp_reader_and_pretraining_dataset_open_it(shipped):
    from paddlenlp.data.causal_dataset import build_train_valid_test_datasets
    from paddlenlp.data.indexed_dataset import MMapIndexedDataset

    _, prefix = shipped
    theirs = MMapIndexedDataset(str(prefix))
    ours = read_index(prefix)
    assert len(theirs) == len(ours)
    for i in (0, 7, 1188):
        assert np.array_equal(theirs[i], ours[i])
    seq = 128
    train, valid, _ = build_train_valid_test_datasets(
        data_prefix=[str(prefix)],
        data_impl="mmap",
        splits_string="949,50,1",
        train_val_test_num_samples=[64, 8, 0],
        seq_length=seq,
        seed=1234,
        skip_warmup=True,
        data_cache_path=str(Path(prefix).parent / "cache"),
    )
    sample = train[0]["text"]
    assert len(sample) == seq + 1
    flat = np.concatenate([ours[i] for i in range(len(ours))])
    # every training sample is a contiguous window of the token stream of some documents
    starts = np.flatnonzero(flat == sample[0])
    assert any(np.array_equal(flat[s : s + 8], sample[:8]) for s in starts)
    assert len(valid) >= 8


def test_manifest_describes_the_files(shipped):
    r, prefix = shipped
    m = json.loads(output_paths(prefix)["manifest"].read_text())
    for k in ("bin", "idx"):
        data = output_paths(prefix)[k].read_bytes()
        assert m[k] == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert (m["documents"], m["tokens"], m["tokenizer"]["vocab_size"]) == (1189, r.tokens, 2000)
    assert set(m["tokenizer"]["files"]) == {p.name for p in SHIPPED_TOKENIZER.iterdir()}


def test_identical_bytes_to_paddlenlps_pipeline_and_across_workers(tmp_path):
    from bench.prepare_data import run_baseline

    corpus = _sample_corpus(tmp_path / "c.jsonl")
    run_baseline(corpus, str(tmp_path / "base"), workers=1)
    prepare_data([str(corpus)], output=str(tmp_path / "w1"), workers=1)
    prepare_data([str(corpus)], output=str(tmp_path / "w2"), workers=2)
    for ext in ("bin", "idx"):
        base = (tmp_path / f"base.{ext}").read_bytes()
        assert (tmp_path / f"w1.{ext}").read_bytes() == base
        assert (tmp_path / f"w2.{ext}").read_bytes() == base


def test_text_gzip_dir_and_merge(tmp_path):
    (tmp_path / "in").mkdir()
    with gzip.open(tmp_path / "in" / "a.txt.gz", "wt") as f:
        f.write("In the beginning.\nSecond line.\n\nAnother document.\n")
    (tmp_path / "in" / "b.jsonl").write_text('{"body": "And God said"}\n')
    r = prepare_data([str(tmp_path / "in")], output=str(tmp_path / "all"), text_key="body")
    assert r.documents == 3
    ra = prepare_data([str(tmp_path / "in" / "a.txt.gz")], output=str(tmp_path / "a"))
    rb = prepare_data([str(tmp_path / "in" / "b.jsonl")], output=str(tmp_path / "b"), text_key="body")
    assert (ra.documents, rb.documents) == (2, 1)
    res = CliRunner().invoke(
        app, ["prepare-data", "--merge", str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(tmp_path / "m"), "--json"]
    )
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["documents"] == 3
    for ext in ("bin", "idx"):
        assert (tmp_path / f"m.{ext}").read_bytes() == (tmp_path / f"all.{ext}").read_bytes()
    # the largest id written (train refuses a model whose vocabulary it is not below), per shard and merged
    ids = {p: np.fromfile(tmp_path / f"{p}.bin", dtype=np.uint16) for p in ("a", "b", "m")}
    assert [read_manifest(tmp_path / p)["max_id"] for p in ids] == [int(v.max()) for v in ids.values()]
    assert int(ids["m"].max()) == max(int(ids["a"].max()), int(ids["b"].max())) > 2  # above EOS (2): real ids


def _cli(*args):
    return CliRunner().invoke(app, ["prepare-data", *args])


def _one_line_error(res) -> str:
    assert res.exit_code == 2, (res.stdout, res.stderr)
    assert "Traceback" not in res.stderr
    return res.stderr.splitlines()[0]


def test_json_summary_and_bad_lines(tmp_path):
    src = tmp_path / "c.jsonl"
    src.write_text('{"text": "good one"}\n{bad\n{"text": "another good"}\n{"id": 3}\n')
    res = _cli(str(src), "-o", str(tmp_path / "o"), "--json")
    assert res.exit_code == 0, res.stderr
    out = json.loads(res.stdout)
    assert {"documents", "tokens", "skipped", "output_prefix", "tokenizer", "seconds"} <= set(out)
    assert (out["documents"], out["skipped"], out["tokenizer"]) == (2, 2, str(SHIPPED_TOKENIZER))
    assert [(b["line"], b["reason"].split(" (")[0]) for b in out["bad_lines"]] == [
        (2, "invalid JSON"),
        (4, "missing key 'text'"),
    ]
    res = _cli(str(src), "-o", str(tmp_path / "o"))
    assert "already exists" in _one_line_error(res)
    res = _cli(str(src), "-o", str(tmp_path / "o"), "--force")
    assert res.exit_code == 0 and f"skipped {src}:2: invalid JSON" in res.stderr


def test_strict_stops_and_leaves_nothing(tmp_path):
    src = tmp_path / "c.jsonl"
    src.write_text('{"text": "good one"}\n{"text": "\\ud800 lone surrogate"}\n{bad\n')
    line = _one_line_error(_cli(str(src), "-o", str(tmp_path / "out" / "o"), "--strict"))
    assert (
        line
        == f"error: {src}:2: invalid UTF-8 (a lone surrogate escape such as \\ud800) (--strict stops at the first bad line)"
    )
    assert _files(tmp_path / "out" / "o") == []


@pytest.mark.parametrize(
    "setup,args,fragment",
    [
        (lambda p: p.write_text(""), [], "no documents in"),
        (lambda p: p.write_text('{"body": "x"}\n'), [], "every line lacked key 'text'"),
        (
            lambda p: p.write_text('{"text": "x"}\n'),
            ["--tokenizer", "/nonexistent/tok"],
            "--tokenizer /nonexistent/tok: no such directory",
        ),
        (
            lambda p: p.write_text('{"text": "x"}\n'),
            ["--tokenizer", "qwen-7b"],
            "the tokenizer files of qwen/qwen-7b are not on this machine",
        ),
        (lambda p: p.write_text('{"text": "x"}\n'), ["--tokenizer", "qwen-8b"], "unknown model 'qwen-8b'"),
        (lambda p: p.write_text('{"text": "x"}\n'), ["--workers", "0"], "--workers 0: must be >= 1"),
    ],
)
def test_refusals(tmp_path, monkeypatch, setup, args, fragment):
    monkeypatch.setenv("HOME", str(tmp_path))  # no PaddleNLP cache of real tokenizers
    src = tmp_path / "c.jsonl"
    setup(src)
    out = tmp_path / "out"
    out.mkdir()
    assert fragment in _one_line_error(_cli(str(src), "-o", str(out / "o"), *args))
    assert list(out.iterdir()) == []


def test_tokenizer_dir_without_config_and_unwritable_output(tmp_path):
    (tmp_path / "tok").mkdir()
    src = tmp_path / "c.jsonl"
    src.write_text('{"text": "x"}\n')
    assert "has no tokenizer_config.json" in _one_line_error(
        _cli(str(src), "-o", str(tmp_path / "o"), "-t", str(tmp_path / "tok"))
    )
    (tmp_path / "afile").write_text("")
    assert "cannot write to" in _one_line_error(_cli(str(src), "-o", str(tmp_path / "afile" / "o")))


def test_interrupted_run_leaves_nothing_at_the_final_path(tmp_path):
    corpus = _sample_corpus(tmp_path / "c.jsonl", n=400)

    def interrupt(docs, tokens, nbytes):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prepare_data([str(corpus)], output=str(tmp_path / "out" / "o"), progress=interrupt)
    assert _files(tmp_path / "out" / "o") == []


def test_registry_tiny_model_name_uses_the_shipped_tokenizer(tmp_path):
    src = tmp_path / "c.jsonl"
    src.write_text('{"text": "In the beginning"}\n')
    r = prepare_data([str(src)], output=str(tmp_path / "o"), tokenizer="llama-tiny")
    assert r.tokenizer == str(SHIPPED_TOKENIZER)


@pytest.mark.slow
def test_shipped_tokenizer_is_reproducible(tmp_path):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    subprocess.run(
        [sys.executable, str(root / "scripts" / "build_tokenizer.py"), "--out", str(tmp_path / "tok")],
        check=True,
        capture_output=True,
    )
    for p in SHIPPED_TOKENIZER.iterdir():
        assert (tmp_path / "tok" / p.name).read_bytes() == p.read_bytes(), p.name


def _prepared_pair(tmp_path):
    src = _sample_corpus(tmp_path / "c.jsonl", n=60)
    prepare_data([str(src)], output=str(tmp_path / "a"))
    prepare_data([str(src)], output=str(tmp_path / "b"))
    return str(tmp_path / "a"), str(tmp_path / "b")


def test_merge_refuses_a_corrupted_shard_of_the_same_size(tmp_path):
    a, b = _prepared_pair(tmp_path)
    data = bytearray(Path(f"{b}.bin").read_bytes())
    data[100:102] = bytes([data[100] ^ 1, data[101] ^ 1])  # 2 bytes changed, size unchanged
    Path(f"{b}.bin").write_bytes(bytes(data))
    line = _one_line_error(_cli("--merge", a, b, "-o", str(tmp_path / "m")))
    assert f"--merge input {b}: b.bin does not match its manifest checksum" in line
    assert not list(tmp_path.glob("m.*"))


def test_merge_refuses_a_shard_without_manifest(tmp_path):
    a, b = _prepared_pair(tmp_path)
    Path(f"{b}.manifest.json").unlink()
    line = _one_line_error(_cli("--merge", a, b, "-o", str(tmp_path / "m")))
    assert f"--merge input {b}: no manifest (b.manifest.json)" in line
    assert not list(tmp_path.glob("m.*"))


def test_a_killed_runs_temporaries_do_not_outlive_the_next_run(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    src = _sample_corpus(tmp_path / "c.jsonl", n=1189)
    prefix = tmp_path / "out" / "o"
    cmd = [sys.executable, "-m", "llmpt.cli", "prepare-data", str(src), "-o", str(prefix)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list(tmp_path.glob("out/o.bin.tmp-*")):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    left = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert f"o.bin.tmp-{proc.pid}" in left, left  # killed while writing: SIGKILL leaves its temporaries
    # a live prepare-data's files are not touched: its owner is named instead
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "out" / f"o.idx.tmp-{sleeper.pid}").write_bytes(b"")
        line = _one_line_error(_cli(str(src), "-o", str(prefix)))
        assert f"another prepare-data (pid {sleeper.pid}) is writing it" in line
    finally:
        sleeper.kill()
        sleeper.wait()
    r = prepare_data([str(src)], output=str(prefix))
    assert r.documents == 1189
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["o.bin", "o.idx", "o.manifest.json"]


def test_sigterm_removes_the_runs_temporaries(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    src = _sample_corpus(tmp_path / "c.jsonl", n=1189)
    cmd = [sys.executable, "-m", "llmpt.cli", "prepare-data", str(src), "-o", str(tmp_path / "out" / "o")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list(tmp_path.glob("out/o.bin.tmp-*")):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=60) != 0
    assert _files(tmp_path / "out" / "o") == []
