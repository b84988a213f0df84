"""prepare-data's fast encoders against PaddleNLP's own pipeline (bench/prepare_data.py's re-statement of
create_pretraining_data.py: its cleaning + the tokenizer's class), byte for byte, for every tokenizer family and
every native encoder installed, on adversarial documents; the self-check; workers without paddle."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from llmpt.data.adversarial import SPECIAL_LITERALS, adversarial_documents
from llmpt.data.inputs import discover_inputs, iter_chunks
from llmpt.data.prepare import _Workers, prepare_data, read_manifest
from llmpt.data.tokenizer import SHIPPED_TOKENIZER, native_backends
from llmpt.errors import LlmptWarning

pytest.importorskip("paddlenlp")
pytestmark = pytest.mark.paddle

TEST_TOKENIZERS = Path(__file__).resolve().parents[2] / "llmpt" / "assets" / "test_tokenizers"
# family -> (tokenizer directory, the class AutoTokenizer must pick, the encoder family llmpt must see)
FAMILIES = {
    "llama": (SHIPPED_TOKENIZER, "LlamaTokenizer", "sentencepiece"),
    "qwen": (TEST_TOKENIZERS / "qwen", "QWenTokenizer", "tiktoken"),
    "llama3": (TEST_TOKENIZERS / "llama3", "Llama3Tokenizer", "tiktoken"),
    "qwen2": (TEST_TOKENIZERS / "qwen2", "Qwen2Tokenizer", "bpe"),
    "gpt": (TEST_TOKENIZERS / "gpt", "GPTTokenizer", "bpe"),
    "hf_fast": (TEST_TOKENIZERS / "hf_fast", "Qwen2TokenizerFast", "bpe"),
}
BACKENDS = {
    "sentencepiece": ("sentencepiece",),
    "tiktoken": ("fastokens", "tiktoken"),
    "bpe": ("fastokens", "tokenizers"),
}
CASES = [(f, b) for f, (_, _, fam) in FAMILIES.items() for b in (*BACKENDS[fam], "paddlenlp")]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Every adversarial document (1 MB one included) as jsonl, some lines ending in CRLF (PaddleNLP's pipeline
    stops at a blank line: none here)."""
    literals = ("<|begin_of_text|>", "<|extra_0|>", "<extra_0>", *SPECIAL_LITERALS)
    p = tmp_path_factory.mktemp("adversarial") / "adversarial.jsonl"
    lines = [
        json.dumps({"text": d}, ensure_ascii=i % 2 == 0) for i, d in enumerate(adversarial_documents(literals, True))
    ]
    p.write_bytes(("\r\n".join(lines[:10]) + "\r\n" + "\n".join(lines[10:]) + "\n").encode("utf-8"))
    return p


@pytest.fixture(scope="module")
def baselines(corpus, tmp_path_factory):
    """PaddleNLP's pipeline's .bin/.idx for each family (computed once, on first use)."""
    from bench.prepare_data import run_baseline

    root = tmp_path_factory.mktemp("baselines")
    done: dict[str, dict[str, bytes]] = {}

    def get(family: str) -> dict[str, bytes]:
        if family not in done:
            run_baseline(corpus, str(root / family), workers=1, tokenizer_dir=FAMILIES[family][0])
            done[family] = {e: (root / f"{family}.{e}").read_bytes() for e in ("bin", "idx")}
        return done[family]

    return get


@pytest.mark.parametrize("family,backend", CASES, ids=[f"{f}-{b}" for f, b in CASES])
def test_byte_identical_to_paddlenlps_pipeline(family, backend, corpus, baselines, tmp_path):
    tok_dir, cls, fam = FAMILIES[family]
    if backend not in (*native_backends(fam), "paddlenlp"):
        pytest.skip(f"{backend} is not installed")
    with warnings.catch_warnings():
        warnings.simplefilter("error", LlmptWarning)  # no fallback may happen on the way
        r = prepare_data([str(corpus)], output=str(tmp_path / "o"), tokenizer=str(tok_dir), encoder=backend)
    m = read_manifest(tmp_path / "o")
    assert (m["tokenizer"]["class"], m["encoder"]["family"], m["encoder"]["backend"]) == (cls, fam, backend)
    want = baselines(family)
    assert (tmp_path / "o.idx").read_bytes() == want["idx"]
    assert (tmp_path / "o.bin").read_bytes() == want["bin"]
    assert r.documents > 250 and r.tokens > 100_000


def test_the_fast_paths_encoder_is_the_fastest_native_one(corpus, tmp_path):
    # slow_start=False: the fast encoder from the first document (by default the class would encode this small
    # input alone before the fast one is ready: test_prepare_choice.py)
    prepare_data([str(corpus)], output=str(tmp_path / "o"), tokenizer=str(FAMILIES["qwen2"][0]), slow_start=False)
    enc = read_manifest(tmp_path / "o")["encoder"]
    assert enc["backend"] == native_backends("bpe")[0]
    # the probe set ran before the run, and the run's own documents were sampled
    assert enc["self_check"]["probe_documents"] > 100 and enc["self_check"]["sampled_documents"] >= 1


def test_workers_never_import_paddle_and_agree_with_in_process(corpus, tmp_path):
    from paddlenlp.transformers import AutoTokenizer

    from llmpt.data.tokenizer import complete_spec, encoder_spec

    tok_dir = FAMILIES["qwen2"][0]
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    spec = complete_spec(tok, encoder_spec(tok, tok_dir, "text", True))
    files = discover_inputs([str(corpus)])
    with _Workers(1) as one:
        alone = list(one.results(spec, iter_chunks(files, chunk_bytes=1 << 12)))
    with _Workers(2) as two:
        pooled = list(two.results(spec, iter_chunks(files, chunk_bytes=1 << 12)))
    assert len(pooled) == len(alone) > 3
    assert not any(r.paddle_loaded for r in pooled)
    assert b"".join(r.tokens for r in pooled) == b"".join(r.tokens for r in alone)


def test_self_check_samples_every_input_file(tmp_path):
    docs = [f"document {i} of some file with <|endoftext|> inside" for i in range(40)]
    inputs = []
    for k in range(3):
        p = tmp_path / f"part{k}.jsonl"
        p.write_text("".join(json.dumps({"text": d + f" {k}"}) + "\n" for d in docs))
        inputs.append(str(p))
    prepare_data(inputs, output=str(tmp_path / "o"), tokenizer=str(FAMILIES["gpt"][0]), slow_start=False)
    check = read_manifest(tmp_path / "o")["encoder"]["self_check"]
    assert check["files_sampled"] == 3 and check["sampled_documents"] >= 3


def test_a_divergence_found_in_the_run_starts_again_on_the_slow_path(corpus, baselines, tmp_path, monkeypatch):
    import numpy as np

    from llmpt.data import encode

    real = encode._Fastokens.encode

    def wrong(self, texts):  # a fast encoder that errs on one rare document only (not in the probe set)
        flat, lengths = real(self, texts)
        if any("XYZZY" in t for t in texts):
            flat = np.asarray(flat, dtype=np.int64) + 1
        return flat, lengths

    monkeypatch.setattr(encode._Fastokens, "encode", wrong)
    src = tmp_path / "c.jsonl"
    src.write_text(json.dumps({"text": "XYZZY is a rare word"}) + "\n" + corpus.read_text(encoding="utf-8"))
    with pytest.warns(LlmptWarning, match="disagrees with PaddleNLP's Qwen2Tokenizer on a sampled document"):
        prepare_data([str(src)], output=str(tmp_path / "o"), tokenizer=str(FAMILIES["qwen2"][0]), slow_start=False)
    enc = read_manifest(tmp_path / "o")["encoder"]
    assert enc["backend"] == "paddlenlp" and "disagreed on a sample" in enc["selection"]["why"]


def test_a_self_check_that_compared_nothing_fails_loudly(tmp_path, monkeypatch):
    from llmpt.data import encode
    from llmpt.data.inputs import DataError

    monkeypatch.setattr(encode, "_pick_samples", lambda *a: [])
    src = tmp_path / "c.jsonl"
    src.write_text('{"text": "in the beginning"}\n')
    with pytest.raises(DataError, match="compared no document of the input"):
        prepare_data([str(src)], output=str(tmp_path / "o"), tokenizer=str(FAMILIES["qwen"][0]), slow_start=False)
    assert not list(tmp_path.glob("o.*"))


def test_a_probe_divergence_falls_back_to_the_next_encoder(tmp_path, monkeypatch):
    from llmpt.data import encode

    monkeypatch.setattr(encode._Fastokens, "encode", lambda self, texts: encode._flatten([[1] for _ in texts]))
    src = tmp_path / "c.jsonl"
    src.write_text('{"text": "in the beginning"}\n')
    with pytest.warns(LlmptWarning, match="the fastokens encoder disagrees .* trying the next encoder"):
        prepare_data([str(src)], output=str(tmp_path / "o"), tokenizer=str(FAMILIES["qwen"][0]), slow_start=False)
    assert read_manifest(tmp_path / "o")["encoder"]["backend"] == "tiktoken"


def test_manifest_records_the_tokenizer_for_train(tmp_path):
    src = tmp_path / "c.jsonl"
    src.write_text('{"text": "in the beginning"}\n')
    prepare_data([str(src)], output=str(tmp_path / "a"), tokenizer=str(FAMILIES["qwen2"][0]))
    prepare_data([str(src)], output=str(tmp_path / "b"), tokenizer=str(FAMILIES["gpt"][0]))
    a, b = (read_manifest(tmp_path / n)["tokenizer"] for n in "ab")
    assert (a["name"], a["class"], a["vocab_size"], a["num_ids"]) == ("qwen2", "Qwen2Tokenizer", 1024, 1028)
    assert set(a["files"]) == {"merges.txt", "tokenizer_config.json", "vocab.json"}
    assert len(a["sha256"]) == 64 and a["sha256"] != b["sha256"]


@pytest.mark.slow
def test_test_tokenizers_are_reproducible(tmp_path):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    script = root / "scripts" / "build_test_tokenizers.py"
    subprocess.run([sys.executable, str(script), "--out", str(tmp_path / "t")], check=True, capture_output=True)
    shipped = sorted(p.relative_to(TEST_TOKENIZERS) for p in TEST_TOKENIZERS.rglob("*") if p.is_file())
    assert shipped == sorted(p.relative_to(tmp_path / "t") for p in (tmp_path / "t").rglob("*") if p.is_file())
    for rel in shipped:
        assert (tmp_path / "t" / rel).read_bytes() == (TEST_TOKENIZERS / rel).read_bytes(), rel
