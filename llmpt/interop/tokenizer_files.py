"""The tokenizer that comes with a model's weights: which files it is (by content), how large its vocabulary is, and
whether data was prepared with it (the manifest's tokenizer record, llmpt/data/prepare.py tokenizer_fingerprint).
No tokenizer library is loaded: the files are hashed and the vocabulary counted from them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from llmpt.fsutil import sha256_file

# files that define the vocabulary (any of the tokenizer classes PaddleNLP and transformers ship for these families)
VOCAB_FILES = (
    "tokenizer.json", "tokenizer.model", "sentencepiece.bpe.model", "spiece.model", "ice_text.model", "vocab.json",
    "merges.txt", "vocab.txt", "qwen.tiktoken", "added_tokens.json",
)  # fmt: skip
# files that configure a tokenizer without changing which id a token gets
CONFIG_FILES = ("tokenizer_config.json", "special_tokens_map.json", "chat_template.json")
# PaddleNLP's LlamaTokenizer reads sentencepiece.bpe.model, transformers' LlamaTokenizer tokenizer.model: an export
# in the Hugging Face layout carries both names for the same bytes
HF_ALIASES = {"sentencepiece.bpe.model": "tokenizer.model"}


def tokenizer_record(directory: Path) -> dict[str, Any] | None:
    """{dir, files: {name: sha256}, vocab_size} of the tokenizer files in `directory`; None when it has no
    vocabulary file (weights without a tokenizer)."""
    files = {n: sha256_file(directory / n) for n in (*VOCAB_FILES, *CONFIG_FILES) if (directory / n).is_file()}
    if not any(n in files for n in VOCAB_FILES if n != "added_tokens.json"):
        return None
    return {"dir": str(directory), "files": files, "vocab_size": vocab_size(directory)}


def vocab_size(directory: Path) -> int | None:
    """The base vocabulary as the tokenizer classes report it (vocab_size, added tokens not counted), from its
    files; None when no file says it plainly."""
    try:
        if (directory / "tokenizer.json").is_file():
            model = json.loads((directory / "tokenizer.json").read_text(encoding="utf-8"))["model"]
            vocab = model.get("vocab")
            return len(vocab) if vocab is not None else None
        if (directory / "vocab.json").is_file():
            return len(json.loads((directory / "vocab.json").read_text(encoding="utf-8")))
        if (directory / "qwen.tiktoken").is_file():
            return sum(1 for line in (directory / "qwen.tiktoken").read_bytes().splitlines() if line.strip())
        for name in ("tokenizer.model", "sentencepiece.bpe.model", "spiece.model"):
            if (directory / name).is_file():
                from llmpt.data.tokenizer import sentencepiece_size

                return sentencepiece_size(directory / name)
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None
    return None


def _vocab_hashes(files: dict[str, str]) -> set[str]:
    return {h for n, h in files.items() if n in VOCAB_FILES}


def differs(weights: dict[str, Any], data: dict[str, Any]) -> str | None:
    """Why the data's tokenizer (a manifest's record: vocab_size, and files when recorded) is not the weights' one,
    or None when they agree. Vocabulary files are compared by content, whatever their names (sentencepiece.bpe.model
    and tokenizer.model hold the same bytes in a Llama export); configuration files are not compared (a
    save_pretrained() rewrites them)."""
    data_files = data.get("files") or {}
    if data_files:
        mine, theirs = _vocab_hashes(weights["files"]), _vocab_hashes(data_files)
        missing = sorted(n for n, h in data_files.items() if n in VOCAB_FILES and h not in mine)
        if missing or not theirs:
            name = missing[0] if missing else "its vocabulary"
            return (
                f"the data's {name} is not among the weights' tokenizer files ({', '.join(sorted(weights['files']))})"
            )
    have, want = weights.get("vocab_size"), data.get("vocab_size")
    if have is not None and want is not None and have != want:
        return f"a {want}-token vocabulary, the weights' tokenizer has {have}"
    return None


def copy_tokenizer(src: Path, dst: Path, hf_names: bool) -> list[Path]:
    """The tokenizer files of `src` copied into `dst` byte for byte (with Hugging Face's file names added when
    `hf_names`); the files written."""
    written = []
    for name in (*VOCAB_FILES, *CONFIG_FILES):
        if (src / name).is_file():
            shutil.copyfile(src / name, dst / name)
            written.append(dst / name)
            alias = HF_ALIASES.get(name)
            if hf_names and alias and not (src / alias).is_file():
                shutil.copyfile(src / name, dst / alias)
                written.append(dst / alias)
    return written
