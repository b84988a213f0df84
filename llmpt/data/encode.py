"""The encoding worker: a chunk of raw documents -> token ids, as PaddleNLP's create_pretraining_data.py would
produce them with the tokenizer's own class, but through a native batch encoder (sentencepiece, fastokens,
tiktoken or Hugging Face tokenizers) instead of the class's Python machinery per document.

What each PaddleNLP class does before its encoder runs is re-stated here from an EncoderSpec that
llmpt/data/tokenizer.py reads off the loaded class: Unicode NFC (Qwen2Tokenizer, QWenTokenizer, Llama3Tokenizer),
a prefix space (GPT/Bloom with add_prefix_space), and the added-token split of PretrainedTokenizer.tokenize
(leftmost-longest match, whitespace stripped beside each token as its AddedToken says) for the classes that go
through it. Imports neither paddle nor paddlenlp unless the spec's backend is "paddlenlp" (the slow path)."""

from __future__ import annotations

import json
import os
import random
import re
import sys
import unicodedata
from dataclasses import dataclass, field

import numpy as np

from llmpt.data.inputs import Chunk

MAX_BAD_REPORTED = 20
MAX_REPEATED_LEN = 100  # create_pretraining_data.py's --max_repeated_len default
# create_pretraining_data.py's pattern, flags included: without re.S '.' skips '\n', so runs of newlines stay
_REPEATS = re.compile(r"(.)\1{" + str(MAX_REPEATED_LEN) + ",}")
SAMPLE_MAX_CHARS = 64 << 10  # a document the parent re-tokenizes with PaddleNLP for the self-check
BACKENDS = ("spwords", "sentencepiece", "fastokens", "tiktoken", "tokenizers", "paddlenlp")


@dataclass(frozen=True)
class AddedTokenRule:
    """One entry of the tokenizer's no-split (added/special) tokens and how PaddleNLP's tokenize treats it."""

    content: str
    id: int
    lstrip: bool  # strip whitespace at the end of the text before it
    rstrip: bool  # strip whitespace at the start of the text after it


@dataclass(frozen=True)
class EncoderSpec:
    """What a worker needs to rebuild the encoder (picklable; no paddle objects)."""

    tokenizer_dir: str
    tokenizer_class: str
    family: str  # sentencepiece | tiktoken | bpe (byte-level BPE) | other
    backend: str  # one of BACKENDS; "paddlenlp" is the slow path (the class itself, in the worker)
    eos_id: int | None
    append_eos: bool
    text_key: str
    dtype: str
    nfc: bool = False  # unicodedata.normalize("NFC") of the whole text first
    prefix_space: bool = False  # " " + text first (GPT/Bloom add_prefix_space)
    added_tokens: tuple[AddedTokenRule, ...] = ()  # split out in Python first (empty: the backend matches them)
    model_path: str | None = None  # sentencepiece .model, or the tiktoken rank file
    pattern: str | None = None  # tiktoken's pre-tokenizer regex
    special_tokens: tuple[tuple[str, int], ...] = ()  # tiktoken: special tokens allowed in text
    tokenizer_json: str | None = None  # a tokenizer.json document (fastokens / tokenizers)
    # or what bpe_json makes one from: (vocabulary, merges in rank order, split regex); not part of the spec's
    # identity (a 151k vocabulary would be hashed at every look-up), it follows from the tokenizer's files
    bpe_model: tuple[dict[str, int], list[tuple[str, str]], str] | None = field(default=None, compare=False, repr=False)
    probe_literals: tuple[str, ...] = ()  # the tokenizer's special/added tokens: documents holding one are sampled

    def describe(self) -> str:
        return f"{self.tokenizer_class} ({self.family}) via {self.backend}"


@dataclass
class ChunkResult:
    tokens: bytes
    sizes: np.ndarray
    documents: int = 0
    empty: int = 0
    bad: int = 0
    bad_lines: list[tuple[str, int, str]] = field(default_factory=list)
    bytes_in: int = 0
    file: str = ""
    # (raw document text, its ids without EOS) for the parent's self-check against PaddleNLP's tokenizer
    samples: list[tuple[str, list[int]]] = field(default_factory=list)
    paddle_loaded: bool = False  # whether this worker process has imported paddle (it must not, on a fast path)
    peak_rss_kb: int = 0  # the encoding process's peak resident memory so far
    max_id: int = -1  # the largest id written (EOS included); -1: none


def _native_threads_to_one() -> None:
    # one worker process = one core, as in PaddleNLP's pool: no encoder may start its own thread pool
    os.environ.setdefault("RAYON_NUM_THREADS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class _SentencePiece:
    def __init__(self, spec: EncoderSpec) -> None:
        import sentencepiece as spm

        self._sp = spm.SentencePieceProcessor(model_file=spec.model_path)

    def encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        return _flatten(self._sp.encode(texts, num_threads=1))


class _SentencePieceWords:
    """sentencepiece, once per distinct word. The model's normalizer runs on the whole text (sp.normalize); the
    normalized text is cut before every U+2581 and each word is encoded by a copy of the model whose normalizer
    does nothing. The same ids as sp.encode when no piece holds U+2581 past its first character: then no merge
    (BPE) or segment (unigram) can span two words, so the model segments each word alone. A bounded cache of
    word -> ids turns the corpus's repeated words into dictionary look-ups."""

    CACHE_ENTRIES = 1 << 18

    def __init__(self, spec: EncoderSpec) -> None:
        import sentencepiece as spm
        from sentencepiece import sentencepiece_model_pb2 as pb

        self._sp = spm.SentencePieceProcessor(model_file=spec.model_path)
        proto = pb.ModelProto()
        proto.ParseFromString(self._sp.serialized_model_proto())
        if proto.trainer_spec.treat_whitespace_as_suffix or any("\u2581" in p.piece[1:] for p in proto.pieces):
            raise ValueError(f"{spec.model_path}: a piece spans U+2581 word boundaries; words are not independent")
        norm = proto.normalizer_spec
        norm.name = "identity"
        norm.precompiled_charsmap = b""
        norm.add_dummy_prefix = norm.remove_extra_whitespaces = norm.escape_whitespaces = False
        self._words = spm.SentencePieceProcessor(model_proto=proto.SerializeToString())
        self._cache: dict[str, list[int]] = {}

    def encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        import itertools

        # words are keyed without their leading U+2581 (no string building per word); a text's first part, before
        # any U+2581, has none and is encoded as it is
        splits = [self._sp.normalize(t).split("\u2581") for t in texts]
        cache = self._cache
        if len(cache) > self.CACHE_ENTRIES:
            cache.clear()  # bounded memory: the frequent words come back at once
        missing: set[str] = set()
        for parts in splits:
            missing.update(itertools.islice(parts, 1, None))
        missing.difference_update(cache)
        if missing:
            words = list(missing)
            cache.update(zip(words, self._words.encode(["\u2581" + w for w in words], num_threads=1), strict=True))
        lengths = np.zeros(len(texts), dtype=np.int64)
        flat: list[int] = []
        for i, parts in enumerate(splits):
            n = len(flat)
            if parts[0]:
                flat.extend(self._words.encode(parts[0]))
            flat.extend(itertools.chain.from_iterable(map(cache.__getitem__, itertools.islice(parts, 1, None))))
            lengths[i] = len(flat) - n
        return np.asarray(flat, dtype=np.int64), lengths


def bpe_json(vocab: dict[str, int], merges: list[tuple[str, str]], pattern: str) -> str:
    """The tokenizer.json of a byte-level BPE class (GPT/Bloom/Qwen2Tokenizer): its vocabulary, its merges in
    rank order, its split regex, then the byte-to-character map. ValueError when a merge's parts are not in the
    vocabulary (the class would map them to unk; a BPE model cannot)."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers

    try:
        bpe = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    except Exception as e:  # noqa: BLE001 - tokenizers raises its own exception type here
        raise ValueError(f"the merges do not fit the vocabulary ({e})") from None
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    return bpe.to_str()


def _tokenizer_json(spec: EncoderSpec) -> str:
    if spec.tokenizer_json is not None:
        return spec.tokenizer_json
    if spec.bpe_model is None:
        raise ValueError(f"{spec.tokenizer_class}: no tokenizer.json to build the {spec.backend} encoder from")
    return bpe_json(*spec.bpe_model)


class _Fastokens:
    def __init__(self, spec: EncoderSpec) -> None:
        import fastokens

        if spec.family == "bpe":
            self._tok = fastokens.Tokenizer.from_json_str(_tokenizer_json(spec))
        else:
            self._tok = fastokens.Tokenizer.from_tiktoken(
                spec.model_path, pattern=spec.pattern, special_tokens=dict(spec.special_tokens)
            )
        self._tok.no_truncation()
        self._tok.no_padding()

    def encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        ids, offsets = self._tok.encode_batch_flat(texts, add_special_tokens=False)
        return np.frombuffer(ids, dtype=np.uint32), np.diff(np.frombuffer(offsets, dtype=np.uint64)).astype(np.int64)


class _Tiktoken:
    def __init__(self, spec: EncoderSpec) -> None:
        import tiktoken

        specials = dict(spec.special_tokens)
        self._enc = tiktoken.Encoding(
            "llmpt", pat_str=spec.pattern, mergeable_ranks=load_tiktoken_ranks(spec.model_path), special_tokens=specials
        )
        self._allowed = set(specials)

    def encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        # the classes' tokenize: encode(text, allowed_special="all", disallowed_special=())
        return _flatten([self._enc.encode(t, allowed_special=self._allowed, disallowed_special=()) for t in texts])


class _Tokenizers:
    def __init__(self, spec: EncoderSpec) -> None:
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_str(_tokenizer_json(spec))
        self._tok.no_truncation()
        self._tok.no_padding()

    def encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        return _flatten([e.ids for e in self._tok.encode_batch(texts, add_special_tokens=False)])


class _PaddleNLP:
    """The slow path: the tokenizer's own class, one document at a time (loads paddlenlp in this process)."""

    def __init__(self, spec: EncoderSpec, tokenizer=None) -> None:
        if tokenizer is None:
            from paddlenlp.transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(spec.tokenizer_dir)
        self._tok = tokenizer

    def encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        return _flatten([self._tok.convert_tokens_to_ids(self._tok.tokenize(t)) for t in texts])


def load_tiktoken_ranks(path: str) -> dict[bytes, int]:
    """A tiktoken rank file (base64 token, space, rank per line), read as the PaddleNLP classes read it."""
    import base64

    with open(path, "rb") as f:
        return {
            base64.b64decode(tok): int(rank) for tok, rank in (line.split() for line in f.read().splitlines() if line)
        }


def _flatten(seqs: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
    flat = np.fromiter((i for s in seqs for i in s), dtype=np.int64, count=int(lengths.sum()))
    return flat, lengths


_BACKEND_CLASSES = {
    "spwords": _SentencePieceWords,
    "sentencepiece": _SentencePiece,
    "fastokens": _Fastokens,
    "tiktoken": _Tiktoken,
    "tokenizers": _Tokenizers,
    "paddlenlp": _PaddleNLP,
}


def _added_token_regex(rules: tuple[AddedTokenRule, ...]) -> re.Pattern | None:
    if not rules:
        return None
    # longest first: at a position the longest token wins, as in PaddleNLP's Trie.split
    alternatives = sorted({r.content for r in rules}, key=lambda s: (-len(s), s))
    return re.compile("|".join(re.escape(a) for a in alternatives))


class Encoder:
    """Texts (cleaned documents) -> ids exactly as `tokenizer.convert_tokens_to_ids(tokenizer.tokenize(text))`."""

    def __init__(self, spec: EncoderSpec, tokenizer=None) -> None:
        self.spec = spec
        if spec.backend not in _BACKEND_CLASSES:
            raise ValueError(f"unknown encoder backend {spec.backend!r}")
        _native_threads_to_one()
        if spec.backend == "paddlenlp":
            self._backend = _PaddleNLP(spec, tokenizer)
        else:
            self._backend = _BACKEND_CLASSES[spec.backend](spec)
        self._split = _added_token_regex(spec.added_tokens) if spec.backend != "paddlenlp" else None
        self._rules = {r.content: r for r in spec.added_tokens}
        literals = {*spec.probe_literals, *(r.content for r in spec.added_tokens), *dict(spec.special_tokens)}
        self.probe = re.compile("|".join(re.escape(s) for s in sorted(literals))) if literals else None

    def _prepare(self, text: str) -> str:
        if self.spec.nfc:
            text = unicodedata.normalize("NFC", text)
        if self.spec.prefix_space:
            text = " " + text
        return text

    def _pieces(self, text: str) -> list[str | int]:
        """PretrainedTokenizer.tokenize's split: text pieces and added-token ids, whitespace stripped beside
        each token per its rule, empty pieces dropped."""
        parts: list[str] = []
        pos = 0
        for m in self._split.finditer(text):  # type: ignore[union-attr]
            if m.start() > pos:
                parts.append(text[pos : m.start()])
            parts.append(m.group())
            pos = m.end()
        if pos < len(text):
            parts.append(text[pos:])
        is_token = [p in self._rules for p in parts]
        for i, p in enumerate(parts):
            if not is_token[i]:
                continue
            rule = self._rules[p]
            if rule.rstrip and i + 1 < len(parts) and parts[i + 1]:
                parts[i + 1] = parts[i + 1].lstrip()
            if rule.lstrip and i > 0 and parts[i - 1]:
                parts[i - 1] = parts[i - 1].rstrip()
        return [self._rules[p].id if tok else p for p, tok in zip(parts, is_token, strict=True) if p]

    def encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(all ids back to back, ids per text)."""
        texts = [self._prepare(t) for t in texts]
        if self._split is None or not any(self._split.search(t) for t in texts):
            # the common case: every text is one piece
            nonempty = [t for t in texts if t]
            if len(nonempty) == len(texts):
                return self._backend.encode(texts)
            flat, lens = self._backend.encode(nonempty)
            lengths = np.zeros(len(texts), dtype=np.int64)
            lengths[[i for i, t in enumerate(texts) if t]] = lens
            return flat, lengths
        per_text = [self._pieces(t) if self._split.search(t) else ([t] if t else []) for t in texts]
        strings = [p for pieces in per_text for p in pieces if isinstance(p, str)]
        flat, lens = self._backend.encode(strings)
        starts = np.concatenate(([0], np.cumsum(lens)))
        out: list[np.ndarray] = []
        lengths = np.zeros(len(texts), dtype=np.int64)
        k = 0
        for i, pieces in enumerate(per_text):
            for p in pieces:
                if isinstance(p, str):
                    seg = flat[starts[k] : starts[k + 1]]
                    k += 1
                else:
                    seg = np.asarray([p], dtype=np.int64)
                out.append(seg.astype(np.int64, copy=False))
                lengths[i] += len(seg)
        return (np.concatenate(out) if out else np.zeros(0, np.int64)), lengths


def _longest_run(text: str) -> int:
    """Length of the longest run of one repeated character (vectorised; the regex costs ~10x more)."""
    codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    change = np.flatnonzero(codes[1:] != codes[:-1])
    edges = np.concatenate(([-1], change, [len(codes) - 1]))
    return int(np.diff(edges).max())


def _clean(text: str) -> str:
    # create_pretraining_data.py collapses runs of > 100 repeated characters (not newlines), then strips
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


def _pick_samples(chunk: Chunk, docs: list[str], probe: re.Pattern | None) -> list[int]:
    """Up to two documents of the chunk for the self-check: one drawn at random (seeded by the chunk, so a
    run is reproducible) and the first that holds an added-token literal, a long run or a non-NFC character."""
    small = [i for i, d in enumerate(docs) if len(d) <= SAMPLE_MAX_CHARS]
    if not small:
        return []
    picked = [random.Random(f"{chunk.file}:{chunk.first_line}").choice(small)]
    for i in small:
        d = docs[i]
        if (
            (probe is not None and probe.search(d))
            or "\r" in d
            or not unicodedata.is_normalized("NFC", d)
            or (len(d) > MAX_REPEATED_LEN and _longest_run(d) > MAX_REPEATED_LEN)
        ):
            if i not in picked:
                picked.append(i)
            break
    return picked


_ENCODERS: dict[str, Encoder] = {}


def warm_worker() -> None:
    """A pool worker's start: the imports every backend needs, done while the parent still loads PaddleNLP."""
    _native_threads_to_one()
    import importlib.util

    for name in ("fastokens", "sentencepiece", "tiktoken"):
        if importlib.util.find_spec(name) is not None:
            __import__(name)


def _encoder_for(spec_path: str) -> Encoder:
    """The encoder for the spec pickled at `spec_path`, built once per worker process."""
    enc = _ENCODERS.get(spec_path)
    if enc is None:
        import pickle

        with open(spec_path, "rb") as f:
            enc = _ENCODERS[spec_path] = Encoder(pickle.load(f))
    return enc


def warm_task(spec_path: str) -> None:
    """Build the encoder ahead of the first chunk; linger a moment so that the next warm task goes to another
    worker."""
    import time

    _encoder_for(spec_path)
    time.sleep(0.2)


def encode_texts_task(spec_path: str, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The self-check's probe set, encoded in a worker while the parent computes PaddleNLP's ids."""
    return _encoder_for(spec_path).encode(texts)


def encode_task(spec_path: str, chunk: Chunk) -> ChunkResult:
    """A pool task: one chunk, with the encoder of the spec pickled at `spec_path`."""
    return encode_chunk(chunk, _encoder_for(spec_path))


def encode_chunk(chunk: Chunk, enc: Encoder, sample: bool = True) -> ChunkResult:
    """Token ids of every good document in `chunk`, one sequence per document (EOS appended if asked)."""
    spec = enc.spec
    result = ChunkResult(tokens=b"", sizes=np.zeros(0, np.int32), bytes_in=len(chunk.data), file=chunk.file)
    raw = _documents(chunk, spec.text_key, result)
    flat, lengths = enc.encode([_clean(t) for t in raw])
    if sample:
        starts = np.concatenate(([0], np.cumsum(lengths)))
        for i in _pick_samples(chunk, raw, enc.probe):
            result.samples.append((raw[i], flat[starts[i] : starts[i + 1]].tolist()))
    keep = lengths > 0  # PaddleNLP drops documents with no tokens
    result.empty = int((~keep).sum())
    sizes = lengths[keep]
    if spec.append_eos and spec.eos_id is not None:
        ends = np.cumsum(lengths)[keep]
        flat = np.insert(flat.astype(np.int64, copy=False), ends, spec.eos_id)
        sizes = sizes + 1
    dtype = np.dtype(spec.dtype)
    result.max_id = int(flat.max()) if len(flat) else -1
    if dtype == np.uint16 and result.max_id > np.iinfo(np.uint16).max:
        raise OverflowError(f"token id {result.max_id} does not fit {dtype.name}")
    result.documents = len(sizes)
    result.tokens = flat.astype(dtype).tobytes()
    result.sizes = sizes.astype(np.int32)
    result.paddle_loaded = "paddle" in sys.modules
    import resource

    result.peak_rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return result
