"""Finding input files and cutting them into chunks of whole documents for the encoding workers."""

from __future__ import annotations

import glob
import gzip
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from llmpt.errors import LlmptError

Format = Literal["jsonl", "text"]
KNOWN_SUFFIXES = (".jsonl", ".json", ".txt", ".text")
MAX_LINE_BYTES = 32 << 20  # one document per line: a longer line is a file without line breaks, not a document
CHUNK_BYTES = 1 << 20  # ~1 MB of raw input per worker task: large enough to amortise IPC, small for progress


class DataError(LlmptError):
    """Bad input to prepare-data: missing files, bad lines under --strict, empty corpus, unwritable output."""


@dataclass(frozen=True)
class InputFile:
    path: Path
    fmt: Format

    @property
    def gzipped(self) -> bool:
        return self.path.suffix == ".gz"


def _format_of(path: Path, fmt: str) -> Format:
    if fmt in ("jsonl", "text"):
        return fmt  # type: ignore[return-value]
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    return "jsonl" if name.endswith((".jsonl", ".json")) else "text"


def _wanted(path: Path) -> bool:
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    return name.endswith(KNOWN_SUFFIXES)


def discover_inputs(specs: list[str], fmt: str = "auto") -> list[InputFile]:
    """Files from paths, directories (recursive, sorted, known suffixes) and globs, in the order given."""
    files: list[Path] = []
    for spec in specs:
        p = Path(spec)
        if p.is_file():
            files.append(p)
        elif p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and _wanted(f))
            if not found:
                raise DataError(
                    f"input directory {spec} has no .jsonl/.json/.txt files (gzip'd or not)",
                    "pass the files themselves, or a glob such as 'dir/*.jsonl'",
                )
            files.extend(found)
        else:
            matched = sorted(Path(m) for m in glob.glob(spec, recursive=True) if os.path.isfile(m))
            if not matched:
                raise DataError(f"input {spec}: no such file, directory or glob match")
            files.extend(matched)
    return [InputFile(f, _format_of(f, fmt)) for f in files]


@dataclass(frozen=True)
class Chunk:
    """Raw bytes of whole documents from one file, and the line number the bytes start at (1-based)."""

    file: str
    fmt: Format
    first_line: int
    data: bytes


_BLANK_LINE = re.compile(rb"\n[ \t\r\f\v]*\n")  # a text document ends at a line that is only whitespace


def split_chunk(chunk: Chunk, nbytes: int) -> tuple[Chunk, Chunk | None]:
    """The chunk's first ~nbytes of whole documents and the rest (None when the chunk is not longer): cut after
    a line end (jsonl) or after a blank line (text), so that both parts hold exactly the chunk's documents."""
    if len(chunk.data) <= nbytes:
        return chunk, None
    if chunk.fmt == "jsonl":
        cut = chunk.data.find(b"\n", max(nbytes - 1, 0)) + 1
    else:
        m = _BLANK_LINE.search(chunk.data, max(nbytes - 1, 0))
        cut = m.end() if m else 0
    if cut <= 0 or cut >= len(chunk.data):
        return chunk, None
    head, tail = chunk.data[:cut], chunk.data[cut:]
    return replace(chunk, data=head), replace(chunk, first_line=chunk.first_line + head.count(b"\n"), data=tail)


def _open(f: InputFile):
    return gzip.open(f.path, "rb") if f.gzipped else f.path.open("rb")


def _line_too_long(f: InputFile, line_no: int, fh, seen: int) -> DataError:
    """The refusal for a line past MAX_LINE_BYTES, with its whole length (read to its end, not kept)."""
    for block in iter(lambda: fh.read(1 << 22), b""):
        end = block.find(b"\n")
        if end >= 0:
            seen += end
            break
        seen += len(block)
    return DataError(
        f"input {f.path}:{line_no}: one line of {seen / 2**20:.0f} MB, more than the "
        f"{MAX_LINE_BYTES >> 20} MB a document may have (a file without line breaks?)",
        "put one document per line (jsonl) or separate documents by blank lines (text)",
    )


def _jsonl_chunks(f: InputFile, fh, chunk_bytes: int) -> Iterator[Chunk]:
    # blocks cut at their last line end: no Python work per line (the parent reads for every worker)
    carry, line_no = b"", 1
    for block in iter(lambda: fh.read(chunk_bytes), b""):
        data = carry + block
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            if len(data) > MAX_LINE_BYTES:
                raise _line_too_long(f, line_no, fh, len(data))
            carry = data
            continue
        carry = data[cut:]
        if len(carry) > MAX_LINE_BYTES:
            raise _line_too_long(f, line_no + data.count(b"\n", 0, cut), fh, len(carry))
        chunk = data[:cut]
        longest = max(map(len, chunk.split(b"\n"))) if len(chunk) > MAX_LINE_BYTES else 0
        if longest > MAX_LINE_BYTES:
            first = next(i for i, ln in enumerate(chunk.split(b"\n")) if len(ln) > MAX_LINE_BYTES)
            raise _line_too_long(f, line_no + first, fh, longest)
        yield Chunk(str(f.path), f.fmt, line_no, chunk)
        line_no += chunk.count(b"\n")
    if carry:
        yield Chunk(str(f.path), f.fmt, line_no, carry)


def iter_chunks(files: list[InputFile], chunk_bytes: int = CHUNK_BYTES) -> Iterator[Chunk]:
    """Chunks of ~chunk_bytes; jsonl cut at line ends, text cut at blank lines (document boundaries)."""
    for f in files:
        try:
            with _open(f) as fh:
                if f.fmt == "jsonl":
                    yield from _jsonl_chunks(f, fh, chunk_bytes)
                    continue
                buf: list[bytes] = []
                size, start, line_no = 0, 1, 0
                for line in fh:
                    line_no += 1
                    if len(line) > MAX_LINE_BYTES:
                        raise DataError(
                            f"input {f.path}:{line_no}: one line of {len(line) / 2**20:.0f} MB, more than the "
                            f"{MAX_LINE_BYTES >> 20} MB a document may have (a file without line breaks?)",
                            "put one document per line (jsonl) or separate documents by blank lines (text)",
                        )
                    buf.append(line)
                    size += len(line)
                    if size >= chunk_bytes and not line.strip():
                        yield Chunk(str(f.path), f.fmt, start, b"".join(buf))
                        buf, size, start = [], 0, line_no + 1
                if buf:
                    yield Chunk(str(f.path), f.fmt, start, b"".join(buf))
        except (OSError, EOFError, gzip.BadGzipFile) as e:
            raise DataError(f"input {f.path}: cannot read ({e})") from None
