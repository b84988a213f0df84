"""prepare-data: inputs -> PREFIX.bin + PREFIX.idx + PREFIX.manifest.json, written atomically."""

from __future__ import annotations

import collections
import contextlib
import hashlib
import itertools
import json
import multiprocessing as mp
import os
import re
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from llmpt import __version__
from llmpt.data.encode import (
    MAX_BAD_REPORTED,
    ChunkResult,
    Encoder,
    EncoderSpec,
    encode_chunk,
    encode_task,
    encode_texts_task,
    warm_task,
    warm_worker,
)
from llmpt.data.inputs import CHUNK_BYTES, DataError, InputFile, discover_inputs, iter_chunks, split_chunk
from llmpt.data.mmap import IndexFormatError, index_bytes, read_index, write_index
from llmpt.data.tokenizer import SHIPPED_CORPUS, encoder_spec, load_tokenizer, resolve_tokenizer_dir
from llmpt.errors import LlmptWarning
from llmpt.fsutil import cache_dir, check_writable, sha256_file

MANIFEST_FORMAT = "llmpt.data/1"
ProgressFn = Callable[[int, int, int], None]  # (documents, tokens, input bytes) so far


@dataclass
class PrepareResult:
    documents: int
    tokens: int
    skipped: int
    empty: int
    output_prefix: str
    tokenizer: str
    seconds: float
    input_bytes: int
    bin_bytes: int
    dtype: str
    bad_lines: list[dict] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)
    encoder: dict = field(default_factory=dict)  # family, backend and what the self-check compared

    @property
    def tokens_per_sec(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "tokens_per_sec": round(self.tokens_per_sec, 1)}


def output_paths(prefix: str | Path) -> dict[str, Path]:
    return {k: Path(f"{prefix}.{k}") for k in ("bin", "idx")} | {"manifest": Path(f"{prefix}.manifest.json")}


def _check_output(prefix: str, force: bool) -> None:
    paths = output_paths(prefix)
    existing = [str(p) for k, p in paths.items() if k != "manifest" and p.exists()]
    if existing and not force:
        raise DataError(f"output {existing[0]} already exists", "pass --force to overwrite, or choose --output")
    parent = paths["bin"].parent
    try:
        check_writable(parent)  # nothing created yet: a later refusal (no documents, bad tokenizer) leaves no trace
    except OSError as e:
        raise DataError(f"output {prefix}: cannot write to {parent} ({e.strerror or e})") from None


class _AtomicOutputs:
    """Temporary files beside the final paths; renamed into place only by finish(), removed on any error."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.final = output_paths(prefix)
        self.tmp = {k: p.with_name(f"{p.name}.tmp-{os.getpid()}") for k, p in self.final.items()}
        # the documents' sizes, streamed to disk during the run (the .idx is written from them at the end)
        self.tmp["sizes"] = self.final["bin"].with_name(f"{self.final['bin'].name}.sizes.tmp-{os.getpid()}")

    def __enter__(self) -> _AtomicOutputs:
        # the output's directories are made here, when writing starts, and removed again if nothing is finished
        self.made: list[Path] = []
        parent = self.final["bin"].parent
        while not parent.exists():
            self.made.append(parent)
            parent = parent.parent
        try:
            for d in reversed(self.made):
                d.mkdir()
        except OSError as e:
            self._remove_made()
            raise DataError(f"output {self.prefix}: cannot create {e.filename} ({e.strerror or e})") from None
        return self

    def _remove_made(self) -> None:
        for d in self.made:
            with contextlib.suppress(OSError):
                d.rmdir()

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            return False
        for p in self.tmp.values():
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        self._remove_made()
        if issubclass(exc_type, OSError):
            why = getattr(exc, "strerror", None) or exc
            raise DataError(f"output {self.prefix}: write failed ({why}); nothing was left at the final path") from None
        return False

    def finish(self, manifest: dict, bin_sha256: str) -> dict:
        """Write the manifest (with the files' sizes and checksums) and rename all three into place."""
        manifest = {
            "format": MANIFEST_FORMAT,
            "llmpt_version": __version__,
            **manifest,
            "bin": {"bytes": self.tmp["bin"].stat().st_size, "sha256": bin_sha256},
            "idx": {"bytes": self.tmp["idx"].stat().st_size, "sha256": sha256_file(self.tmp["idx"])},
        }
        self.tmp["manifest"].write_text(json.dumps(manifest, indent=1) + "\n")
        # manifest last: its presence says the pair is complete
        for k in ("bin", "idx", "manifest"):
            os.replace(self.tmp[k], self.final[k])
        with contextlib.suppress(FileNotFoundError):
            self.tmp["sizes"].unlink()
        return manifest


_TMP_NAME = re.compile(r"\.tmp-(\d+)$")


def _pid_is_llmpt(pid: int) -> bool:
    """A live process that may be another prepare-data (a reused pid of something else is not)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"llmpt" in cmdline or b"python" in cmdline


def remove_stale_temporaries(prefix: str) -> list[Path]:
    """Delete the temporary files a killed run left beside PREFIX (PREFIX.bin.tmp-PID, …); refuse while the
    process that owns them is still running. The paths removed."""
    final = output_paths(prefix)["bin"]
    parent, stem = final.parent, Path(prefix).name
    if not parent.is_dir():
        return []
    removed = []
    for p in sorted(parent.glob(f"{glob_escape(stem)}.*.tmp-*")):
        m = _TMP_NAME.search(p.name)
        if not m or not p.name.startswith(stem + "."):
            continue
        pid = int(m.group(1))
        if pid != os.getpid() and _pid_is_llmpt(pid):
            raise DataError(
                f"output {prefix}: another prepare-data (pid {pid}) is writing it ({p.name})",
                "wait for it to finish, or choose --output",
            )
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            removed.append(p)
    return removed


def glob_escape(name: str) -> str:
    return re.sub(r"([*?[])", r"[\1]", name)


# the files a tokenizer class reads besides its resource files (a model directory also holds weights: not hashed)
_TOKENIZER_CONFIG_FILES = (
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.json",
    "chat_template.json",
)


def tokenizer_fingerprint(tok, tokenizer_dir: Path, name: str) -> dict:
    """The manifest's record of the tokenizer: what `train` compares to know the data and a checkpoint agree.
    `sha256` hashes the names and hashes of its files, so that a copy of the directory elsewhere matches."""
    names = {*getattr(type(tok), "resource_files_names", {}).values(), *_TOKENIZER_CONFIG_FILES}
    files = {n: sha256_file(tokenizer_dir / n) for n in sorted(names) if (tokenizer_dir / n).is_file()}
    combined = hashlib.sha256("".join(f"{n}\0{h}\n" for n, h in files.items()).encode()).hexdigest()
    return {
        "name": name,
        "class": type(tok).__name__,
        "dir": str(tokenizer_dir),
        "vocab_size": int(tok.vocab_size),
        "num_ids": int(len(tok)),  # with added tokens: every id the data may hold is below this
        "sha256": combined,
        "files": files,
    }


class _Workers:
    """The fast encoder's processes (spawned: they never import paddle); its spec reaches them as a pickled file
    named in each task. Without `helper` (the fast encoder chosen before the first document), spawned before the
    parent loads PaddleNLP, so that their start overlaps its import; one worker: in-process. With `helper`,
    spawned when the fast path is worth preparing, while the class encodes, or with the run if the input is large
    enough (`prespawn`: worth_prespawning), building a remembered spec's encoder meanwhile (a thread would do for
    one, the native builds release the GIL, but a process can be stopped when the class finishes first: a thread
    still inside a Rust build when the interpreter exits aborts it, rc 134). PaddleNLP's class itself encodes in
    _ClassWorkers."""

    def __init__(
        self, workers: int, helper: bool = False, class_workers: int | None = None, prespawn: bool = False
    ) -> None:
        self.workers = workers
        self.helper = helper
        self.prespawn = prespawn
        # PaddleNLP's class runs in as many processes as the user asked for, whatever the input's size (the
        # pipeline's pool does; `workers` is clamped to the chunks a fast encoder can keep busy)
        self.class_workers = class_workers or workers
        self.pool = None
        self.spec_files: dict[EncoderSpec, str] = {}
        self.encoders: dict[EncoderSpec, Encoder] = {}
        self.remembered: set[EncoderSpec] = set()
        self.closed = False
        self._lock = threading.Lock()

    def __enter__(self) -> _Workers:
        # helper: spawned only once the fast path is worth preparing (a small input the class finishes alone never
        # pays for starting them, nor do they take a core from the parent's PaddleNLP import)
        if self.prespawn or (self.workers > 1 and not self.helper):
            self._start()
        return self

    def _start(self) -> None:
        # spawn: the parent will have paddlenlp (and its threads) loaded; workers need neither
        self.pool = mp.get_context("spawn").Pool(self.workers, initializer=warm_worker)

    def __exit__(self, *exc) -> None:
        with self._lock:
            self.closed = True
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
        for spec, f in self.spec_files.items():
            if spec not in self.remembered:  # a remembered spec's file is the cache's
                with contextlib.suppress(OSError):
                    os.unlink(f)

    def warm(self, spec_path: str) -> None:
        """Every worker builds the encoder pickled at `spec_path` now (a remembered spec: while this process
        imports PaddleNLP). Not fewer: a task cannot be sent to a given worker, so the probe then landed on one
        that had not built it and waited for its build (40 MB, 2 workers: 17.7 MB left to the class; README)."""
        for _ in range(self.workers):
            self.pool.apply_async(warm_task, (spec_path,))

    def adopt(self, spec: EncoderSpec, spec_path: str) -> None:
        """Tasks for `spec` name `spec_path` (already warmed), not a new file."""
        self.remembered.add(spec)
        self.spec_files[spec] = spec_path

    def _in_process(self, spec: EncoderSpec) -> Encoder:
        # the probe's encoder is the run's: built once (a 150k-entry BPE takes seconds)
        if spec not in self.encoders:
            self.encoders[spec] = Encoder(spec)
        return self.encoders[spec]

    def _spec_path(self, spec: EncoderSpec) -> str:
        with self._lock:  # the fast path's thread may get here as the run ends
            if self.pool is None and self.helper and not self.closed:
                self._start()  # the helper, spawned only once the fast path is worth preparing
        if spec not in self.spec_files:
            import pickle
            import tempfile

            fd, path = tempfile.mkstemp(prefix="llmpt-encoder-", suffix=".pickle")
            with os.fdopen(fd, "wb") as f:
                pickle.dump(spec, f)
            self.spec_files[spec] = path
            # every worker builds it now, not at its first chunk; not while the parent encodes with the class
            # (helper): the first task, the probe, builds it in one worker, and the others build at their first
            # chunk, so that one build has a core of its own
            for _ in range(0 if self.helper else self.workers):
                self.pool.apply_async(warm_task, (path,))
        return self.spec_files[spec]

    def encode_later(self, spec: EncoderSpec, texts: list[str]) -> Callable[[], tuple[np.ndarray, np.ndarray]]:
        """Start encoding `texts` (in a worker when there are workers: the caller works meanwhile); the returned
        function waits for the result."""
        if self.pool is None and not self.helper:
            out = self._in_process(spec).encode(texts)
            return lambda: out
        spec_path = self._spec_path(spec)
        if self.pool is None:
            raise RuntimeError("the run ended before the helper process started")
        pending = self.pool.apply_async(encode_texts_task, (spec_path, texts))

        def wait() -> tuple[np.ndarray, np.ndarray]:
            # polled: a fast path still being chosen when the run ends must not wait forever on a closed pool
            while True:
                try:
                    return pending.get(timeout=0.1)
                except mp.TimeoutError:
                    if self.closed:
                        raise RuntimeError("the worker pool closed before the probe was encoded") from None

        return wait

    def results(self, spec: EncoderSpec, chunks: Iterator) -> Iterator[ChunkResult]:
        """Encoded chunks in input order. At most 2 x workers + 1 chunks are in flight, so memory does not grow
        with the corpus (Pool.imap would read the whole input ahead of slow workers)."""
        if spec.backend == "paddlenlp":
            raise ValueError("PaddleNLP's class encodes in _ClassWorkers, not in the fast encoder's workers")
        if self.pool is None:
            enc = self._in_process(spec)
            for c in chunks:
                yield encode_chunk(c, enc)
            return
        spec_path = self._spec_path(spec)
        pending: collections.deque = collections.deque()
        for c in chunks:
            pending.append(self.pool.apply_async(encode_task, (spec_path, c)))
            if len(pending) > 2 * self.workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


GZIP_RATIO = 4  # text compresses ~3-4x with gzip: a gzip'd input's size x this, to size the work ahead


def input_bytes(files: list[InputFile]) -> int:
    """The input's size in raw bytes (gzip'd files estimated at GZIP_RATIO x their size)."""
    return sum(f.path.stat().st_size * (GZIP_RATIO if f.gzipped else 1) for f in files)


# A fast path takes at least ~0.8 s to set up on a 151k vocabulary (the quickest measured: fastokens from Qwen's
# tiktoken ranks, README), and PaddleNLP's fastest class measured encodes 7.8 MB/s on one core (QWenTokenizer, 151k
# ranks: README). An input even that class would need longer for, in every worker, is worth starting the fast
# encoder's workers for with the run, so that their start (~0.2 s of CPU each: python, numpy and the encoders'
# imports) overlaps PaddleNLP's import rather than the set-up; a smaller one most likely never uses them.
QUICKEST_SETUP_S = 0.8
FASTEST_CLASS_BYTES_PER_S = 7.8e6


def worth_prespawning(files: list[InputFile], class_workers: int) -> bool:
    """Whether to start the fast encoder's workers with the run, not when the class has shown that the input
    needs them (see QUICKEST_SETUP_S)."""
    return input_bytes(files) / (FASTEST_CLASS_BYTES_PER_S * class_workers) > QUICKEST_SETUP_S


def effective_workers(files: list[InputFile], workers: int) -> int:
    """No more processes than there are chunks to give them: a small input is encoded in-process rather than
    paying for workers it cannot keep busy."""
    size = input_bytes(files)
    chunks = -(-size // CHUNK_BYTES)
    return 1 if chunks <= 2 else min(workers, chunks)


# Which encoder encodes which part of the input. PaddleNLP's class needs no set-up and is the pipeline itself, so
# its ids need no check; a fast encoder needs a set-up (a 151k-entry vocabulary: 0.8-1.5 s to build, measured in
# the README) and its probe, then runs 6-60x faster. Rather than predict which finishes first, the class encodes
# the input from its start, in slices, in --workers processes forked from this one (_ClassWorkers: the pipeline's
# own pool, less its per-worker tokenizer load); once the class's measured speed says the rest would take longer
# than the fast path's set-up, that set-up starts (a thread of this process drives it, the builds run in spawned
# workers) and the fast encoder takes the rest as soon as it is ready. The run therefore costs about min(class
# alone, fast set-up + fast encoding); the only costs of switching are the slices in flight and the self-check's
# samples of the fast part.
SWITCH_LAG_S = 0.05  # a class slice's target duration: the switch lags readiness by ~this (<= 6% of a set-up)
FIRST_SLICE_BYTES = 16 << 10  # before the class's speed is measured: 2-18 ms at its measured 0.9-7.8 MB/s


def slice_bytes(class_seconds: float, class_bytes: int) -> int:
    """How much input the class encodes before looking again whether the fast encoder is ready: what it does in
    SWITCH_LAG_S at the speed measured on this input so far, within [FIRST_SLICE_BYTES, CHUNK_BYTES]."""
    if class_bytes <= 0 or class_seconds <= 0:
        return FIRST_SLICE_BYTES
    return int(min(max(class_bytes / class_seconds * SWITCH_LAG_S, FIRST_SLICE_BYTES), CHUNK_BYTES))


@dataclass(frozen=True)
class SetupFloor:
    """What the fast path's set-up will take at least, and how that is known: the class's own load time (a fast
    encoder reads the same vocabulary and builds more from it), or what it took on this machine before."""

    seconds: float
    source: str

    @classmethod
    def of(cls, load_seconds: float, known: float | None) -> SetupFloor:
        if known is not None and known > load_seconds:
            return cls(known, "the fast path's set-up for this tokenizer on this machine before")
        return cls(load_seconds, "the class's own load of the vocabulary, a lower bound of a fast encoder's set-up")


_SETUP_CACHE = "encoder-setup.json"  # in cache_dir(): "<tokenizer sha256> <family> <backend>" -> seconds


def known_setup_seconds(key: str) -> float | None:
    """The fast path's set-up time measured by an earlier run with this tokenizer on this machine, if any."""
    with contextlib.suppress(OSError, ValueError, TypeError):
        value = json.loads((cache_dir() / _SETUP_CACHE).read_text()).get(key)
        return float(value) if value is not None else None
    return None


def remember_setup_seconds(key: str, seconds: float, exact: bool) -> None:
    """Keep the set-up time measured by this run (exact: the fast path became ready), or the lower bound it
    showed (it was still being prepared when the input ended): the larger of the old value and this one."""
    path = cache_dir() / _SETUP_CACHE
    seen: dict = {}
    with contextlib.suppress(OSError, ValueError):
        seen = json.loads(path.read_text())
    if not exact and key in seen and float(seen[key]) >= seconds:
        return
    seen[key] = round(seconds, 3)
    with contextlib.suppress(OSError):  # only a cache: a run does not fail for it
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(seen))
        os.replace(tmp, path)


# The fast encoder's spec (what a worker builds it from: EncoderSpec) is only known once PaddleNLP's class is
# loaded, ~3-5 s into a run. A run that used a fast encoder remembers its spec, keyed by the tokenizer directory's
# files (names, sizes, mtimes) and the versions that derive it; the next large run's workers build the encoder from
# it while the parent imports PaddleNLP, and the parent adopts it only if the spec it derives from the loaded class
# is the same and the tokenizer's files hash the same (the fingerprint): else it is built anew, as without it.
_SPEC_CACHE = "encoder-specs"  # in cache_dir(): <key>.pickle (the spec), <key>.json (fingerprint, spec sans model)


def _spec_key(tokenizer_dir: Path) -> str | None:
    import importlib.metadata

    try:
        files = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in tokenizer_dir.iterdir() if p.is_file())
        versions = (__version__, importlib.metadata.version("paddlenlp"))
    except (OSError, importlib.metadata.PackageNotFoundError):
        return None
    return hashlib.sha256(json.dumps([str(tokenizer_dir.resolve()), versions, files]).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class RememberedSpec:
    path: str  # the pickled spec, which the workers build from
    spec: EncoderSpec  # the same, without what the files determine (a byte-level BPE's vocabulary and merges)
    tokenizer_sha256: str


def remembered_spec(tokenizer_dir: Path) -> RememberedSpec | None:
    """The fast encoder's spec an earlier run with these tokenizer files remembered, if any."""
    import pickle

    key = _spec_key(tokenizer_dir)
    if key is None:
        return None
    base = cache_dir() / _SPEC_CACHE / key
    with contextlib.suppress(OSError, ValueError, pickle.UnpicklingError, EOFError, TypeError, AttributeError):
        meta = pickle.loads(base.with_suffix(".meta").read_bytes())
        if base.with_suffix(".pickle").is_file():
            return RememberedSpec(str(base.with_suffix(".pickle")), meta["spec"], meta["tokenizer_sha256"])
    return None


def remember_spec(tokenizer_dir: Path, spec: EncoderSpec, tokenizer_sha256: str) -> None:
    """Keep the spec of the fast encoder this run used, for the next run with the same tokenizer files."""
    import pickle

    key = _spec_key(tokenizer_dir)
    if key is None:
        return
    base = cache_dir() / _SPEC_CACHE / key
    with contextlib.suppress(OSError):  # only a cache: a run does not fail for it
        base.parent.mkdir(parents=True, exist_ok=True)
        meta = {"spec": replace(spec, bpe_model=None), "tokenizer_sha256": tokenizer_sha256}
        for suffix, data in ((".pickle", pickle.dumps(spec)), (".meta", pickle.dumps(meta))):
            tmp = base.with_name(f"{key}{suffix}.tmp-{os.getpid()}")
            tmp.write_bytes(data)
            os.replace(tmp, base.with_suffix(suffix))


@dataclass
class Selection:
    """Which encoder encoded what in a run, and why (the manifest's encoder.selection)."""

    mode: str = "race"  # race: the class until the fast path is ready | forced: --encoder | fast: fast path first
    class_documents: int = 0
    class_bytes: int = 0
    class_seconds: float = 0.0  # the class's encoding time, summed over its processes
    class_workers: int = 1  # the processes the class encoded in
    class_best_bytes_per_s: float = 0.0  # the fastest a slice of the class went (per process)
    fast_backend: str | None = None  # the fast encoder that encoded the rest (None: it encoded nothing)
    fast_spec: EncoderSpec | None = field(default=None, repr=False)  # its spec (remember_spec keeps it)
    remembered: bool = False  # its workers built it from the spec an earlier run remembered, during the import
    fast_documents: int = 0
    fast_bytes: int = 0
    fast_ready_seconds: float | None = None  # when the fast path was chosen and probed (None: not before the end)
    probed: int = 0
    restarted: str | None = None  # why this run started again on the slow path
    floor: SetupFloor = field(default_factory=lambda: SetupFloor(0.0, "none"))
    fast_started_at_bytes: int | None = None  # how much the class had encoded when the fast path was started
    contention: float = 0.0  # at the last decision: the share of the set-up taken from the class (contention())


def selection_record(sel: Selection, tokenizer_class: str) -> dict:
    """The manifest's account of the encoder choice: the counts, and one sentence saying why."""
    mb = sel.class_bytes / 1e6
    took = f"{sel.class_seconds:.2f} s" + (f" of {sel.class_workers} processes" if sel.class_workers > 1 else "")
    if sel.restarted:
        why = f"started again with PaddleNLP's {tokenizer_class}: {sel.restarted}"
    elif sel.mode == "forced":
        why = f"the caller chose the encoder: prepare_data(encoder={sel.fast_backend or 'paddlenlp'!r})"
    elif sel.mode == "race" and sel.fast_started_at_bytes is None and sel.fast_ready_seconds is None:
        why = (
            f"PaddleNLP's {tokenizer_class} encoded the whole input ({mb:.2f} MB in {took}): at "
            f"its measured speed the rest never needed more than {sel.floor.seconds:.2f} s ({sel.floor.source}) "
            f"x {1 + sel.contention:.2f} (what the set-up would take from the class on this machine's load), so no "
            "fast encoder was prepared"
        )
    elif sel.fast_backend is None and sel.fast_ready_seconds is None:
        why = (
            f"PaddleNLP's {tokenizer_class} encoded the whole input ({mb:.2f} MB in {took}) "
            "before a fast encoder was ready"
        )
    elif sel.fast_backend is None:
        why = f"no fast encoder gives PaddleNLP's {tokenizer_class} ids (see the warnings): its class encoded all"
    elif sel.class_bytes:
        why = (
            f"PaddleNLP's {tokenizer_class} encoded the first {mb:.2f} MB ({took}) while "
            f"the {sel.fast_backend} encoder was prepared ({sel.fast_ready_seconds:.2f} s), {sel.fast_backend} the rest"
        )
    else:
        why = f"the {sel.fast_backend} encoder, prepared before the first document"
    ready = sel.fast_ready_seconds
    return {
        "mode": sel.mode,
        "why": why,
        "class_documents": sel.class_documents,
        "class_bytes": sel.class_bytes,
        "class_seconds": round(sel.class_seconds, 3),
        "class_workers": sel.class_workers,
        "class_best_mb_per_s": round(sel.class_best_bytes_per_s / 1e6, 2),
        "fast_documents": sel.fast_documents,
        "fast_bytes": sel.fast_bytes,
        "fast_ready_seconds": None if ready is None else round(ready, 3),
        "fast_started_at_bytes": sel.fast_started_at_bytes,
        "setup_floor_seconds": round(sel.floor.seconds, 3),
        "setup_floor_source": sel.floor.source,
        "contention": round(sel.contention, 2),
        "spec_remembered": sel.remembered,
    }


class _FastChoice:
    """The fast path being chosen: choose_encoder (spec completed, candidates built and probed) in a background
    thread once start() is called, or at once. Its warnings are kept and shown when the run uses the choice."""

    def __init__(self, choose: Callable[[Callable[[str], None]], tuple[EncoderSpec, int]], background: bool) -> None:
        self.messages: list[str] = []
        self.seconds: float | None = None  # from start() to the choice
        self.started = False
        self.started_at = time.perf_counter()
        self._choose = choose
        self._done = threading.Event()
        self._result: tuple[EncoderSpec, int] | None = None
        self._error: BaseException | None = None
        if not background:
            self.started = True
            self._run(choose)

    def start(self) -> None:
        self.started = True
        self.started_at = time.perf_counter()
        threading.Thread(target=self._run, args=(self._choose,), daemon=True, name="llmpt-fast-path").start()

    def _run(self, choose) -> None:
        start = time.perf_counter()
        try:
            self._result = choose(self.messages.append)
        except BaseException as e:  # noqa: BLE001 - re-raised by wait(), in the run's thread
            self._error = e
        self.seconds = time.perf_counter() - start
        self._done.set()

    def ready(self) -> bool:
        return self._done.is_set()

    def setup_seconds(self) -> tuple[float, bool]:
        """(seconds, exact): how long the choice took, or so far (a lower bound) if it is not made yet."""
        if self.seconds is not None:
            return self.seconds, True
        return time.perf_counter() - self.started_at, False

    def wait(self) -> tuple[EncoderSpec, int]:
        self._done.wait()
        messages, self.messages = self.messages, []
        for m in messages:
            warnings.warn(m, LlmptWarning, stacklevel=4)
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result


def contention(load_1min: float, cpus: int, busy: int = 1) -> float:
    """The share of a fast path's set-up that comes out of the class's own CPU time, from the machine's load (the
    1-minute average, which counts this run's `busy` processes encoding with the class once they have run a
    while): 0 with a core free for the set-up, 1 when the class's processes and other jobs keep every core busy."""
    free = cpus - max(load_1min, busy)
    return min(max(1.0 - free, 0.0), 1.0)


def worth_preparing(
    class_seconds: float, class_bytes: int, remaining_bytes: int, floor_seconds: float, share: float = 0.0
) -> bool:
    """Whether to start preparing the fast path: the class, at the speed measured on this input, still needs
    longer for the rest of it than the set-up can take at least (`floor_seconds`), plus what the set-up takes from
    the class meanwhile (`share` of it: contention()). Started any earlier, the class would most likely finish
    first and the set-up's CPU time be lost to it. The speed: `class_bytes` per `class_seconds` of wall time (of
    all the class's processes together)."""
    if class_bytes <= 0 or class_seconds <= 0:
        return False  # nothing measured yet: the first slice measures
    return remaining_bytes * class_seconds / class_bytes > floor_seconds * (1.0 + share)


# The class's encoder in the processes forked by _ClassWorkers: set in this process just before they are forked,
# so that they inherit the loaded tokenizer instead of loading it again (a pickled tokenizer would be as slow).
_CLASS_ENCODER: Encoder | None = None


def _class_worker_start() -> None:
    # a forked worker inherits the run's SIGTERM handler (raise SystemExit, for the parent's cleanup); Pool.terminate
    # must end it at once, with nothing of the parent's to clean up or print
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _class_task(chunk) -> tuple[ChunkResult, float]:
    """A forked worker's task: one slice with PaddleNLP's class, and the wall seconds it took (its speed)."""
    start = time.perf_counter()
    assert _CLASS_ENCODER is not None
    r = encode_chunk(chunk, _CLASS_ENCODER, sample=False)  # the class is the pipeline: nothing to check
    r.peak_rss_kb = 0  # a fork of the parent, its pages shared: not the memory of an encoding worker
    return r, time.perf_counter() - start


class _ClassWorkers:
    """PaddleNLP's class in `n` processes forked from this one once the tokenizer is loaded, as
    create_pretraining_data.py's pool is, but without each worker loading the tokenizer again (copy-on-write):
    the pipeline's own structure, so that where the class encodes llmpt is never slower than the pipeline, and
    the parent stays free to read, write, and prepare the fast path."""

    def __init__(self, tok, spec: EncoderSpec, n: int) -> None:
        self.tok, self.spec, self.n = tok, spec, n
        self.pool = None

    def __enter__(self) -> _ClassWorkers:
        import gc

        global _CLASS_ENCODER
        _CLASS_ENCODER = Encoder(self.spec, tokenizer=self.tok)
        # frozen: the children's garbage collector then never walks (and so never copies) the inherited objects
        gc.freeze()
        try:
            self.pool = mp.get_context("fork").Pool(self.n, initializer=_class_worker_start)
        finally:
            gc.unfreeze()
        return self

    def submit(self, chunk):
        return self.pool.apply_async(_class_task, (chunk,))

    def __exit__(self, *exc) -> None:
        global _CLASS_ENCODER
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
        _CLASS_ENCODER = None


def _encoded(
    pool: _Workers,
    choice: _FastChoice,
    tok,
    slow_spec: EncoderSpec,
    chunks: Iterator,
    sel: Selection,
    total_bytes: int = 0,
) -> Iterator[tuple[ChunkResult, EncoderSpec | None]]:
    """Encoded chunks in input order, each with the fast spec that encoded it (None: the class). Unless the fast
    encoder was chosen before the first document, the class encodes slices of the input in pool.class_workers
    forked processes; after each slice, the fast path is started if worth_preparing says so; once it is ready it
    encodes the rest (or the class does, if no fast encoder matched)."""
    it = iter(chunks)
    chunk = next(it, None)
    spec: EncoderSpec | None = None
    if chunk is not None and choice.started and choice.ready():  # chosen before the first document
        spec, sel.probed = choice.wait()
        sel.fast_ready_seconds = choice.seconds
    if chunk is not None and (spec is None or spec.backend == "paddlenlp"):
        n = sel.class_workers = pool.class_workers
        with _ClassWorkers(tok, slow_spec, n) as workers:
            pending: collections.deque = collections.deque()
            slices = 0
            while chunk is not None or pending:
                if spec is None and choice.ready():
                    spec, sel.probed = choice.wait()
                    sel.fast_ready_seconds = choice.seconds
                if chunk is not None and (spec is None or spec.backend == "paddlenlp"):
                    head, chunk = split_chunk(chunk, slice_bytes(sel.class_seconds, sel.class_bytes))
                    pending.append(workers.submit(head))
                    chunk = chunk if chunk is not None else next(it, None)
                    if len(pending) <= 2 * n and not pending[0].ready():
                        continue  # at most 2 x n + 1 slices in flight, as with the fast encoder's chunks
                elif not pending:
                    break  # the fast encoder takes the rest
                r, seconds = pending.popleft().get()
                sel.class_seconds += seconds
                slices += 1
                if seconds > 0:
                    sel.class_best_bytes_per_s = max(sel.class_best_bytes_per_s, r.bytes_in / seconds)
                sel.class_bytes += r.bytes_in
                sel.class_documents += r.documents
                # decided on 2 slices per process at least (a fresh process's first slice is slower: its caches
                # are cold, its pages shared with this one), at the fastest speed a slice showed: the class is
                # given every chance to finish first, as the pipeline would
                if not choice.started and slices >= 2 * n:
                    sel.contention = contention(os.getloadavg()[0], os.cpu_count() or 1, busy=n)
                    left = total_bytes - sel.class_bytes
                    speed = int(sel.class_best_bytes_per_s * n)
                    if worth_preparing(1.0, speed, left, sel.floor.seconds, sel.contention):
                        sel.fast_started_at_bytes = sel.class_bytes
                        choice.start()
                yield r, None
    if chunk is None:
        return
    if spec is None:
        spec, sel.probed = choice.wait()
        sel.fast_ready_seconds = choice.seconds
    sel.fast_backend = spec.backend
    sel.fast_spec = spec
    sel.remembered = spec in pool.remembered
    for r in pool.results(spec, itertools.chain([chunk], it)):
        sel.fast_documents += r.documents
        sel.fast_bytes += r.bytes_in
        yield r, spec


@contextlib.contextmanager
def _terminate_cleanly():
    """SIGTERM ends the run like Ctrl-C: through the cleanup of temporary files (a SIGKILL cannot; the next
    run removes what it left: remove_stale_temporaries)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def prepare_data(
    inputs: list[str] | None,
    output: str | None = None,
    tokenizer: str | None = None,
    workers: int = 1,
    text_key: str = "text",
    append_eos: bool = True,
    force: bool = False,
    strict: bool = False,
    fmt: str = "auto",
    progress: ProgressFn | None = None,
    encoder: str | None = None,
    slow_start: bool = True,
) -> PrepareResult:
    """Tokenize `inputs` into OUTPUT.bin/.idx (+ manifest). No inputs: the shipped corpus. `encoder`: force one
    backend (spwords, sentencepiece, fastokens, tiktoken, tokenizers, or paddlenlp: the slow path). Default:
    PaddleNLP's class encodes from the first document while the fastest native encoder that passes the self-check
    is prepared, and that encoder the rest once it is ready (`slow_start=False`: wait for it instead)."""
    if workers < 1:
        raise DataError(f"--workers {workers}: must be >= 1")
    if fmt not in ("auto", "jsonl", "text"):
        raise DataError(f"--format {fmt}: allowed: auto, jsonl, text")
    specs = inputs or [str(SHIPPED_CORPUS)]
    files = discover_inputs(specs, fmt)
    prefix = output or str(Path("data") / files[0].path.name.split(".")[0])
    _check_output(prefix, force)
    tok_dir = resolve_tokenizer_dir(tokenizer)
    from llmpt.data.selfcheck import Divergence, choose_encoder, probe_set

    helper = slow_start and not encoder
    fast_workers = effective_workers(files, workers)
    prespawn = helper and worth_prespawning(files, workers)
    remembered = remembered_spec(tok_dir) if prespawn else None
    with _Workers(fast_workers, helper=helper, class_workers=workers, prespawn=prespawn) as pool:
        if remembered is not None:
            pool.warm(remembered.path)
        import paddlenlp.transformers  # noqa: F401 - first, so that the load below times the vocabulary alone

        loading = time.perf_counter()
        tok = load_tokenizer(tok_dir)
        load_seconds = time.perf_counter() - loading
        base = encoder_spec(tok, tok_dir, text_key, append_eos, encoder)
        slow_spec = replace(base, backend="paddlenlp")
        name = tokenizer if tokenizer and not Path(tokenizer).is_dir() else tok_dir.name
        fingerprint = tokenizer_fingerprint(tok, tok_dir, name)
        race = slow_start and not encoder and base.backend != "paddlenlp"
        # PaddleNLP's ids of the probe set, here: the thread below reads the tokenizer but never runs it
        probe = probe_set(tok, base) if race else None
        choice = _FastChoice(
            lambda warn: choose_encoder(
                tok, base, forced=bool(encoder), encode_later=pool.encode_later, warn=warn, probe=probe
            ),
            background=race,
        )
        setup_key = f"{fingerprint['sha256']} {base.family} {base.backend}"
        floor = SetupFloor.of(load_seconds, known_setup_seconds(setup_key))
        adopted = race and remembered is not None and remembered.tokenizer_sha256 == fingerprint["sha256"]
        if adopted:
            # built (or being built) by the workers since the run started: only its probe is left to do
            pool.adopt(remembered.spec, remembered.path)
            floor = SetupFloor(0.0, "the fast encoder's spec remembered by an earlier run, built during the import")
        sel = Selection(mode="race" if race else "forced" if encoder else "fast", floor=floor)
        remove_stale_temporaries(prefix)
        # after the tokenizer: importing paddle installs its own SIGTERM handler, which exits on the spot
        with _terminate_cleanly():
            args = (tok, slow_spec, files, specs, prefix, pool, strict, progress, fingerprint, input_bytes(files))
            try:
                result = _prepare(choice, sel, *args)
            except Divergence as d:
                warnings.warn(
                    f"the {sel.fast_backend} encoder disagrees with PaddleNLP's {base.tokenizer_class} on a sampled "
                    f"document ({str(d)[:60]!r}); starting again with PaddleNLP's tokenizer (slow)",
                    LlmptWarning,
                    stacklevel=2,
                )
                again = Selection(mode=sel.mode, restarted=f"the {sel.fast_backend} encoder disagreed on a sample")
                return _prepare(_FastChoice(lambda warn: (slow_spec, 0), background=False), again, *args)
            if race and choice.started and not adopted:
                remember_setup_seconds(setup_key, *choice.setup_seconds())
            if sel.fast_documents and sel.fast_spec is not None and not sel.remembered:
                remember_spec(tok_dir, sel.fast_spec, fingerprint["sha256"])
            return result


def _prepare(
    choice: _FastChoice,
    sel: Selection,
    tok,
    slow_spec: EncoderSpec,
    files,
    specs,
    prefix,
    pool,
    strict,
    progress,
    fingerprint: dict,
    total_bytes: int,
) -> PrepareResult:
    from llmpt.data.selfcheck import SampleChecker

    start = time.perf_counter()
    checker = SampleChecker(tok, slow_spec, 0)  # inactive until a fast encoder encodes
    documents = tokens = skipped = empty = bytes_in = peak_rss_kb = 0
    max_id = -1
    bad_lines: list[dict] = []
    bin_hash = hashlib.sha256()
    spec = slow_spec
    with _AtomicOutputs(prefix) as out:
        with out.tmp["bin"].open("wb") as bin_f, out.tmp["sizes"].open("wb") as sizes_f:
            for r, fast in _encoded(pool, choice, tok, slow_spec, iter_chunks(files), sel, total_bytes):
                if fast is not None and not checker.active:
                    checker = SampleChecker(tok, fast, sel.probed)
                if strict and r.bad:
                    f, line, why = r.bad_lines[0]
                    raise DataError(f"{f}:{line}: {why} (--strict stops at the first bad line)")
                checker.check(r.file, r.samples, bytes_in + r.bytes_in)
                bin_f.write(r.tokens)
                bin_hash.update(r.tokens)
                sizes_f.write(r.sizes.tobytes())
                documents += r.documents
                tokens += int(r.sizes.sum())
                skipped += r.bad
                empty += r.empty
                bytes_in += r.bytes_in
                peak_rss_kb = max(peak_rss_kb, r.peak_rss_kb)
                max_id = max(max_id, r.max_id)
                for f, line, why in r.bad_lines:
                    if len(bad_lines) < MAX_BAD_REPORTED:
                        bad_lines.append({"file": f, "line": line, "reason": why})
                if progress:
                    progress(documents, tokens, bytes_in)
        if documents == 0:
            lacked = skipped and all("missing key" in b["reason"] for b in bad_lines)
            raise DataError(
                f"no documents in {', '.join(specs)}"
                + (
                    f" ({skipped} bad lines, first: {bad_lines[0]['file']}:{bad_lines[0]['line']}: "
                    f"{bad_lines[0]['reason']})"
                    if bad_lines
                    else ""
                )
                + (f"; every line lacked key {spec.text_key!r}?" if lacked else ""),
                "check --text-key and --format",
            )
        write_index(out.tmp["idx"], out.tmp["sizes"], np.dtype(spec.dtype))
        seconds = time.perf_counter() - start
        encoder = {
            "family": spec.family,
            "backend": sel.fast_backend or "paddlenlp",
            "selection": selection_record(sel, spec.tokenizer_class),
            "self_check": checker.summary(sel.fast_documents),
        }
        if pool.pool is not None and peak_rss_kb:  # a worker encoded (a helper the class outran reports nothing)
            encoder["worker_peak_rss_mb"] = round(peak_rss_kb / 1024, 1)
        manifest = out.finish(
            {
                "documents": documents,
                "tokens": tokens,
                "max_id": max_id,  # train refuses a model whose vocabulary this id is not below
                "skipped": skipped,
                "empty": empty,
                "dtype": spec.dtype,
                "append_eos": spec.append_eos,
                "eos_id": spec.eos_id,
                "text_key": spec.text_key,
                "tokenizer": fingerprint,
                "encoder": encoder,
                "inputs": [str(f.path) for f in files],
            },
            bin_hash.hexdigest(),
        )
    return PrepareResult(
        documents=documents,
        tokens=tokens,
        skipped=skipped,
        empty=empty,
        output_prefix=prefix,
        tokenizer=spec.tokenizer_dir,
        seconds=seconds,
        input_bytes=bytes_in,
        bin_bytes=manifest["bin"]["bytes"],
        dtype=spec.dtype,
        bad_lines=bad_lines,
        inputs=[str(f.path) for f in files],
        encoder=encoder,
    )


def read_manifest(prefix: str | Path) -> dict | None:
    p = output_paths(prefix)["manifest"]
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{p}: unreadable manifest ({e})") from None


def open_prepared(prefix: str, flag: str):
    """(index, manifest or None) of a prepared prefix; DataError naming `flag` and the problem otherwise."""
    try:
        index = read_index(prefix)
    except FileNotFoundError as e:
        raise DataError(
            f"{flag} {prefix}: {e.filename} is missing", "prepare it with: llmpt prepare-data … --output PREFIX"
        ) from None
    except IndexFormatError as e:
        raise DataError(
            f"{flag} {prefix}: {e}", "prepare the data again: llmpt prepare-data … --output PREFIX --force"
        ) from None
    return index, read_manifest(prefix)


# Hashes this process verified, per cache file, not yet written there: a check writes nothing (a later check may
# still refuse); remember_verified() writes them once the run starts.
_VERIFIED: dict[Path, dict[str, str]] = {}


def verify_prepared(prefix: str, manifest: dict, flag: str, cache: Path | None = None) -> None:
    """The files are the ones prepare-data wrote: byte sizes and SHA-256 of .idx and .bin against the manifest.

    Hashing a large .bin takes a while (~1 GB/s); a hash already verified for the same path, size and mtime is
    remembered in `cache` (a JSON file) and not recomputed. Only read here: remember_verified() writes."""
    paths = output_paths(prefix)
    seen: dict = {}
    if cache is not None and cache.is_file():
        with contextlib.suppress(OSError, ValueError):
            seen = json.loads(cache.read_text())
    if cache is not None:
        seen |= _VERIFIED.get(cache, {})
    for kind in ("idx", "bin"):
        want = manifest.get(kind) or {}
        path = paths[kind]
        st = path.stat()
        if want.get("bytes") is not None and st.st_size != want["bytes"]:
            raise DataError(
                f"{flag} {prefix}: {path.name} has {st.st_size} bytes, the manifest says {want['bytes']} "
                "(cut short, or from another prepare-data run?)",
                "prepare the data again",
            )
        if not want.get("sha256"):
            continue
        key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
        if seen.get(key) == want["sha256"]:
            continue
        if sha256_file(path) != want["sha256"]:
            raise DataError(
                f"{flag} {prefix}: {path.name} does not match its manifest checksum (changed since prepare-data?)",
                "prepare the data again",
            )
        if cache is not None:
            _VERIFIED.setdefault(cache, {})[key] = want["sha256"]


def verified_cache() -> Path:
    """The cache file of verified hashes (path|size|mtime -> SHA-256) that verify_prepared reads."""
    return cache_dir() / "verified-data.json"


def remember_verified(cache: Path) -> None:
    """Write the hashes verified since the last call into `cache`: at launch, after every check passed."""
    new = _VERIFIED.pop(cache, {})
    if not new:
        return
    seen: dict = {}
    if cache.is_file():
        with contextlib.suppress(OSError, ValueError):
            seen = json.loads(cache.read_text())
    with contextlib.suppress(OSError):  # only a cache: a run does not fail for it
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f"{cache.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(seen | new))
        os.replace(tmp, cache)


def shipped_prefix() -> Path:
    """Where `llmpt train` keeps the shipped corpus, prepared on first use: <cache>/data/kjv."""
    return cache_dir() / "data" / "kjv"


def shipped_pending(prefix: str | Path) -> bool:
    """`prefix` is the shipped corpus's place in the cache and it is not prepared there yet."""
    return Path(prefix) == shipped_prefix() and not output_paths(prefix)["manifest"].is_file()


def prepare_shipped(prefixes: list[str]) -> None:
    """Prepare the shipped corpus into the cache if a run reads it and it is not there yet: at launch, after every
    check passed (its vocabulary and document count were known without it: shipped_corpus_facts)."""
    for p in prefixes:
        if shipped_pending(p):
            try:  # the first write of a launch: nothing else is written if it is refused
                check_writable(Path(p).parent)
            except OSError as e:
                raise DataError(
                    f"the cache {cache_dir()} cannot hold the shipped corpus ({e.filename}: {e.strerror or e})",
                    "set LLMPT_CACHE to a writable directory, or pass --data PREFIX",
                ) from None
            prepare_data(None, output=str(p), force=True)


def merge_prefixes(prefixes: list[str], output: str, force: bool = False) -> PrepareResult:
    """Concatenate prepared shards (same dtype and tokenizer) into one prefix, atomically."""
    if len(prefixes) < 2:
        raise DataError("--merge needs at least two prepared prefixes as inputs")
    _check_output(output, force)
    start = time.perf_counter()
    shards = [(p, *open_prepared(p, "--merge input")) for p in prefixes]
    for p, _, m in shards:
        # every shard is the one its prepare-data run wrote: sizes and SHA-256 of .bin and .idx
        if m is None:
            raise DataError(
                f"--merge input {p}: no manifest ({output_paths(p)['manifest'].name}), so its files cannot be verified",
                "prepare it again with llmpt prepare-data (it writes the manifest)",
            )
        if not (m.get("bin") or {}).get("sha256") or not (m.get("idx") or {}).get("sha256"):
            raise DataError(
                f"--merge input {p}: its manifest has no checksums of the .bin/.idx files",
                "prepare it again with llmpt prepare-data",
            )
        verify_prepared(p, m, "--merge input")
    dtypes = {s.dtype for _, s, _ in shards}
    if len(dtypes) > 1:
        raise DataError(f"--merge: shards have different token dtypes ({', '.join(sorted(d.name for d in dtypes))})")
    toks = {json.dumps((m.get("tokenizer") or {}).get("files"), sort_keys=True) for _, _, m in shards}
    if len(toks) > 1:
        raise DataError("--merge: shards were tokenized with different tokenizers (manifests disagree)")
    bin_hash = hashlib.sha256()
    remove_stale_temporaries(output)
    with _AtomicOutputs(output) as out:
        with out.tmp["bin"].open("wb") as bin_f:
            for p, _, _ in shards:
                with open(f"{p}.bin", "rb") as src:
                    for block in iter(lambda src=src: src.read(1 << 22), b""):
                        bin_f.write(block)
                        bin_hash.update(block)
        sizes = np.concatenate([s.sizes for _, s, _ in shards])
        docs, offset = [0], 0
        for _, s, _ in shards:
            docs.extend((s.doc_idx[1:] + offset).tolist())
            offset += len(s.sizes)
        dtype = shards[0][1].dtype
        out.tmp["idx"].write_bytes(index_bytes(sizes, np.asarray(docs), dtype))
        first = next((m for _, _, m in shards if m), None)
        carried = {k: first[k] for k in ("append_eos", "eos_id", "text_key") if first and k in first}
        manifest = out.finish(
            {
                "documents": len(docs) - 1,
                "tokens": int(sizes.astype(np.int64).sum()),
                # the shards' largest id, when every manifest says it
                "max_id": max(ids) if None not in (ids := [m.get("max_id") for _, _, m in shards]) else None,
                "skipped": sum(m.get("skipped", 0) for _, _, m in shards if m),
                "empty": sum(m.get("empty", 0) for _, _, m in shards if m),
                "dtype": dtype.name,
                "tokenizer": first["tokenizer"] if first else None,
                "inputs": prefixes,
                "merged_from": prefixes,
                **carried,
            },
            bin_hash.hexdigest(),
        )
    return PrepareResult(
        documents=manifest["documents"],
        tokens=manifest["tokens"],
        skipped=manifest["skipped"],
        empty=manifest["empty"],
        output_prefix=output,
        tokenizer=(first or {}).get("tokenizer", {}).get("dir", "") if first else "",
        seconds=time.perf_counter() - start,
        input_bytes=0,
        bin_bytes=manifest["bin"]["bytes"],
        dtype=dtype.name,
        inputs=prefixes,
    )
