"""The encoding worker: a chunk of raw documents -> token ids, as PaddleNLP's create_pretraining_data.py
would produce them, but with one batched sentencepiece call per chunk instead of the tokenizer's Python
machinery per document. Imports neither paddle nor paddlenlp unless a document needs the slow path."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import numpy as np

from llmpt.data.inputs import Chunk

MAX_BAD_REPORTED = 20
MAX_REPEATED_LEN = 100  # create_pretraining_data.py's --max_repeated_len default
_REPEATS = re.compile(r"(.)\1{" + str(MAX_REPEATED_LEN) + ",}", re.S)


@dataclass(frozen=True)
class EncoderSpec:
    """What a worker needs to rebuild the encoder (picklable)."""

    tokenizer_dir: str
    sp_model_path: str | None  # set when the tokenizer is plain sentencepiece underneath (fast path)
    special_tokens: tuple[str, ...]  # texts containing these go through PaddleNLP's tokenizer, which splits on them
    eos_id: int | None
    append_eos: bool
    text_key: str
    dtype: str


@dataclass
class ChunkResult:
    tokens: bytes
    sizes: np.ndarray
    documents: int = 0
    empty: int = 0
    bad: int = 0
    bad_lines: list[tuple[str, int, str]] = field(default_factory=list)
    bytes_in: int = 0


class Encoder:
    def __init__(self, spec: EncoderSpec) -> None:
        self.spec = spec
        self._sp = None
        self._slow = None
        if spec.sp_model_path:
            import sentencepiece as spm

            self._sp = spm.SentencePieceProcessor(model_file=spec.sp_model_path)

    def slow_ids(self, text: str) -> list[int]:
        """PaddleNLP's own path: tokenizer.tokenize + convert_tokens_to_ids."""
        if self._slow is None:
            from paddlenlp.transformers import AutoTokenizer

            self._slow = AutoTokenizer.from_pretrained(self.spec.tokenizer_dir)
        return self._slow.convert_tokens_to_ids(self._slow.tokenize(text))

    def encode(self, texts: list[str]) -> list[list[int]]:
        if self._sp is None:
            return [self.slow_ids(t) for t in texts]
        special = self.spec.special_tokens
        fast_idx = [i for i, t in enumerate(texts) if not any(s in t for s in special)]
        out: list[list[int]] = [[] for _ in texts]
        # num_threads=1: one worker process is one core, as in PaddleNLP's pool
        for i, ids in zip(fast_idx, self._sp.encode([texts[i] for i in fast_idx], num_threads=1), strict=True):
            out[i] = ids
        for i in set(range(len(texts))) - set(fast_idx):
            out[i] = self.slow_ids(texts[i])
        return out


def _longest_run(text: str) -> int:
    """Length of the longest run of one repeated character (vectorised; the regex costs ~10x more)."""
    codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    change = np.flatnonzero(codes[1:] != codes[:-1])
    edges = np.concatenate(([-1], change, [len(codes) - 1]))
    return int(np.diff(edges).max())


def _clean(text: str) -> str:
    # create_pretraining_data.py collapses runs of > 100 repeated characters, then strips the document
    if len(text) > MAX_REPEATED_LEN and _longest_run(text) > MAX_REPEATED_LEN:
        text = _REPEATS.sub(r"\1", text)
    return text.strip()


def _documents(chunk: Chunk, text_key: str, result: ChunkResult) -> list[str]:
    """The chunk's document texts; bad lines are counted and reported, not raised."""
    docs: list[str] = []

    def bad(line_no: int, why: str) -> None:
        result.bad += 1
        if len(result.bad_lines) < MAX_BAD_REPORTED:
            result.bad_lines.append((chunk.file, line_no, why))

    lines = chunk.data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if chunk.fmt == "jsonl":
        for k, raw in enumerate(lines):
            line_no = chunk.first_line + k
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                bad(line_no, "invalid UTF-8")
                continue
            except json.JSONDecodeError as e:
                bad(line_no, f"invalid JSON ({e.msg})")
                continue
            if not isinstance(obj, dict) or text_key not in obj:
                bad(line_no, f"missing key {text_key!r}")
                continue
            text = obj[text_key]
            if not isinstance(text, str):
                bad(line_no, f"{text_key!r} is not a string")
                continue
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                bad(line_no, "invalid UTF-8 (a lone surrogate escape such as \\ud800)")
                continue
            docs.append(text)
        return docs
    # plain text: documents are separated by blank lines
    current: list[str] = []
    broken = False
    for k, raw in enumerate([*lines, b""]):
        line_no = chunk.first_line + k
        if raw.strip():
            try:
                current.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                if not broken:
                    bad(line_no, "invalid UTF-8")
                broken = True
            continue
        if current and not broken:
            docs.append("\n".join(s.rstrip("\r") for s in current))
        current, broken = [], False
    return docs


_ENCODER: Encoder | None = None


def init_worker(spec: EncoderSpec) -> None:
    global _ENCODER
    _ENCODER = Encoder(spec)


def encode_chunk(chunk: Chunk, encoder: Encoder | None = None) -> ChunkResult:
    """Token ids of every good document in `chunk`, one sequence per document (EOS appended if asked)."""
    enc = encoder or _ENCODER
    assert enc is not None, "init_worker was not called"
    spec = enc.spec
    result = ChunkResult(tokens=b"", sizes=np.zeros(0, np.int32), bytes_in=len(chunk.data))
    texts = [_clean(t) for t in _documents(chunk, spec.text_key, result)]
    seqs = enc.encode(texts)
    lengths = []
    flat: list[int] = []
    for ids in seqs:
        if not ids:
            result.empty += 1  # PaddleNLP drops documents with no tokens
            continue
        if spec.append_eos and spec.eos_id is not None:
            ids = [*ids, spec.eos_id]
        flat.extend(ids)
        lengths.append(len(ids))
    result.documents = len(lengths)
    result.tokens = np.asarray(flat, dtype=spec.dtype).tobytes()
    result.sizes = np.asarray(lengths, dtype=np.int32)
    return result
