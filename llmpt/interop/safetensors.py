"""The safetensors format, read and written by llmpt itself: headers without numpy (a shape check reads no tensor
data), tensors through numpy memory maps, bfloat16 as its 16 bits (numpy has no bfloat16), shards with an index.

Format (github.com/huggingface/safetensors): 8 bytes little-endian header length N, N bytes of JSON
{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}, then the data, offsets counted
from the end of the header."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
# numpy's name of each safetensors dtype; BF16 is read as its raw 16 bits (see to_float32)
NUMPY_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
                "I8": "i1", "U8": "u1", "BOOL": "?"}  # fmt: skip
ITEM_SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
MAX_HEADER = 100 * 2**20  # safetensors' own limit


class SafetensorsError(ValueError):
    """A file that is not a readable safetensors file: says which and why."""


@dataclass(frozen=True)
class TensorInfo:
    """One tensor's header entry and the file that holds it."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    file: Path
    begin: int  # absolute byte offsets in `file`
    end: int


def read_header(path: Path) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Every tensor of one file (no data read) and the file's metadata; SafetensorsError when it is not one, or
    when a tensor's bytes would lie beyond the end of the file (a truncated download)."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise SafetensorsError(f"{path}: {size} bytes, too short for a safetensors file")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER or 8 + n > size:
            raise SafetensorsError(f"{path}: not a safetensors file (header length {n} in a {size}-byte file)")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise SafetensorsError(f"{path}: not a safetensors file (header is not JSON: {e})") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{path}: not a safetensors file (header is not a JSON object)")
    meta = header.pop("__metadata__", None) or {}
    tensors: dict[str, TensorInfo] = {}
    for name, entry in header.items():
        try:
            dtype, shape, (begin, end) = entry["dtype"], tuple(int(d) for d in entry["shape"]), entry["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise SafetensorsError(f"{path}: tensor {name!r} has a malformed header entry") from None
        if dtype not in ITEM_SIZES:
            raise SafetensorsError(f"{path}: tensor {name!r} has dtype {dtype}, which llmpt does not read")
        numel = 1
        for d in shape:
            numel *= d
        if end - begin != numel * ITEM_SIZES[dtype] or 8 + n + end > size:
            raise SafetensorsError(
                f"{path}: tensor {name!r} ({dtype} {list(shape)}) lies beyond the end of the file or disagrees "
                "with its size (truncated?)"
            )
        tensors[name] = TensorInfo(name, dtype, shape, path, 8 + n + begin, 8 + n + end)
    return tensors, meta


def weight_files(directory: Path) -> list[Path]:
    """The safetensors files of a model directory: the index's shards, else model.safetensors, else every
    *.safetensors file (sorted)."""
    index = directory / INDEX_NAME
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise SafetensorsError(f"{index}: not a safetensors index ({e})") from None
        files = sorted(set(weight_map.values()))
        missing = [f for f in files if not (directory / f).is_file()]
        if missing:
            raise SafetensorsError(f"{index}: names {missing[0]}, which is not in {directory} (an incomplete copy?)")
        return [directory / f for f in files]
    if (directory / SINGLE_NAME).is_file():
        return [directory / SINGLE_NAME]
    return sorted(directory.glob("*.safetensors"))


def read_headers(directory: Path) -> dict[str, TensorInfo]:
    """Every tensor of a directory's safetensors files, by name (a name in two files is refused)."""
    out: dict[str, TensorInfo] = {}
    for f in weight_files(directory):
        tensors, _ = read_header(f)
        for name, info in tensors.items():
            if name in out:
                raise SafetensorsError(f"{directory}: tensor {name!r} is in both {out[name].file.name} and {f.name}")
            out[name] = info
    return out


def load(info: TensorInfo):
    """One tensor as a numpy array (a read-only memory map; BF16 as uint16 bits)."""
    import numpy as np

    count = (info.end - info.begin) // ITEM_SIZES[info.dtype]
    arr = np.memmap(info.file, dtype=NUMPY_DTYPES[info.dtype], mode="r", offset=info.begin, shape=(count,))
    return arr.reshape(info.shape)


def to_float32(arr, dtype: str):
    """A tensor's values as float32: BF16 bits shifted into the high half of a float32 (exact); others cast."""
    import numpy as np

    if dtype == "BF16":
        return (np.asarray(arr, dtype=np.uint32) << 16).view(np.float32)
    return np.asarray(arr, dtype=np.float32)


def float32_to_bf16_bits(arr):
    """float32 -> bfloat16 bits, rounding to nearest even (as torch and Paddle cast); NaN stays NaN."""
    import numpy as np

    bits = np.ascontiguousarray(arr, dtype=np.float32).view(np.uint32)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(arr)
    if nan.any():
        rounded[nan] = 0x7FC0
    return rounded


def encode(arr, dtype: str):
    """(safetensors dtype, bytes) of a float32 array written as `dtype` (F32, F16 or BF16), or of another array as
    it is."""
    import numpy as np

    if dtype == "BF16":
        return "BF16", float32_to_bf16_bits(arr).tobytes()
    if dtype == "F16":
        return "F16", np.ascontiguousarray(arr, dtype="<f2").tobytes()
    if dtype == "F32":
        return "F32", np.ascontiguousarray(arr, dtype="<f4").tobytes()
    raise ValueError(f"cannot write dtype {dtype}")


@dataclass(frozen=True)
class Pending:
    """A tensor to write: its dtype, shape and byte count known up front (shards are planned from them), its bytes
    produced only when its file is written (one tensor in memory at a time)."""

    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    data: Callable[[], bytes]


def pending(arr, dtype: str) -> Pending:
    """`arr` (float32, or any array for a non-float tensor) to be written as `dtype`, converted when written."""
    numel = 1
    for d in arr.shape:
        numel *= d
    return Pending(dtype, tuple(arr.shape), numel * ITEM_SIZES[dtype], lambda: encode(arr, dtype)[1])


def write_file(path: Path, tensors: dict[str, Pending], metadata: dict[str, str]) -> None:
    """One safetensors file, tensors in the given order (the header is padded with spaces to 8 bytes, as the
    reference writer does)."""
    header: dict[str, Any] = {"__metadata__": metadata}
    offset = 0
    for name, t in tensors.items():
        header[name] = {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": [offset, offset + t.nbytes]}
        offset += t.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for name, t in tensors.items():
            data = t.data()
            if len(data) != t.nbytes:
                raise RuntimeError(f"{name}: {len(data)} bytes, expected {t.nbytes}")
            f.write(data)


def plan_shards(tensors: dict[str, Pending], max_shard_bytes: int) -> list[list[str]]:
    """Tensor names per shard, in order: a new shard when the next tensor would pass `max_shard_bytes` (a tensor
    larger than that gets a shard of its own), as transformers' save_pretrained splits."""
    shards: list[list[str]] = [[]]
    size = 0
    for name, t in tensors.items():
        if shards[-1] and size + t.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += t.nbytes
    return shards


def write_sharded(
    out_dir: Path, tensors: dict[str, Pending], metadata: dict[str, str], max_shard_bytes: int
) -> list[Path]:
    """model.safetensors, or model-0000K-of-0000N.safetensors + model.safetensors.index.json when the tensors exceed
    `max_shard_bytes`, named as transformers' save_pretrained names them. The files written, index last."""
    shards = plan_shards(tensors, max_shard_bytes)
    if len(shards) == 1:
        write_file(out_dir / SINGLE_NAME, tensors, metadata)
        return [out_dir / SINGLE_NAME]
    written, weight_map = [], {}
    for i, names in enumerate(shards, 1):
        file = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        write_file(out_dir / file, {n: tensors[n] for n in names}, metadata)
        written.append(out_dir / file)
        weight_map.update(dict.fromkeys(names, file))
    index = {"metadata": {"total_size": sum(t.nbytes for t in tensors.values())}, "weight_map": weight_map}
    (out_dir / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
    return [*written, out_dir / INDEX_NAME]
