"""Real-sized tokenizer directories for bench/prepare_data.py, built offline from Qwen's public tiktoken vocabulary
(151,643 ranks; the Qwen2/2.5 BPE vocabulary is the same one):

    qwen/      QWenTokenizer        qwen.tiktoken as is
    qwen2/     Qwen2Tokenizer       vocab.json + merges.txt (merges recovered from the ranks, as HF's converter does)
    hf_fast/   Qwen2TokenizerFast   tokenizer.json of the same BPE (NFC, Qwen2's split regex, byte level)
    gpt/       GPTTokenizer         vocab.json + merges.txt with <|endoftext|> appended, GPT-2 style

Nothing here is downloaded: pass the rank file. One place it ships is the `dashscope` wheel on PyPI
(`pip download --no-deps dashscope`, then unzip dashscope/resources/qwen.tiktoken).

    .venv/bin/python bench/real_tokenizers.py QWEN_TIKTOKEN OUT_DIR
    .venv/bin/python bench/prepare_data.py --tokenizer qwen=OUT_DIR/qwen --tokenizer qwen2=OUT_DIR/qwen2 \\
        --tokenizer hf_fast=OUT_DIR/hf_fast --tokenizer gpt=OUT_DIR/gpt
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

QWEN_PAT = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"""
    r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def _bytes_to_unicode() -> dict[int, str]:
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


def _merges(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """Each multi-byte token's last merge: BPE over its bytes with the ranks below its own, stopped at two parts."""
    out = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) == 1:
            continue
        parts = [bytes([b]) for b in token]
        while True:
            best = None
            for i in range(len(parts) - 1):
                r = ranks.get(parts[i] + parts[i + 1])
                if r is not None and r < rank and (best is None or r < best[0]):
                    best = (r, i)
            if best is None:
                break
            i = best[1]
            parts = parts[:i] + [parts[i] + parts[i + 1]] + parts[i + 2 :]
        if len(parts) == 2:
            out.append((parts[0], parts[1]))
    return out


def build(tiktoken_path: Path, out: Path) -> None:
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

    from llmpt.data.encode import load_tiktoken_ranks

    ranks = load_tiktoken_ranks(str(tiktoken_path))
    b2u = _bytes_to_unicode()

    def u(b: bytes) -> str:
        return "".join(b2u[x] for x in b)

    vocab = {u(t): r for t, r in ranks.items()}
    merges = [(u(a), u(b)) for a, b in _merges(ranks)]
    for name in ("qwen", "qwen2", "hf_fast", "gpt"):
        (out / name).mkdir(parents=True, exist_ok=True)
    shutil.copy(tiktoken_path, out / "qwen" / "qwen.tiktoken")
    config = {"tokenizer_class": "QWenTokenizer", "eos_token": "<|endoftext|>"}
    (out / "qwen" / "tokenizer_config.json").write_text(json.dumps(config))
    merges_txt = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)
    n = len(vocab)
    for name, v in (("qwen2", vocab), ("gpt", {**vocab, "<|endoftext|>": n})):
        (out / name / "vocab.json").write_text(json.dumps(v, ensure_ascii=False))
        (out / name / "merges.txt").write_text(merges_txt, encoding="utf-8")
    added = {
        str(n + i): {"content": t, "lstrip": False, "rstrip": False, "normalized": False, "special": True}
        for i, t in enumerate(SPECIALS)
    }
    qwen2 = {"tokenizer_class": "Qwen2Tokenizer", "added_tokens_decoder": added, "eos_token": "<|endoftext|>"}
    qwen2 |= {"pad_token": "<|endoftext|>", "unk_token": None, "bos_token": None}
    (out / "qwen2" / "tokenizer_config.json").write_text(json.dumps(qwen2))
    (out / "gpt" / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "GPTTokenizer"}))
    tk = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tk.normalizer = normalizers.NFC()
    tk.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(QWEN_PAT), "isolated"), pre_tokenizers.ByteLevel(False, use_regex=False)]
    )
    tk.decoder = decoders.ByteLevel()
    tk.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS])
    tk.save(str(out / "hf_fast" / "tokenizer.json"))
    fast = {"tokenizer_class": "Qwen2TokenizerFast", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}
    (out / "hf_fast" / "tokenizer_config.json").write_text(json.dumps(fast))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tiktoken", type=Path)
    ap.add_argument("out", type=Path)
    a = ap.parse_args()
    build(a.tiktoken, a.out)
    print(a.out)
