"""prepare-data speed: llmpt vs a faithful baseline of PaddleNLP's own pipeline, side by side.

Baseline = llm/tools/preprocess/create_pretraining_data.py's pipeline re-stated: a multiprocessing.Pool whose
initializer loads AutoTokenizer, `pool.imap(encode, lines, 256)` where encode does json.loads, collapses
repeated characters, `tokenizer.tokenize` + `convert_tokens_to_ids` and appends EOS, feeding
paddlenlp.data.indexed_dataset's MMapIndexedDatasetBuilder (add_item/end_document/finalize).
Both read the same >= 50 MB jsonl corpus (generated from the shipped corpus if missing) with the same
tokenizer and worker count; the script prints both throughputs, the ratio, and whether the outputs are
byte-identical.

    .venv/bin/python bench/prepare_data.py [--workers 2] [--mb 50] [--repeat 1]
"""

from __future__ import annotations

import argparse
import filecmp
import gzip
import json
import multiprocessing as mp
import random
import re
import tempfile
import time
from pathlib import Path

import numpy as np

from llmpt.data.prepare import prepare_data
from llmpt.data.tokenizer import SHIPPED_CORPUS, SHIPPED_TOKENIZER


def make_corpus(path: Path, mb: int) -> Path:
    """>= mb MB of jsonl: the shipped chapters, reshuffled per pass so that documents are not byte-repeats."""
    if path.exists() and path.stat().st_size >= mb * 1e6:
        return path
    docs = [json.loads(line)["text"] for line in gzip.open(SHIPPED_CORPUS, "rt", encoding="utf-8")]
    rng = random.Random(0)
    written, n = 0, 0
    with path.open("w", encoding="utf-8") as f:
        while written < mb * 1e6:
            for _ in range(len(docs)):
                # a document = 3 random chapters' verses in random order
                verses = [v for d in rng.sample(docs, 3) for v in re.split(r"(?<=[.;:?!]) ", d)]
                rng.shuffle(verses)
                line = json.dumps({"text": " ".join(verses), "id": n}) + "\n"
                f.write(line)
                written += len(line.encode())
                n += 1
    return path


class _Baseline:
    tokenizer = None

    def __init__(self, tokenizer_dir: str, text_key: str = "text") -> None:
        self.tokenizer_dir, self.text_key = tokenizer_dir, text_key

    def initializer(self) -> None:
        from paddlenlp.transformers import AutoTokenizer

        _Baseline.tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_dir)

    def encode(self, json_line: str):
        text = json.loads(json_line)[self.text_key]
        text = re.sub(r"(.)\1{100,}", r"\1", text)
        tok = _Baseline.tokenizer
        ids = tok.convert_tokens_to_ids(tok.tokenize(text.strip()))
        docs = [ids] if ids else []
        if docs:
            docs[-1].append(tok.eos_token_id)
        return docs, len(text.encode("utf-8"))


def run_baseline(corpus: Path, prefix: str, workers: int) -> tuple[float, int]:
    from paddlenlp.data import indexed_dataset
    from paddlenlp.transformers import AutoTokenizer

    start = time.perf_counter()
    conv = _Baseline(str(SHIPPED_TOKENIZER))
    vocab = AutoTokenizer.from_pretrained(str(SHIPPED_TOKENIZER)).vocab_size
    dtype = np.uint16 if vocab < 2**16 - 1 else np.int32
    pool = mp.Pool(workers, initializer=conv.initializer)
    builder = indexed_dataset.make_builder(prefix + ".bin", "mmap", dtype)
    tokens = 0
    with corpus.open("r", encoding="utf-8") as f:
        for doc, _ in pool.imap(conv.encode, f, 256):
            for sentence in doc:
                if sentence:
                    builder.add_item(sentence)
                    tokens += len(sentence)
            if doc:
                builder.end_document()
    pool.close()
    builder.finalize(prefix + ".idx")
    return time.perf_counter() - start, tokens


def run_llmpt(corpus: Path, prefix: str, workers: int) -> tuple[float, int]:
    start = time.perf_counter()
    r = prepare_data([str(corpus)], output=prefix, workers=workers, force=True)
    return time.perf_counter() - start, r.tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--mb", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=1, help="alternate the two runs this many times; best time wins")
    ap.add_argument("--corpus", type=Path, default=Path(tempfile.gettempdir()) / "llmpt-bench-corpus.jsonl")
    args = ap.parse_args()
    corpus = make_corpus(args.corpus, args.mb)
    mb = corpus.stat().st_size / 1e6
    print(f"corpus {corpus} ({mb:.1f} MB), tokenizer {SHIPPED_TOKENIZER}, workers {args.workers}")
    with tempfile.TemporaryDirectory() as tmp:
        base_p, ours_p = f"{tmp}/baseline", f"{tmp}/llmpt"
        best = {"baseline": float("inf"), "llmpt": float("inf")}
        tokens = {}
        for _ in range(args.repeat):
            t, tokens["baseline"] = run_baseline(corpus, base_p, args.workers)
            best["baseline"] = min(best["baseline"], t)
            t, tokens["llmpt"] = run_llmpt(corpus, ours_p, args.workers)
            best["llmpt"] = min(best["llmpt"], t)
        same = filecmp.cmp(base_p + ".bin", ours_p + ".bin", shallow=False) and filecmp.cmp(
            base_p + ".idx", ours_p + ".idx", shallow=False
        )
    for name in ("baseline", "llmpt"):
        t = best[name]
        print(f"{name:9s} {t:7.2f} s  {mb / t:6.2f} MB/s  {tokens[name] / t:12,.0f} tokens/s")
    print(f"ratio llmpt/baseline: {best['baseline'] / best['llmpt']:.2f}x   identical output bytes: {same}")


if __name__ == "__main__":
    main()
