"""PaddleNLP's (Megatron's) mmap indexed-dataset format, written and read with numpy alone.

PREFIX.bin holds the token ids back to back. PREFIX.idx is:
    b"MMIDIDX\\x00\\x00" | u64 version (1) | u8 dtype code | u64 n_sequences | u64 n_doc_idx
    | int32 sizes[n_sequences] | int64 byte pointers[n_sequences] | int64 doc_idx[n_doc_idx]
(paddlenlp/data/indexed_dataset.py, MMapIndexedDataset.Index). llmpt writes one sequence per document, as
PaddleNLP's create_pretraining_data.py does without sentence splitting, so doc_idx = 0..n.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAGIC = b"MMIDIDX\x00\x00"
VERSION = 1
DTYPE_CODES = {
    np.dtype(np.uint8): 1,
    np.dtype(np.int8): 2,
    np.dtype(np.int16): 3,
    np.dtype(np.int32): 4,
    np.dtype(np.int64): 5,
    np.dtype(np.float64): 6,
    np.dtype(np.float32): 7,
    np.dtype(np.uint16): 8,
    np.dtype(np.uint32): 9,
    np.dtype(np.uint64): 10,
}
CODE_DTYPES = {v: k for k, v in DTYPE_CODES.items()}
HEADER_BYTES = len(MAGIC) + 8 + 1 + 8 + 8


class IndexFormatError(ValueError):
    """An .idx/.bin pair that is not what the format says."""


def token_dtype(vocab_size: int) -> np.dtype:
    # PaddleNLP's rule: uint16 when every id fits below 2**16 - 1, else int32
    return np.dtype(np.uint16) if vocab_size < 2**16 - 1 else np.dtype(np.int32)


def index_bytes(sizes: np.ndarray, doc_idx: np.ndarray, dtype: np.dtype) -> bytes:
    """The .idx file contents for sequences of `sizes` tokens of `dtype`."""
    sizes = np.asarray(sizes, dtype=np.int32)
    pointers = np.zeros(len(sizes), dtype=np.int64)
    if len(sizes) > 1:
        np.cumsum(sizes[:-1].astype(np.int64) * dtype.itemsize, out=pointers[1:])
    header = MAGIC + struct.pack("<Q", VERSION) + struct.pack("<B", DTYPE_CODES[dtype])
    header += struct.pack("<Q", len(sizes)) + struct.pack("<Q", len(doc_idx))
    return header + sizes.tobytes() + pointers.tobytes() + np.asarray(doc_idx, dtype=np.int64).tobytes()


def write_index(path: Path, sizes_path: Path, dtype: np.dtype, block: int = 1 << 20) -> None:
    """The .idx for one sequence per document, streamed from a file of int32 sizes `block` entries at a time, so
    that memory does not grow with the number of documents (the same bytes as index_bytes)."""
    n = sizes_path.stat().st_size // 4
    header = MAGIC + struct.pack("<Q", VERSION) + struct.pack("<B", DTYPE_CODES[dtype])
    header += struct.pack("<Q", n) + struct.pack("<Q", n + 1)
    with path.open("wb") as out:
        out.write(header)
        with sizes_path.open("rb") as f:  # sizes
            for data in iter(lambda: f.read(4 * block), b""):
                out.write(data)
        offset = 0
        with sizes_path.open("rb") as f:  # byte pointers: the running sum of the sizes before each sequence
            for data in iter(lambda: f.read(4 * block), b""):
                sizes = np.frombuffer(data, dtype=np.int32).astype(np.int64) * dtype.itemsize
                pointers = np.cumsum(sizes) - sizes + offset
                out.write(pointers.tobytes())
                offset += int(sizes.sum())
        for start in range(0, n + 1, block):  # doc_idx = 0..n
            out.write(np.arange(start, min(start + block, n + 1), dtype=np.int64).tobytes())


@dataclass(frozen=True)
class IndexedTokens:
    """A read-only view of PREFIX.bin/.idx."""

    dtype: np.dtype
    sizes: np.ndarray
    pointers: np.ndarray
    doc_idx: np.ndarray
    tokens: np.ndarray  # memory-mapped .bin

    def __len__(self) -> int:
        return len(self.sizes)

    def __getitem__(self, i: int) -> np.ndarray:
        start = self.pointers[i] // self.dtype.itemsize
        return self.tokens[start : start + self.sizes[i]]


def read_index(prefix: str | Path) -> IndexedTokens:
    """Open PREFIX.idx + PREFIX.bin, checking that they agree; IndexFormatError says what is wrong."""
    idx_path, bin_path = Path(f"{prefix}.idx"), Path(f"{prefix}.bin")
    raw = idx_path.read_bytes()
    if len(raw) < HEADER_BYTES or raw[: len(MAGIC)] != MAGIC:
        raise IndexFormatError(f"{idx_path}: not an mmap index (bad magic header)")
    (version,) = struct.unpack_from("<Q", raw, len(MAGIC))
    if version != VERSION:
        raise IndexFormatError(f"{idx_path}: index version {version}, expected {VERSION}")
    (code,) = struct.unpack_from("<B", raw, len(MAGIC) + 8)
    if code not in CODE_DTYPES:
        raise IndexFormatError(f"{idx_path}: unknown dtype code {code}")
    dtype = CODE_DTYPES[code]
    n, n_doc = struct.unpack_from("<QQ", raw, len(MAGIC) + 9)
    expected = HEADER_BYTES + n * 4 + n * 8 + n_doc * 8
    if len(raw) != expected:
        raise IndexFormatError(f"{idx_path}: {len(raw)} bytes, expected {expected} for {n} sequences (truncated?)")
    off = HEADER_BYTES
    sizes = np.frombuffer(raw, dtype=np.int32, count=n, offset=off)
    pointers = np.frombuffer(raw, dtype=np.int64, count=n, offset=off + 4 * n)
    doc_idx = np.frombuffer(raw, dtype=np.int64, count=n_doc, offset=off + 12 * n)
    need = int(sizes.astype(np.int64).sum()) * dtype.itemsize
    have = bin_path.stat().st_size if bin_path.exists() else -1
    if have != need:
        raise IndexFormatError(
            f"{bin_path}: {have} bytes but {idx_path} describes {need}"
            + (" (missing)" if have < 0 else " (truncated, or .bin and .idx from different runs)")
        )
    tokens = np.memmap(bin_path, dtype=dtype, mode="r") if need else np.zeros(0, dtype=dtype)
    return IndexedTokens(dtype, sizes, pointers, doc_idx, tokens)
