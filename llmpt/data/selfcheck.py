"""prepare-data's self-check: the fast encoder against PaddleNLP's own pipeline (its cleaning + the tokenizer's
class), on a probe set before the run and on documents sampled from every part of the input during it."""

from __future__ import annotations

import dataclasses
import re
import warnings
from collections.abc import Callable

import numpy as np

from llmpt.data.adversarial import adversarial_documents
from llmpt.data.encode import MAX_REPEATED_LEN, Encoder, EncoderSpec, _clean
from llmpt.data.inputs import DataError
from llmpt.data.tokenizer import complete_spec, native_backends
from llmpt.errors import LlmptWarning

# create_pretraining_data.py's Converter.remove_repeated_chars, verbatim (no re.S)
_PADDLENLP_REPEATS = re.compile(r"(.)\1{" + str(MAX_REPEATED_LEN) + ",}")
MIN_SAMPLE_CHARS = 256 << 10  # always affordable: the first samples are checked whatever the budget
SAMPLE_SHARE = 0.001  # afterwards the parent re-tokenizes at most this share of the input's characters


class Divergence(Exception):
    """A sampled document's fast ids differ from PaddleNLP's: the run restarts on the slow path."""


def reference_ids(tok, raw: str) -> list[int]:
    """What create_pretraining_data.py's Converter.encode makes of one document (before EOS)."""
    text = _PADDLENLP_REPEATS.sub(r"\1", raw)
    return list(tok.convert_tokens_to_ids(tok.tokenize(text.strip())))


EncodeLater = Callable[[EncoderSpec, list[str]], Callable[[], tuple[np.ndarray, np.ndarray]]]


def _in_process(spec: EncoderSpec, texts: list[str]) -> Callable[[], tuple[np.ndarray, np.ndarray]]:
    out = Encoder(spec).encode(texts)
    return lambda: out


Probe = tuple[list[str], list[list[int]]]  # the adversarial documents and PaddleNLP's ids for each


def probe_set(tok, spec: EncoderSpec) -> Probe:
    """The probe documents and what PaddleNLP's pipeline makes of them, computed once for every candidate."""
    docs = adversarial_documents(spec.probe_literals, quick=True)
    return docs, [reference_ids(tok, d) for d in docs]


def _first_difference(spec: EncoderSpec, probe: Probe, encode_later: EncodeLater) -> str | None:
    docs, want = probe
    flat, lengths = encode_later(spec, [_clean(d) for d in docs])()
    starts = np.concatenate(([0], np.cumsum(lengths)))
    for i, d in enumerate(docs):
        if flat[starts[i] : starts[i + 1]].tolist() != want[i]:
            return d
    return None


def _warn(message: str) -> None:
    warnings.warn(message, LlmptWarning, stacklevel=3)


def choose_encoder(
    tok,
    spec: EncoderSpec,
    forced: bool = False,
    encode_later: EncodeLater = _in_process,
    warn: Callable[[str], None] = _warn,
    probe: Probe | None = None,
) -> tuple[EncoderSpec, int]:
    """The first native backend for the family that gives PaddleNLP's ids on the probe set, else the slow path
    with a warning that names the document. (spec, documents compared). `tok` is only read (prepare-data runs
    this in a thread beside the class's own encoding); `probe` precomputed by probe_set, else made here."""
    if spec.backend == "paddlenlp":
        if spec.family == "other" and not forced:
            warn(f"no fast encoder restates {spec.tokenizer_class}: every worker runs PaddleNLP's tokenizer (slow)")
        return spec, 0
    try:
        spec = complete_spec(tok, spec)
    except ValueError as e:  # the files do not restate what the class loaded
        warn(f"no fast encoder for {spec.tokenizer_class}: {e}; PaddleNLP's (slow)")
        return dataclasses.replace(spec, backend="paddlenlp"), 0
    probe = probe or probe_set(tok, spec)
    others = [b for b in native_backends(spec.family) if b != spec.backend]
    order = [spec.backend] if forced else [spec.backend, *others]
    for backend in order:
        candidate = dataclasses.replace(spec, backend=backend)
        try:
            diff = _first_difference(candidate, probe, encode_later)
        except ValueError as e:  # the backend cannot restate this model (e.g. spwords: pieces span words)
            warn(f"the {backend} encoder cannot be used: {e}")
            continue
        if diff is None:
            return candidate, len(probe[0])
        warn(
            f"the {backend} encoder disagrees with PaddleNLP's {spec.tokenizer_class} on {diff[:60]!r}; "
            "trying the next encoder"
        )
    warn(f"no native encoder matches {spec.tokenizer_class}: PaddleNLP's (slow)")
    return dataclasses.replace(spec, backend="paddlenlp"), len(probe[0])


class SampleChecker:
    """Re-tokenizes the documents workers sampled (from every chunk of every file) with PaddleNLP's tokenizer,
    within a budget of characters, and raises Divergence at the first difference."""

    def __init__(self, tok, spec: EncoderSpec, probed: int) -> None:
        self.tok = tok
        self.active = spec.backend != "paddlenlp"
        self.documents = probed
        self.sampled_documents = 0
        self.sampled_chars = 0
        self.files: set[str] = set()

    def check(self, file: str, samples: list[tuple[str, list[int]]], chars_seen: int) -> None:
        if not self.active:
            return
        for raw, ids in samples:
            first_of_file = file not in self.files
            if not first_of_file and self.sampled_chars + len(raw) > max(MIN_SAMPLE_CHARS, SAMPLE_SHARE * chars_seen):
                continue
            self.files.add(file)
            if reference_ids(self.tok, raw) != ids:
                raise Divergence(raw)
            self.sampled_documents += 1
            self.sampled_chars += len(raw)

    def summary(self, documents: int) -> dict:
        """What was compared; refuses a fast run that compared nothing although it wrote documents."""
        if self.active and documents and not self.sampled_documents:
            raise DataError(
                f"the self-check compared no document of the input with PaddleNLP's tokenizer ({documents} written)",
                "this is a bug in llmpt: report it; pass --workers 1 to compare",
            )
        return {
            "probe_documents": self.documents,
            "sampled_documents": self.sampled_documents,
            "sampled_chars": self.sampled_chars,
            "files_sampled": len(self.files),
        }
