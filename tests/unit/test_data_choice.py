"""prepare-data's choice of encoder without paddle: PaddleNLP's class encodes slices of the input, the fast path
is prepared only when the class would need longer than its own load, and once ready the fast encoder encodes the
rest; how big a slice is; how a chunk is cut into slices without changing its documents; what the manifest says
about the choice."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from llmpt.data.encode import ChunkResult, EncoderSpec, _documents
from llmpt.data.inputs import CHUNK_BYTES, Chunk, split_chunk
from llmpt.data.prepare import (
    FIRST_SLICE_BYTES,
    SWITCH_LAG_S,
    Selection,
    SetupFloor,
    _encoded,
    _FastChoice,
    _Workers,
    contention,
    known_setup_seconds,
    remember_setup_seconds,
    selection_record,
    slice_bytes,
    worth_preparing,
)
from llmpt.data.tokenizer import SHIPPED_TOKENIZER


def test_a_slice_is_what_the_class_does_in_the_switch_lag_at_its_measured_speed():
    assert slice_bytes(0.0, 0) == FIRST_SLICE_BYTES  # nothing measured yet
    assert slice_bytes(1.0, 1_000_000) == int(1_000_000 * SWITCH_LAG_S)  # 1 MB/s -> 50 kB
    assert slice_bytes(1.0, 100_000) == FIRST_SLICE_BYTES  # never smaller than the first slice
    assert slice_bytes(0.01, 10_000_000) == CHUNK_BYTES  # never larger than a worker's chunk


def _doc_texts(chunk: Chunk) -> list[str]:
    return _documents(chunk, "text", ChunkResult(tokens=b"", sizes=np.zeros(0, np.int32)))


def _line_numbers_of_bad_lines(chunk: Chunk) -> list[int]:
    r = ChunkResult(tokens=b"", sizes=np.zeros(0, np.int32))
    _documents(chunk, "text", r)
    return [line for _, line, _ in r.bad_lines]


@pytest.mark.parametrize("size", [1, 7, 40, 100, 10_000])
def test_split_chunk_keeps_the_documents_and_line_numbers(size):
    lines = [json.dumps({"text": f"document {i} " * (i % 5 + 1)}) if i % 7 else "not json" for i in range(30)]
    jsonl = Chunk("f.jsonl", "jsonl", 11, ("\n".join(lines) + "\n").encode())
    text = Chunk(
        "f.txt", "text", 3, b"one\r\nline two\r\n\r\npara two\n   \t\nthird\n\n\nfourth\nmore\n\n" + b"x\n\ny\n" * 5
    )
    for chunk in (jsonl, text):
        parts, rest = [], chunk
        while rest is not None:
            head, rest = split_chunk(rest, size)
            assert head.data  # never an empty slice
            parts.append(head)
        assert b"".join(p.data for p in parts) == chunk.data
        assert [d for p in parts for d in _doc_texts(p)] == _doc_texts(chunk)
        assert [n for p in parts for n in _line_numbers_of_bad_lines(p)] == _line_numbers_of_bad_lines(chunk)
    assert split_chunk(jsonl, len(jsonl.data)) == (jsonl, None)


class _CharClass:
    """A stand-in for PaddleNLP's class (this file imports no paddle): one id per character."""

    def tokenize(self, text: str) -> list[str]:
        return list(text)

    def convert_tokens_to_ids(self, tokens: list[str]) -> list[int]:
        return [ord(t) % 1000 for t in tokens]


def _spec(backend: str) -> EncoderSpec:
    pytest.importorskip("sentencepiece")
    return EncoderSpec(
        tokenizer_dir=str(SHIPPED_TOKENIZER),
        tokenizer_class="LlamaTokenizer",
        family="sentencepiece",
        backend=backend,
        eos_id=2,
        append_eos=True,
        text_key="text",
        dtype="uint16",
        model_path=str(SHIPPED_TOKENIZER / "sentencepiece.bpe.model"),
    )


def _chunks(n: int) -> list[Chunk]:
    doc = json.dumps({"text": "and God said let there be light " * 40}) + "\n"
    return [Chunk("f.jsonl", "jsonl", 1 + k * 100, (doc * 100).encode()) for k in range(n)]


def _size(chunks: list[Chunk]) -> int:
    return sum(len(c.data) for c in chunks)


def test_the_fast_path_is_prepared_only_when_the_class_would_need_longer_than_its_own_load():
    # 1 MB/s measured; 0.5 MB left = 0.5 s of the class
    assert worth_preparing(0.1, 100_000, 500_000, floor_seconds=0.4)
    assert not worth_preparing(0.1, 100_000, 500_000, floor_seconds=0.6)
    assert not worth_preparing(0.0, 0, 10**9, floor_seconds=0.0)  # nothing measured yet
    # every core busy: the set-up would take its own time out of the class's, so it must be worth twice as much
    assert not worth_preparing(0.1, 100_000, 500_000, floor_seconds=0.4, share=1.0)
    assert worth_preparing(0.1, 100_000, 900_000, floor_seconds=0.4, share=1.0)


def test_contention_is_the_share_of_a_core_the_set_up_would_take_from_the_class():
    assert contention(load_1min=1.0, cpus=2) == 0.0  # only this process: a core is free
    assert contention(load_1min=0.2, cpus=2) == 0.0
    assert contention(load_1min=1.5, cpus=2) == 0.5
    assert contention(load_1min=4.0, cpus=2) == 1.0  # other jobs on every core
    assert contention(load_1min=1.0, cpus=1) == 1.0  # one core: the set-up always shares it
    assert contention(load_1min=3.0, cpus=8) == 0.0
    # the class in 2 processes on 2 cores: the set-up takes from them even before the load average shows them
    assert contention(load_1min=0.3, cpus=2, busy=2) == 1.0
    assert contention(load_1min=2.0, cpus=4, busy=2) == 0.0


class _PidClass:
    """A stand-in class whose one id per document is the process that encoded it."""

    def tokenize(self, text: str) -> list[str]:
        import time

        time.sleep(0.002)  # slow enough that a slice in one process leaves the next to the other
        return ["x"]

    def convert_tokens_to_ids(self, tokens: list[str]) -> list[int]:
        import os

        return [os.getpid() % 60000]


def test_the_class_encodes_in_as_many_forked_processes_as_workers_asked_for():
    import os

    choice = _FastChoice(lambda warn: pytest.fail("the fast path was prepared"), background=True)
    chunks = _chunks(4)
    sel = Selection(floor=SetupFloor(3600.0, "a test"))
    # workers clamped to 1 for a fast encoder (a small input), the class still in the 2 processes asked for
    with _Workers(1, helper=True, class_workers=2) as pool:
        out = list(_encoded(pool, choice, _PidClass(), _spec("paddlenlp"), chunks, sel, _size(chunks)))
    ids = np.concatenate([np.frombuffer(r.tokens, np.uint16) for r, _ in out])
    assert len(ids) == 2 * 400  # each document: its id and EOS (2), in input order
    pids = set(ids[0::2].tolist())
    assert len(pids) == 2 and os.getpid() % 60000 not in pids  # two forked processes, not this one
    assert (sel.class_documents, sel.class_workers, sel.class_bytes) == (400, 2, _size(chunks))
    assert "of 2 processes" in selection_record(sel, "X")["why"]


def test_a_fast_path_not_worth_preparing_is_never_started():
    choice = _FastChoice(lambda warn: pytest.fail("the fast path was prepared"), background=True)
    chunks = _chunks(2)
    sel = Selection(floor=SetupFloor(3600.0, "a test"))
    with _Workers(1, helper=True) as pool:
        out = list(_encoded(pool, choice, _CharClass(), _spec("paddlenlp"), chunks, sel, _size(chunks)))
    assert all(by is None for _, by in out) and not choice.started and pool.pool is None  # no helper spawned
    assert sel.class_documents == 200 and sel.fast_started_at_bytes is None
    assert "more than 3600.00 s (a test) x " in selection_record(sel, "X")["why"]


def test_the_class_encodes_until_the_fast_path_is_ready_then_the_fast_encoder_the_rest():
    gate = threading.Event()
    fast = _spec("sentencepiece")

    def choose(warn):
        gate.wait()
        warn("a message kept for the run's thread")
        return fast, 7

    choice = _FastChoice(choose, background=True)
    sel = Selection()
    chunks = _chunks(3)
    with _Workers(1) as pool:
        results = _encoded(pool, choice, _CharClass(), _spec("paddlenlp"), chunks, sel, _size(chunks))
        first, by = next(results)
        assert by is None and not first.samples  # the class: nothing to sample
        assert not choice.started  # one slice, cold: not measured enough
        second, by = next(results)
        assert by is None and not second.samples
        # worth it after 2 slices of its one process (floor 0 s)
        assert choice.started and sel.fast_started_at_bytes == first.bytes_in + second.bytes_in
        gate.set()
        while not choice.ready():
            threading.Event().wait(0.01)
        with pytest.warns(UserWarning, match="a message kept"):
            rest = list(results)
    # the class's slices already in flight at the switch come first (input order), then the fast encoder's
    by_class = [r for r, by in rest if by is None]
    assert [by for _, by in rest] == [None] * len(by_class) + [fast] * (len(rest) - len(by_class))
    assert all(r.samples for r, by in rest if by is not None)
    assert sel.class_documents == first.documents + second.documents + sum(r.documents for r in by_class) > 0
    assert sel.fast_documents == sum(r.documents for r, by in rest if by is not None) > 0
    assert sel.class_documents + sel.fast_documents == 300
    assert sel.class_bytes + sel.fast_bytes == sum(len(c.data) for c in chunks)
    assert (sel.fast_backend, sel.probed) == ("sentencepiece", 7) and sel.fast_ready_seconds is not None


def test_a_fast_path_ready_before_the_first_document_encodes_everything():
    fast = _spec("sentencepiece")
    choice = _FastChoice(lambda warn: (fast, 5), background=False)
    sel = Selection(mode="fast")
    with _Workers(1) as pool:
        out = list(_encoded(pool, choice, _CharClass(), _spec("paddlenlp"), _chunks(2), sel, 0))
    assert [by for _, by in out] == [fast, fast] and sel.class_documents == 0 and sel.fast_documents == 200


def test_no_fast_encoder_matching_leaves_the_class_for_the_rest():
    slow = _spec("paddlenlp")
    choice = _FastChoice(lambda warn: (slow, 5), background=False)
    sel = Selection()
    with _Workers(1) as pool:
        out = list(_encoded(pool, choice, _CharClass(), slow, _chunks(2), sel, 0))
    assert all(by is None for _, by in out) and sel.fast_backend is None and sel.class_documents == 200


def test_the_manifest_says_why_the_class_or_the_fast_encoder_ran():
    alone = selection_record(
        Selection(class_documents=3, class_bytes=2_000_000, class_seconds=0.4, fast_started_at_bytes=0), "GPTTokenizer"
    )
    assert "GPTTokenizer encoded the whole input (2.00 MB in 0.40 s) before a fast encoder was ready" in alone["why"]
    mixed = Selection(
        class_documents=1, class_bytes=500_000, class_seconds=0.5, fast_backend="fastokens", fast_documents=9
    )
    mixed.fast_ready_seconds = 0.6
    why = selection_record(mixed, "Qwen2Tokenizer")["why"]
    assert "encoded the first 0.50 MB" in why and "fastokens encoder was prepared (0.60 s), fastokens the rest" in why
    assert (
        "prepared before the first document"
        in selection_record(Selection(mode="fast", fast_backend="fastokens", fast_ready_seconds=1.0), "X")["why"]
    )
    assert selection_record(Selection(mode="forced"), "X")["why"].endswith("prepare_data(encoder='paddlenlp')")
    assert "no fast encoder gives" in selection_record(Selection(fast_ready_seconds=1.0), "X")["why"]
    assert "so no fast encoder was prepared" in selection_record(Selection(), "X")["why"]
    assert "disagreed" in selection_record(Selection(restarted="the x encoder disagreed"), "X")["why"]
    record = selection_record(mixed, "X")
    assert {k: record[k] for k in ("mode", "class_documents", "fast_documents", "fast_ready_seconds")} == {
        "mode": "race",
        "class_documents": 1,
        "fast_documents": 9,
        "fast_ready_seconds": 0.6,
    }


def test_the_set_up_floor_is_the_larger_of_the_class_load_and_a_measured_set_up():
    assert SetupFloor.of(0.4, None).seconds == 0.4 and "own load" in SetupFloor.of(0.4, None).source
    assert SetupFloor.of(0.4, 1.5).seconds == 1.5 and "on this machine before" in SetupFloor.of(0.4, 1.5).source
    assert SetupFloor.of(0.4, 0.1).seconds == 0.4


def test_set_up_times_are_remembered_exact_or_as_lower_bounds():  # LLMPT_CACHE: tests/unit/conftest.py
    assert known_setup_seconds("k") is None
    remember_setup_seconds("k", 0.5, exact=False)  # still being prepared after 0.5 s
    assert known_setup_seconds("k") == 0.5
    remember_setup_seconds("k", 0.3, exact=False)  # a weaker bound changes nothing
    assert known_setup_seconds("k") == 0.5
    remember_setup_seconds("k", 1.2, exact=True)
    remember_setup_seconds("other", 9.0, exact=True)
    assert known_setup_seconds("k") == 1.2
    remember_setup_seconds("k", 0.9, exact=True)  # a measurement replaces the last one
    assert known_setup_seconds("k") == 0.9


def test_a_large_input_starts_the_fast_encoders_workers_with_the_run_a_small_one_never(tmp_path):
    from llmpt.data.inputs import InputFile
    from llmpt.data.prepare import FASTEST_CLASS_BYTES_PER_S, QUICKEST_SETUP_S, worth_prespawning

    def of_size(n: int) -> list[InputFile]:
        p = tmp_path / f"{n}.jsonl"
        with p.open("wb") as f:
            f.truncate(n)  # sparse: only the size is read
        return [InputFile(p, "jsonl")]

    edge = int(FASTEST_CLASS_BYTES_PER_S * QUICKEST_SETUP_S)  # 6.24 MB: what the fastest class does in the set-up
    assert not worth_prespawning(of_size(2_000_000), 1) and worth_prespawning(of_size(edge + 1000), 1)
    assert not worth_prespawning(of_size(edge + 1000), 2)  # two class processes finish it in half the time
    assert worth_prespawning(of_size(40_000_000), 2)


def test_a_remembered_spec_is_found_only_for_the_same_tokenizer_files(tmp_path):
    import os

    from llmpt.data.prepare import remember_spec, remembered_spec

    tok_dir = tmp_path / "tok"
    tok_dir.mkdir()
    (tok_dir / "vocab.json").write_text("{}")
    spec = _spec("spwords")
    assert remembered_spec(tok_dir) is None
    remember_spec(tok_dir, spec, "abc123")
    found = remembered_spec(tok_dir)
    assert found is not None and found.spec == spec and found.tokenizer_sha256 == "abc123"
    assert Path(found.path).is_file()
    (tok_dir / "vocab.json").write_text('{"a": 0}')  # another file: another key
    assert remembered_spec(tok_dir) is None
    (tok_dir / "vocab.json").write_text("{}")
    st = os.stat(tok_dir / "vocab.json")
    os.utime(tok_dir / "vocab.json", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # same size, touched: another key
    assert remembered_spec(tok_dir) is None


class _ColdClass(_CharClass):
    """A stand-in class whose first call in a process is slow (cold caches), the rest quick."""

    warm = False

    def tokenize(self, text: str) -> list[str]:
        if not _ColdClass.warm:
            import time

            time.sleep(0.3)
            _ColdClass.warm = True
        return super().tokenize(text)


def test_the_fast_path_is_judged_on_the_fastest_slice_not_a_cold_start():
    # at the average of the first two slices (~32 kB in ~0.3 s) the rest (~250 kB) would take ~2.3 s, more than the
    # 0.5 s floor; at the second slice's speed it takes milliseconds: the class finishes alone
    choice = _FastChoice(lambda warn: pytest.fail("the fast path was prepared"), background=True)
    chunks = _chunks(2)
    sel = Selection(floor=SetupFloor(0.5, "a test"))
    with _Workers(1, helper=True) as pool:
        out = list(_encoded(pool, choice, _ColdClass(), _spec("paddlenlp"), chunks, sel, _size(chunks)))
    assert not choice.started and sel.class_documents == 200 and len(out) > 2
    assert sel.class_seconds >= 0.3  # the cold start was there
    assert sel.class_best_bytes_per_s > 10 * sel.class_bytes / sel.class_seconds
