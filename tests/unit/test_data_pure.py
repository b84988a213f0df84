"""prepare-data's pure parts (numpy only): the mmap index format, input discovery and chunking, bad lines."""

from __future__ import annotations

import gzip
import re

import numpy as np
import pytest

from llmpt.data.encode import ChunkResult, _clean, _documents
from llmpt.data.inputs import Chunk, DataError, discover_inputs, iter_chunks
from llmpt.data.mmap import IndexFormatError, index_bytes, read_index, token_dtype


def _write(prefix, seqs, dtype):
    dtype = np.dtype(dtype)
    with open(f"{prefix}.bin", "wb") as f:
        for s in seqs:
            f.write(np.asarray(s, dtype=dtype).tobytes())
    sizes = np.array([len(s) for s in seqs], dtype=np.int32)
    with open(f"{prefix}.idx", "wb") as f:
        f.write(index_bytes(sizes, np.arange(len(seqs) + 1), dtype))


@pytest.mark.parametrize("dtype", ["uint16", "int32"])
def test_index_round_trip(tmp_path, dtype):
    seqs = [[1, 2, 3], [4], [5, 6, 7, 8, 9], list(range(1000, 1300))]
    _write(tmp_path / "d", seqs, dtype)
    ds = read_index(tmp_path / "d")
    assert ds.dtype == np.dtype(dtype) and len(ds) == 4
    assert [ds[i].tolist() for i in range(4)] == seqs
    assert ds.doc_idx.tolist() == [0, 1, 2, 3, 4]
    item = np.dtype(dtype).itemsize
    assert ds.pointers.tolist() == [0, 3 * item, 4 * item, 9 * item]


def test_index_header_is_paddlenlps(tmp_path):
    _write(tmp_path / "d", [[7, 8]], "uint16")
    raw = (tmp_path / "d.idx").read_bytes()
    assert raw[:9] == b"MMIDIDX\x00\x00"
    assert raw[9:17] == (1).to_bytes(8, "little") and raw[17] == 8  # version 1, dtype code 8 = uint16
    assert len(raw) == 34 + 4 + 8 + 16


def test_corrupt_pairs_are_named(tmp_path):
    _write(tmp_path / "d", [[1, 2, 3], [4, 5]], "uint16")
    (tmp_path / "d.bin").write_bytes((tmp_path / "d.bin").read_bytes()[:-2])
    with pytest.raises(IndexFormatError, match="truncated, or .bin and .idx from different runs"):
        read_index(tmp_path / "d")
    (tmp_path / "d.idx").write_bytes(b"NOTANIDX" + b"\0" * 40)
    with pytest.raises(IndexFormatError, match="bad magic header"):
        read_index(tmp_path / "d")
    _write(tmp_path / "e", [[1]], "uint16")
    (tmp_path / "e.idx").write_bytes((tmp_path / "e.idx").read_bytes()[:-3])
    with pytest.raises(IndexFormatError, match="expected"):
        read_index(tmp_path / "e")


def test_token_dtype_follows_vocab_size():
    assert token_dtype(32000) == np.uint16
    assert token_dtype(65534) == np.uint16
    assert token_dtype(65535) == np.int32
    assert token_dtype(151936) == np.int32


def test_discover_files_dirs_globs(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    for name in ("d/b.jsonl", "d/a.txt.gz", "d/sub/c.json", "d/notes.md", "x.jsonl"):
        (tmp_path / name).write_bytes(b"")
    found = discover_inputs([str(tmp_path / "d"), str(tmp_path / "*.jsonl")])
    assert [f.path.name for f in found] == ["a.txt.gz", "b.jsonl", "c.json", "x.jsonl"]
    assert [f.fmt for f in found] == ["text", "jsonl", "jsonl", "jsonl"]
    assert discover_inputs([str(tmp_path / "d/notes.md")], fmt="text")[0].fmt == "text"
    with pytest.raises(DataError, match="no such file, directory or glob match"):
        discover_inputs([str(tmp_path / "missing*.jsonl")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="has no .jsonl/.json/.txt files"):
        discover_inputs([str(tmp_path / "empty")])


def test_chunks_keep_documents_whole_and_count_lines(tmp_path):
    text = "".join(f"doc {i} line 1\ndoc {i} line 2\n\n" for i in range(50))
    p = tmp_path / "t.txt.gz"
    with gzip.open(p, "wt") as f:
        f.write(text)
    chunks = list(iter_chunks(discover_inputs([str(p)]), chunk_bytes=100))
    assert len(chunks) > 5
    assert b"".join(c.data for c in chunks).decode() == text
    for c in chunks:
        assert c.data.endswith(b"\n\n")  # cut only at blank lines
        first = c.data.split(b"\n")[0].decode()
        assert first.endswith("line 1")
        i = int(first.split()[1])
        assert c.first_line == 3 * i + 1


def test_bad_lines_are_counted_with_file_and_line():
    data = b'{"text": "ok"}\nnot json\n{"other": 1}\n\n{"text": 5}\n{"text": "\xff"}\n' + b'{"text": "caf\xe9"}\n'
    r = ChunkResult(tokens=b"", sizes=np.zeros(0))
    docs = _documents(Chunk("f.jsonl", "jsonl", 10, data), "text", r)
    assert docs == ["ok"]
    reasons = [(line, why.split(" (")[0]) for _, line, why in r.bad_lines]
    assert reasons == [
        (11, "invalid JSON"),
        (12, "missing key 'text'"),
        (14, "'text' is not a string"),
        (15, "invalid UTF-8"),
        (16, "invalid UTF-8"),
    ]
    assert r.bad == 5


def test_plain_text_documents_and_invalid_utf8():
    data = b"first doc\nstill first\n\n\nsecond \xff doc\nmore\n\nthird\n"
    r = ChunkResult(tokens=b"", sizes=np.zeros(0))
    docs = _documents(Chunk("f.txt", "text", 1, data), "text", r)
    assert docs == ["first doc\nstill first", "third"]
    assert r.bad_lines == [("f.txt", 5, "invalid UTF-8")]


def test_clean_matches_paddlenlps_repeat_collapse():
    for text in ["a" * 101 + "b", "  x" + "=" * 500 + "y  ", "é" * 100, "ok", "z" * 1000]:
        assert _clean(text) == re.sub(r"(.)\1{100,}", r"\1", text).strip()
