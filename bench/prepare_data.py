"""prepare-data speed: llmpt vs a faithful baseline of PaddleNLP's own pipeline, side by side, per tokenizer family.

Baseline = llm/tools/preprocess/create_pretraining_data.py's pipeline re-stated: a multiprocessing.Pool (fork)
whose initializer loads AutoTokenizer, `pool.imap(encode, lines, 256)` where encode does json.loads, collapses
repeated characters (its regex, no re.S), `tokenizer.tokenize` + `convert_tokens_to_ids` and appends EOS, feeding
paddlenlp.data.indexed_dataset's MMapIndexedDatasetBuilder (add_item/end_document/finalize).

Every run is a fresh process (imports, tokenizer load and worker start-up included), started by this script, which
times it from the outside. The run reports when PaddleNLP was imported and the tokenizer loaded (loaded: both sides
need it, llmpt for its self-check) and when its first document was written: start-up = launch to first document
(the pipeline's first is written after its pool's first 256 lines), steady state = the rest of the input over the
rest of the time. For each family and worker count the
baseline and llmpt alternate (the order flips every repeat), so that load from elsewhere hits both; the table
shows the median over repeats, the spread (min-max of the ratio), whether the outputs are byte-identical, and the
machine's load average during the cell.

    .venv/bin/python bench/prepare_data.py [--families sentencepiece,qwen,qwen2,hf_fast,gpt] [--workers 1,2]
        [--mb 40] [--repeat 3] [--corpus kjv|code|PATH] [--tokenizer FAMILY=DIR ...]   # --mb 0.2 works too
    .venv/bin/python bench/prepare_data.py --memory 40,400     # llmpt's peak RSS on 40 MB and 400 MB inputs

The shipped test tokenizers are tiny (1024 ids); pass real ones with --tokenizer (bench/real_tokenizers.py builds
150k-entry directories for qwen, qwen2, hf_fast and gpt from Qwen's public qwen.tiktoken).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "llmpt" / "assets"
SHIPPED_CORPUS = ASSETS / "corpus" / "kjv.jsonl.gz"
FAMILIES = {  # name -> (tokenizer directory, what it stands for)
    "sentencepiece": (ASSETS / "tokenizer", "LlamaTokenizer (sentencepiece)"),
    "qwen": (ASSETS / "test_tokenizers" / "qwen", "QWenTokenizer (tiktoken)"),
    "llama3": (ASSETS / "test_tokenizers" / "llama3", "Llama3Tokenizer (tiktoken)"),
    "qwen2": (ASSETS / "test_tokenizers" / "qwen2", "Qwen2Tokenizer (vocab.json+merges, Python BPE)"),
    "hf_fast": (ASSETS / "test_tokenizers" / "hf_fast", "Qwen2TokenizerFast (tokenizer.json)"),
    "gpt": (ASSETS / "test_tokenizers" / "gpt", "GPTTokenizer (vocab.json+merges, Python BPE)"),
}


def make_corpus(path: Path, mb: float) -> Path:
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
                if written >= mb * 1e6:
                    break
    return path


def make_code_corpus(path: Path, mb: float) -> Path:
    """>= mb MB of jsonl with one source or text file of this Python installation per document: a more varied
    vocabulary than the Bible (identifiers, numbers, some non-English), repeated if the files run out."""
    if path.exists() and path.stat().st_size >= mb * 1e6:
        return path
    roots = sorted({Path(os.__file__).parent, Path(np.__file__).parents[1]})
    files = sorted(p for r in roots for p in r.rglob("*") if p.suffix in (".py", ".txt", ".rst", ".md") and p.is_file())
    written = 0
    with path.open("w", encoding="utf-8") as f:
        while written < mb * 1e6:
            for p in files:
                try:
                    text = p.read_text(encoding="utf-8")
                except (OSError, UnicodeDecodeError):
                    continue
                if text.strip():
                    line = json.dumps({"text": text}, ensure_ascii=False) + "\n"
                    f.write(line)
                    written += len(line.encode())
                if written >= mb * 1e6:
                    break
    return path


# ---- the baseline: create_pretraining_data.py, re-stated ------------------------------------------------------
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
        if docs and tok.eos_token_id is not None:
            docs[-1].append(tok.eos_token_id)
        return docs, len(text.encode("utf-8"))


def run_baseline(corpus: Path, prefix: str, workers: int, tokenizer_dir: str | Path | None = None) -> dict:
    """PaddleNLP's pipeline on `corpus` into PREFIX.bin/.idx; timings and token count."""
    import multiprocessing as mp

    from paddlenlp.data import indexed_dataset
    from paddlenlp.transformers import AutoTokenizer

    tokenizer_dir = str(tokenizer_dir or FAMILIES["sentencepiece"][0])
    conv = _Baseline(tokenizer_dir)
    vocab = AutoTokenizer.from_pretrained(tokenizer_dir).vocab_size
    loaded = time.time()  # PaddleNLP imported and the tokenizer loaded (its workers load it again)
    dtype = np.uint16 if vocab < 2**16 - 1 else np.int32
    pool = mp.get_context("fork").Pool(workers, initializer=conv.initializer)
    builder = indexed_dataset.make_builder(prefix + ".bin", "mmap", dtype)
    tokens = done = 0
    first = None
    with corpus.open("r", encoding="utf-8") as f:
        for doc, nbytes in pool.imap(conv.encode, f, 256):
            done += nbytes
            for sentence in doc:
                if sentence:
                    builder.add_item(sentence)
                    tokens += len(sentence)
            if doc:
                builder.end_document()
            if first is None:
                first = (time.time(), done)
    pool.close()
    builder.finalize(prefix + ".idx")
    return {"first": first, "loaded": loaded, "end": time.time(), "tokens": tokens}


def run_llmpt(corpus: Path, prefix: str, workers: int, tokenizer_dir: str | Path | None = None, **kw) -> dict:
    import llmpt.data.prepare as prepare

    first = loaded = None
    load = prepare.load_tokenizer

    def timed_load(*a):
        nonlocal loaded
        tok = load(*a)
        loaded = time.time()  # PaddleNLP imported and the tokenizer loaded
        return tok

    prepare.load_tokenizer = timed_load

    def progress(docs, tokens, nbytes):
        nonlocal first
        if first is None:
            first = (time.time(), nbytes)

    r = prepare.prepare_data(
        [str(corpus)], output=prefix, workers=workers, tokenizer=str(tokenizer_dir) if tokenizer_dir else None,
        force=True, progress=progress, **kw,
    )  # fmt: skip
    return {"first": first, "loaded": loaded, "end": time.time(), "tokens": r.tokens, "encoder": r.encoder}


def _child(args) -> None:
    """One timed run in this fresh process; prints one JSON line (with peak RSS of this process and its workers)."""
    import resource
    import warnings

    warnings.simplefilter("ignore")
    run = run_baseline if args.child == "baseline" else run_llmpt
    out = run(Path(args.corpus), args.prefix, args.child_workers, args.tokenizer_dir)
    out["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # the encoding workers' own report (RUSAGE_CHILDREN would also count whatever paddle forks at import)
    out["workers_rss_mb"] = (out.get("encoder") or {}).get("worker_peak_rss_mb", float("nan"))
    print("RESULT " + json.dumps(out))


def timed(kind: str, corpus: Path, prefix: str, workers: int, tokenizer_dir: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--corpus", str(corpus), "--prefix", prefix]
    cmd += ["--child-workers", str(workers), "--tokenizer-dir", str(tokenizer_dir)]
    import resource

    load0 = os.getloadavg()[0]
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    launch = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    wall = time.time() - launch
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    if p.returncode or not lines:
        raise SystemExit(f"{kind} run failed:\n{p.stderr[-3000:]}")
    r = json.loads(lines[-1][7:])
    size = corpus.stat().st_size
    (t_first, bytes_first), end = r["first"], r["end"]
    r |= {
        "wall": wall,
        # CPU seconds of the run and every process it waited for (its workers): what other jobs on a shared
        # machine do not change, unlike the wall time
        "cpu": (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime),
        "startup": t_first - launch,
        "loaded": r["loaded"] - launch,
        # from PaddleNLP imported and the tokenizer loaded to the end: what differs between the two once the import
        # both need (the largest and, under load, the noisiest part of a small run) is done
        "after_load": end - r["loaded"],
        # meaningless when the first document came after most of the input (small corpora): nan
        "steady_mbs": (size - bytes_first) / 1e6 / max(end - t_first, 1e-9) if bytes_first < size / 2 else float("nan"),
        "load": (load0 + os.getloadavg()[0]) / 2,
    }
    return r


def _same(a: str, b: str) -> bool:
    return all(Path(f"{a}.{e}").read_bytes() == Path(f"{b}.{e}").read_bytes() for e in ("bin", "idx"))


def bench(args) -> None:
    corpus = _corpus(args)
    mb = corpus.stat().st_size / 1e6
    dirs = {k: v[0] for k, v in FAMILIES.items()} | dict(t.split("=", 1) for t in args.tokenizer)
    print(f"corpus {corpus} ({mb:.1f} MB), {os.cpu_count()} cores, repeats {args.repeat}")
    print(
        f"{'family':14s} {'w':>2s} | {'baseline s':>10s} {'llmpt s':>8s} {'ratio':>6s} {'spread':>11s} | "
        f"{'cpu s b/l':>11s} | {'loaded b/l':>11s} {'after-load b/l':>14s} {'ratio':>6s} {'start-up b/l':>12s} | "
        f"{'steady MB/s b/l':>16s} {'ratio':>6s} | "
        f"{'same':4s} "
        f"{'load':>5s} | encoder"
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        # llmpt remembers its fast path's set-up time per tokenizer (LLMPT_CACHE): a fresh cache, so that each
        # family's first llmpt run starts from nothing remembered, as on a new machine, and the later ones do not
        os.environ["LLMPT_CACHE"] = f"{tmp}/llmpt-cache"
        for family in args.families.split(","):
            tok_dir = Path(dirs[family])
            for w in [int(x) for x in args.workers.split(",")]:
                runs: dict[str, list[dict]] = {"baseline": [], "llmpt": []}
                for rep in range(args.repeat):
                    order = ("baseline", "llmpt") if rep % 2 == 0 else ("llmpt", "baseline")
                    for kind in order:
                        runs[kind].append(timed(kind, corpus, f"{tmp}/{kind}", w, tok_dir))
                    same = _same(f"{tmp}/baseline", f"{tmp}/llmpt")
                b, m = runs["baseline"], runs["llmpt"]
                ratios = [x["wall"] / y["wall"] for x, y in zip(b, m, strict=True)]
                fields = ("wall", "cpu", "loaded", "after_load", "startup", "steady_mbs", "load")
                med = {k: {f: statistics.median(r[f] for r in v) for f in fields} for k, v in runs.items()}
                enc = m[-1]["encoder"]
                row = {
                    "family": family, "workers": w, "baseline_s": med["baseline"]["wall"],
                    "llmpt_s": med["llmpt"]["wall"], "ratio": med["baseline"]["wall"] / med["llmpt"]["wall"],
                    "ratio_min": min(ratios),
                    "ratio_max": max(ratios), "cpu_baseline": med["baseline"]["cpu"], "cpu_llmpt": med["llmpt"]["cpu"],
                    "loaded_baseline": med["baseline"]["loaded"], "loaded_llmpt": med["llmpt"]["loaded"],
                    "after_load_baseline": med["baseline"]["after_load"],
                    "after_load_llmpt": med["llmpt"]["after_load"],
                    "after_load_ratios": [x["after_load"] / y["after_load"] for x, y in zip(b, m, strict=True)],
                    "startup_baseline": med["baseline"]["startup"],
                    "startup_llmpt": med["llmpt"]["startup"], "steady_baseline": med["baseline"]["steady_mbs"],
                    "steady_llmpt": med["llmpt"]["steady_mbs"], "same": same,
                    "load": statistics.mean(r["load"] for v in runs.values() for r in v),
                    "encoder": f"{enc['family']}/{enc['backend']}",
                    # how much the class encoded while the fast path was prepared (llmpt's last run)
                    "class_mb": (enc.get("selection") or {}).get("class_bytes", 0) / 1e6,
                    # per llmpt run: its wall time, and whether its fast encoder was built from a remembered spec
                    "llmpt_runs": [
                        (round(r["wall"], 1), round(r["after_load"], 1),
                         (r["encoder"].get("selection") or {}).get("spec_remembered"))
                        for r in m
                    ],
                    "baseline_runs": [(round(r["wall"], 1), round(r["after_load"], 1)) for r in b],
                }  # fmt: skip
                rows.append(row)
                print(
                    f"{family:14s} {w:2d} | {row['baseline_s']:10.1f} {row['llmpt_s']:8.1f} {row['ratio']:5.2f}x "
                    f"{row['ratio_min']:4.2f}-{row['ratio_max']:4.2f}x | "
                    f"{row['cpu_baseline']:5.1f}/{row['cpu_llmpt']:5.1f} | "
                    f"{row['loaded_baseline']:5.1f}/{row['loaded_llmpt']:5.1f} "
                    f"{row['after_load_baseline']:5.1f}/{row['after_load_llmpt']:5.1f} "
                    f"{statistics.median(row['after_load_ratios']):5.2f}x "
                    f"{row['startup_baseline']:5.1f}/{row['startup_llmpt']:5.1f} | "
                    f"{row['steady_baseline']:7.2f}/{row['steady_llmpt']:7.2f} "
                    f"{row['steady_llmpt'] / row['steady_baseline']:5.2f}x | {str(same):4s} {row['load']:5.1f} | "
                    f"{row['encoder']} (class {row['class_mb']:.2f} MB) | runs b {row['baseline_runs']} "
                    f"l {row['llmpt_runs']}",
                    flush=True,
                )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")


def memory(args) -> None:
    """llmpt's peak RSS (parent, largest worker) on inputs of each size: flat if nothing grows with the corpus."""
    family = args.families.split(",")[0]
    tok_dir = dict((k, v[0]) for k, v in FAMILIES.items()) | dict(t.split("=", 1) for t in args.tokenizer)
    w = int(args.workers.split(",")[-1])
    print(f"family {family}, workers {w}")
    with tempfile.TemporaryDirectory() as tmp:
        for mb in [float(x) for x in args.memory.split(",")]:
            corpus = _corpus(args, mb)
            r = timed("llmpt", corpus, f"{tmp}/m", w, Path(tok_dir[family]))
            print(
                f"{corpus.stat().st_size / 1e6:7.0f} MB input: parent peak RSS {r['rss_mb']:6.0f} MB, largest worker "
                f"{r['workers_rss_mb']:5.0f} MB, {r['wall']:.0f} s, load {r['load']:.1f}",
                flush=True,
            )


def _corpus(args, mb: float | None = None) -> Path:
    mb = mb or args.mb
    if args.corpus == "kjv":
        return make_corpus(Path(tempfile.gettempdir()) / f"llmpt-bench-kjv-{mb:g}mb.jsonl", mb)
    if args.corpus == "code":
        return make_code_corpus(Path(tempfile.gettempdir()) / f"llmpt-bench-code-{mb:g}mb.jsonl", mb)
    return Path(args.corpus)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--families", default="sentencepiece,qwen,qwen2,hf_fast,gpt")
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    ap.add_argument("--mb", type=float, default=40)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--corpus", default="kjv", help="kjv (reshuffled Bible), code (this Python's sources) or a path")
    ap.add_argument("--tokenizer", action="append", default=[], metavar="FAMILY=DIR")
    ap.add_argument("--memory", help="comma-separated input sizes in MB: report peak RSS instead")
    ap.add_argument("--json", help="also write the rows to this file")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--prefix", help=argparse.SUPPRESS)
    ap.add_argument("--child-workers", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--tokenizer-dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(args)
    elif args.memory:
        memory(args)
    else:
        bench(args)


if __name__ == "__main__":
    main()
