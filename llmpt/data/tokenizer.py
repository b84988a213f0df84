"""Which tokenizer prepare-data uses: a local directory, a registry model's local files, or the shipped one.
Nothing is downloaded."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

from llmpt.data.encode import EncoderSpec
from llmpt.data.inputs import DataError
from llmpt.data.mmap import token_dtype

ASSETS = Path(__file__).resolve().parents[1] / "assets"
SHIPPED_TOKENIZER = ASSETS / "tokenizer"
SHIPPED_CORPUS = ASSETS / "corpus" / "kjv.jsonl.gz"


def sentencepiece_size(model_path: Path) -> int:
    """The piece count of a sentencepiece model (what LlamaTokenizer reports as vocab_size), read from the file's
    protobuf without sentencepiece or PaddleNLP: the number of top-level `pieces` fields (field 1)."""
    buf, i, pieces = model_path.read_bytes(), 0, 0

    def varint() -> int:
        nonlocal i
        value = shift = 0
        while True:
            b = buf[i]
            i += 1
            value |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                return value

    while i < len(buf):
        tag = varint()
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            varint()
        elif wire == 1:
            i += 8
        elif wire == 2:
            length = varint()  # not `i += varint()`: that adds to the value i had before the length was read
            i += length
            pieces += field == 1
        elif wire == 5:
            i += 4
        else:
            raise ValueError(f"{model_path}: not a sentencepiece model (wire type {wire})")
    return pieces


def shipped_corpus_facts() -> dict:
    """What preparing the shipped corpus gives, known without preparing it (a refusal must not spend seconds
    writing megabytes first): its documents (one per line) and the shipped tokenizer, shaped like the manifest's
    keys. tests/bad_inputs checks them against a prepared copy's manifest."""
    with gzip.open(SHIPPED_CORPUS, "rt", encoding="utf-8") as f:
        documents = sum(1 for line in f if line.strip())
    vocab = sentencepiece_size(SHIPPED_TOKENIZER / "sentencepiece.bpe.model")
    return {"documents": documents, "tokenizer": {"dir": str(SHIPPED_TOKENIZER), "vocab_size": vocab}}


def _local_dirs_for(model_id: str) -> list[Path]:
    # where PaddleNLP's from_pretrained caches a model's files, plus an llmpt override
    roots = [
        os.environ.get("LLMPT_TOKENIZERS_DIR"),
        os.environ.get("PPNLP_HOME") and f"{os.environ['PPNLP_HOME']}/models",
    ]
    roots.append(str(Path.home() / ".paddlenlp" / "models"))
    return [Path(r) / model_id for r in roots if r]


def resolve_tokenizer_dir(arg: str | None) -> Path:
    """The directory AutoTokenizer will load: DataError when there is none locally."""
    if arg is None:
        return SHIPPED_TOKENIZER
    p = Path(arg)
    if p.is_dir():
        if not any((p / n).is_file() for n in ("tokenizer_config.json", "tokenizer.json", "vocab.json")):
            raise DataError(
                f"--tokenizer {arg}: directory has no tokenizer_config.json",
                "pass a directory written by a PaddleNLP tokenizer's save_pretrained()",
            )
        return p
    if os.sep in arg or p.exists():  # a path, not a model id
        what = "a file, not a directory" if p.exists() else "no such directory"
        raise DataError(
            f"--tokenizer {arg}: {what}",
            "pass a tokenizer directory (save_pretrained() output) or a model id whose tokenizer is local",
        )
    from llmpt.models.registry import resolve_model

    spec = resolve_model(arg)  # ModelError (unknown model, did you mean) if it is not a model either
    if spec.id.endswith("-tiny"):
        return SHIPPED_TOKENIZER
    candidates = _local_dirs_for(spec.id)
    for c in candidates:
        if (c / "tokenizer_config.json").is_file():
            return c
    raise DataError(
        f"--tokenizer {arg}: the tokenizer files of {spec.id} are not on this machine "
        f"(looked in {', '.join(str(c) for c in candidates)}); llmpt downloads nothing",
        "copy them into one of those directories, or pass --tokenizer DIR",
    )


def load_tokenizer(tokenizer_dir: Path):
    """PaddleNLP's AutoTokenizer over a local directory, with errors as one line."""
    from paddlenlp.transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(tokenizer_dir))
    except Exception as e:  # noqa: BLE001 - PaddleNLP raises many types here; the user needs one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"tokenizer {tokenizer_dir}: PaddleNLP cannot load it ({first[:200]})") from None


def encoder_spec(tok, tokenizer_dir: Path, text_key: str, append_eos: bool) -> EncoderSpec:
    """Use plain sentencepiece when the tokenizer is LlamaTokenizer-shaped (its tokenize is sp.encode)."""
    sp_path = None
    from paddlenlp.transformers import LlamaTokenizer

    if (
        type(tok).__name__ == "LlamaTokenizer"
        and type(tok)._tokenize is LlamaTokenizer._tokenize
        and not getattr(tok, "sp_model_kwargs", None)
        and Path(getattr(tok, "vocab_file", "")).is_file()
    ):
        sp_path = str(tok.vocab_file)
    specials = tuple(sorted(set(tok.all_special_tokens) | set(getattr(tok, "added_tokens_encoder", {}))))
    return EncoderSpec(
        tokenizer_dir=str(tokenizer_dir),
        sp_model_path=sp_path,
        special_tokens=specials,
        eos_id=tok.eos_token_id,
        append_eos=append_eos,
        text_key=text_key,
        dtype=token_dtype(tok.vocab_size).name,
    )
