"""Which tokenizer prepare-data uses: a local directory, a registry model's local files, or the shipped one.
Nothing is downloaded."""

from __future__ import annotations

import gzip
import os
from dataclasses import replace
from pathlib import Path

from llmpt.data.encode import AddedTokenRule, EncoderSpec
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


def _no_split_rules(tok) -> tuple[AddedTokenRule, ...]:
    """PretrainedTokenizer.tokenize's added-token split, as data: each no-split token, its id, and whether the
    whitespace beside it is stripped (an AddedToken's own lstrip/rstrip; both for a plain string)."""
    if getattr(tok, "split_special_tokens", False):
        return ()
    from paddlenlp.transformers.tokenizer_utils_base import AddedToken

    extended = {str(t): t for t in tok.all_special_tokens_extended if isinstance(t, AddedToken)}
    rules = []
    for content in tok.unique_no_split_tokens:
        ext = extended.get(content)
        lstrip, rstrip = (ext.lstrip, ext.rstrip) if ext is not None else (True, True)
        rules.append(AddedTokenRule(content, int(tok.convert_tokens_to_ids(content)), bool(lstrip), bool(rstrip)))
    return tuple(rules)


def _is(method, *originals) -> bool:
    return any(method is o for o in originals)


def _tiktoken_fields(tok, tokenizer_dir: Path) -> dict | None:
    """QWenTokenizer / Llama3Tokenizer: tokenize = tiktoken encode(NFC(text), allowed_special="all")."""
    import tiktoken
    from paddlenlp.transformers import Llama3Tokenizer, QWenTokenizer

    cls = type(tok)
    if not (
        isinstance(getattr(tok, "tokenizer", None), tiktoken.Encoding)
        and _is(getattr(cls, "tokenize", None), QWenTokenizer.tokenize, Llama3Tokenizer.tokenize)
        and _is(
            getattr(cls, "convert_tokens_to_ids", None),
            QWenTokenizer.convert_tokens_to_ids,
            Llama3Tokenizer.convert_tokens_to_ids,
        )
    ):
        return None
    enc = tok.tokenizer
    vocab_name = cls.resource_files_names.get("vocab_file", "")
    path = tokenizer_dir / vocab_name
    if not path.is_file():
        return None
    return {
        "family": "tiktoken",
        "nfc": True,
        "model_path": str(path),
        "pattern": enc._pat_str,
        "special_tokens": tuple(sorted(enc._special_tokens.items(), key=lambda kv: kv[1])),
    }


def _sentencepiece_fields(tok) -> dict | None:
    """LlamaTokenizer-shaped: PretrainedTokenizer.tokenize's split, then sp.encode of each piece."""
    from paddlenlp.transformers import LlamaTokenizer, PretrainedTokenizer

    cls = type(tok)
    path = Path(getattr(tok, "vocab_file", "") or "")
    if not (
        _is(getattr(cls, "_tokenize", None), LlamaTokenizer._tokenize)
        and _is(getattr(cls, "tokenize", None), PretrainedTokenizer.tokenize)
        and _is(getattr(cls, "prepare_for_tokenization", None), PretrainedTokenizer.prepare_for_tokenization)
        and _is(getattr(cls, "_convert_token_to_id", None), LlamaTokenizer._convert_token_to_id)
        and _is(getattr(cls, "convert_tokens_to_ids", None), PretrainedTokenizer.convert_tokens_to_ids)
        and not getattr(tok, "sp_model_kwargs", None)
        and not getattr(tok, "do_lower_case", False)
        and path.is_file()
    ):
        return None
    import sentencepiece as spm

    # the class may have rewritten the model on load (legacy=False drops the dummy prefix)
    if (
        spm.SentencePieceProcessor(model_file=str(path)).serialized_model_proto()
        != tok.sp_model.serialized_model_proto()
    ):
        return None
    return {"family": "sentencepiece", "model_path": str(path), "added_tokens": _no_split_rules(tok)}


def _byte_bpe_fields(tok) -> dict | None:
    """GPTTokenizer / BloomTokenizer / Qwen2Tokenizer: a pure-Python byte-level BPE over vocab.json + merges.txt,
    re-built as a tokenizer.json (the class's own vocabulary, merges in rank order and split regex) from what
    complete_spec takes off the class, only when a fast encoder is wanted."""
    from paddlenlp.transformers import BloomTokenizer, GPTTokenizer, PretrainedTokenizer, Qwen2Tokenizer

    cls = type(tok)
    classes = (GPTTokenizer, BloomTokenizer, Qwen2Tokenizer)
    if not (
        _is(getattr(cls, "_tokenize", None), *(getattr(c, "_tokenize", None) for c in classes))
        and _is(getattr(cls, "tokenize", None), PretrainedTokenizer.tokenize)
        and _is(getattr(cls, "prepare_for_tokenization", None), *(c.prepare_for_tokenization for c in classes))
        and _is(getattr(cls, "_convert_token_to_id", None), *(c._convert_token_to_id for c in classes))
        and _is(getattr(cls, "convert_tokens_to_ids", None), PretrainedTokenizer.convert_tokens_to_ids)
        and not getattr(tok, "do_lower_case", False)
    ):
        return None
    byte_chars = set(tok.byte_encoder.values())
    if not byte_chars <= set(tok.encoder):
        return None  # a byte without its own id: the class maps it to unk, a BPE model would drop it
    nfc = _is(getattr(cls, "prepare_for_tokenization", None), Qwen2Tokenizer.prepare_for_tokenization)
    return {
        "family": "bpe",
        "nfc": nfc,
        "prefix_space": (not nfc) and bool(getattr(tok, "add_prefix_space", False)),
        "added_tokens": _no_split_rules(tok),
    }


def _hf_fast_fields(tok) -> dict | None:
    """PretrainedTokenizerFast: tokenize = the Rust tokenizer's encode(text, add_special_tokens=False); its
    tokenizer.json is taken by complete_spec."""
    from paddlenlp.transformers.tokenizer_utils_fast import PretrainedTokenizerFast

    cls = type(tok)
    if not (
        isinstance(tok, PretrainedTokenizerFast)
        and _is(getattr(cls, "tokenize", None), PretrainedTokenizerFast.tokenize)
        and _is(getattr(cls, "convert_tokens_to_ids", None), PretrainedTokenizerFast.convert_tokens_to_ids)
        and not getattr(tok, "split_special_tokens", False)
    ):
        return None
    return {"family": "bpe"}


def complete_spec(tok, spec: EncoderSpec) -> EncoderSpec:
    """The spec with what only a fast encoder needs and takes time to make (a byte-level BPE's tokenizer.json or
    the vocabulary and merges to make it from). Deferred out of encoder_spec so that a run the class finishes
    alone never pays for it."""
    if spec.family == "tiktoken":
        # the rank file must be what the class loaded (it does not keep the path): as many ranks (re-reading all of
        # them costs half a second; a different file of the same length shows in the self-check's probe). Counted
        # here, not in encoder_spec: 0.1-0.2 s that a run the class finishes alone need not wait for
        path = Path(spec.model_path or "")
        if sum(1 for line in path.read_bytes().splitlines() if line) != len(tok.tokenizer._mergeable_ranks):
            raise ValueError(f"{path} holds another number of ranks than {spec.tokenizer_class} loaded")
        return spec
    if spec.family != "bpe" or spec.tokenizer_json is not None or spec.bpe_model is not None:
        return spec
    from paddlenlp.transformers.tokenizer_utils_fast import PretrainedTokenizerFast

    if isinstance(tok, PretrainedTokenizerFast):
        return replace(spec, tokenizer_json=tok._tokenizer.to_str())
    # the class's own vocabulary and merges in rank order; the worker makes the tokenizer.json (encode.bpe_json):
    # here it would hold the GIL ~0.3 s on a 151k vocabulary, stalling the class's encoding in the main thread
    ranks = tok.bpe_ranks
    return replace(spec, bpe_model=(dict(tok.encoder), sorted(ranks, key=ranks.__getitem__), tok.pat.pattern))


def native_backends(family: str) -> tuple[str, ...]:
    """The native encoders for a family, fastest first, among those installed."""
    import importlib.util

    modules = {"spwords": "sentencepiece"}
    wanted = {
        "sentencepiece": ("spwords", "sentencepiece"),
        "tiktoken": ("fastokens", "tiktoken"),
        "bpe": ("fastokens", "tokenizers"),
    }.get(family, ())
    return tuple(b for b in wanted if importlib.util.find_spec(modules.get(b, b)) is not None)


def encoder_spec(tok, tokenizer_dir: Path, text_key: str, append_eos: bool, backend: str | None = None) -> EncoderSpec:
    """How workers encode for `tok`: the fastest native backend that can restate its class (or `backend`),
    else the slow path ("paddlenlp": the class itself in every worker)."""
    fields = (
        _tiktoken_fields(tok, tokenizer_dir)
        or _sentencepiece_fields(tok)
        or _byte_bpe_fields(tok)
        or _hf_fast_fields(tok)
        or {"family": "other"}
    )
    available = native_backends(fields["family"])
    if backend is None:
        chosen = available[0] if available else "paddlenlp"
    elif backend == "paddlenlp" or backend in available:
        chosen = backend
    else:
        raise DataError(
            f"encoder {backend!r} cannot encode for {type(tok).__name__}",
            f"use one of: {', '.join((*available, 'paddlenlp'))}",
        )
    literals = {*tok.all_special_tokens, *getattr(tok, "added_tokens_encoder", {})}
    return EncoderSpec(
        tokenizer_dir=str(tokenizer_dir),
        tokenizer_class=type(tok).__name__,
        backend=chosen,
        eos_id=tok.eos_token_id,
        append_eos=append_eos,
        text_key=text_key,
        dtype=token_dtype(tok.vocab_size).name,
        probe_literals=tuple(sorted(s for s in literals if isinstance(s, str) and s)),
        **fields,
    )
