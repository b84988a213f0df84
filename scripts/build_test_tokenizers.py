"""Build the small byte-level BPE test tokenizers (llmpt/assets/test_tokenizers) offline, reproducibly.

One byte-level BPE (GPT-2 / Qwen2 pre-tokenizer regex, 256 byte symbols + merges, 1024 ids) trained with Hugging Face
`tokenizers` on the shipped corpus plus a few lines of other scripts, written once and loaded by five PaddleNLP
tokenizer classes, one directory each:

    qwen2/        Qwen2Tokenizer        vocab.json + merges.txt, pure-Python BPE, NFC      (Qwen2 / Qwen2.5)
    gpt/          GPTTokenizer          vocab.json + merges.txt, pure-Python BPE           (gpt, opt)
    hf_fast/      Qwen2TokenizerFast    tokenizer.json through `tokenizers`                 (any tokenizer.json)
    qwen/         QWenTokenizer         qwen.tiktoken, tiktoken, NFC, 208 special tokens   (Qwen v1)
    llama3/       Llama3Tokenizer       tokenizer.model in tiktoken format, 256 specials   (Llama-3)

The tiktoken files give each token's bytes its BPE id as rank (ids follow merge order, so tiktoken's rank-ordered
merging reproduces the BPE). Every directory loads with `AutoTokenizer.from_pretrained(dir)` and no network.
Run: .venv/bin/python scripts/build_test_tokenizers.py [--out DIR]   (a test rebuilds them and compares bytes)
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import os
import shutil
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "llmpt" / "assets" / "corpus" / "kjv.jsonl.gz"
DEFAULT_OUT = ROOT / "llmpt" / "assets" / "test_tokenizers"
VOCAB_SIZE = 1024  # 256 bytes + 768 merges: small files, still real multi-byte merges
# the pre-tokenizer of Qwen2Tokenizer / QWenTokenizer (one digit per piece)
QWEN_PAT = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"""
    r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
EXTRA_TEXT = [  # a few other scripts so that merges exist beyond ASCII
    "中文文本的测试。我们在这里写一些汉字，汉字和汉字。日本語のテキストもあります。",
    "Ünïcödé naïve café résumé — «quotes» “smart” ‘single’ … emoji 🙂🚀👍🏽 and Ελληνικά, русский текст.",
    "def f(x):\n\treturn x + 1  # code\r\n\r\nif __name__ == '__main__':\n    print(f(41))\n",
]
ENDOFTEXT = "<|endoftext|>"


def _training_lines() -> list[str]:
    with gzip.open(CORPUS, "rt", encoding="utf-8") as f:
        lines = [json.loads(line)["text"] for line in f]
    return lines[:300] + EXTRA_TEXT * 20


def _bytes_to_unicode() -> dict[int, str]:
    # GPT-2's reversible byte -> printable character table (the byte-level alphabet)
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


def train() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(vocab, merges) of a byte-level BPE: ids 0..255 the bytes in byte order, then merges in order."""
    os.environ["RAYON_NUM_THREADS"] = "1"  # one thread: the same merges on every machine
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_PAT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tk.train_from_iterator(_training_lines(), trainer=trainer)
    model = json.loads(tk.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    # renumber: bytes first in byte order, then each merge's result in merge order (tiktoken's rank order)
    b2u = _bytes_to_unicode()
    vocab = {b2u[b]: b for b in range(256)}
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    return vocab, merges


def _tiktoken_lines(vocab: dict[str, int]) -> str:
    u2b = {c: b for b, c in _bytes_to_unicode().items()}
    rows = sorted((i, bytes(u2b[c] for c in tok)) for tok, i in vocab.items())
    return "".join(f"{base64.b64encode(b).decode()} {i}\n" for i, b in rows)


def _tokenizer_json(vocab: dict[str, int], merges: list[tuple[str, str]]) -> str:
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

    tk = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tk.normalizer = normalizers.NFC()
    tk.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_PAT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tk.decoder = decoders.ByteLevel()
    tk.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in (ENDOFTEXT, "<|im_start|>", "<|im_end|>")]
    )
    return json.dumps(json.loads(tk.to_str()), indent=1, ensure_ascii=False) + "\n"


def _write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=1, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")


def build(out_dir: Path) -> Path:
    vocab, merges = train()
    vocab_json = json.dumps(vocab, ensure_ascii=False, indent=0, sort_keys=True) + "\n"
    merges_txt = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)
    tiktoken = _tiktoken_lines(vocab)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "test_tokenizers"
        dirs = {name: root / name for name in ("qwen2", "gpt", "hf_fast", "qwen", "llama3")}
        for d in dirs.values():
            d.mkdir(parents=True)
        for name in ("qwen2", "gpt"):
            (dirs[name] / "merges.txt").write_text(merges_txt, encoding="utf-8")
        (dirs["qwen2"] / "vocab.json").write_text(vocab_json, encoding="utf-8")
        # as Qwen2's own files: the specials are added tokens above the BPE vocabulary (no strip around them);
        # <|im_start|> also listed plainly, a token PaddleNLP strips whitespace around
        specials = (ENDOFTEXT, "<|im_start|>", "<|im_end|>")
        _write_json(
            dirs["qwen2"] / "tokenizer_config.json",
            {
                "tokenizer_class": "Qwen2Tokenizer",
                "added_tokens_decoder": {
                    str(len(vocab) + i): {
                        "content": t,
                        "lstrip": False,
                        "normalized": False,
                        "rstrip": False,
                        "single_word": False,
                        "special": True,
                    }
                    for i, t in enumerate(specials)
                },
                "additional_special_tokens": ["<|im_start|>", "<|im_end|>", "<extra_0>"],
                "eos_token": ENDOFTEXT,
                "pad_token": ENDOFTEXT,
                "unk_token": None,
                "bos_token": None,
            },
        )
        # as GPT-2's own files: <|endoftext|> is the last vocabulary entry and eos = unk = pad
        gpt_vocab = {**vocab, ENDOFTEXT: len(vocab)}
        gpt_json = json.dumps(gpt_vocab, ensure_ascii=False, indent=0, sort_keys=True) + "\n"
        (dirs["gpt"] / "vocab.json").write_text(gpt_json, encoding="utf-8")
        _write_json(dirs["gpt"] / "tokenizer_config.json", {"tokenizer_class": "GPTTokenizer"})
        (dirs["hf_fast"] / "tokenizer.json").write_text(_tokenizer_json(vocab, merges), encoding="utf-8")
        _write_json(
            dirs["hf_fast"] / "tokenizer_config.json",
            {"tokenizer_class": "Qwen2TokenizerFast", "eos_token": ENDOFTEXT, "pad_token": ENDOFTEXT},
        )
        (dirs["qwen"] / "qwen.tiktoken").write_text(tiktoken, encoding="utf-8")
        # Qwen v1's PaddleNLP config names no eos; this one does, so that EOS appending is exercised
        _write_json(
            dirs["qwen"] / "tokenizer_config.json", {"tokenizer_class": "QWenTokenizer", "eos_token": ENDOFTEXT}
        )
        (dirs["llama3"] / "tokenizer.model").write_text(tiktoken, encoding="utf-8")
        _write_json(dirs["llama3"] / "tokenizer_config.json", {"tokenizer_class": "Llama3Tokenizer"})
        if out_dir.exists():
            shutil.rmtree(out_dir)
        shutil.copytree(root, out_dir)
    return out_dir


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    print(build(ap.parse_args().out))
