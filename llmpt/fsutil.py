"""File-system checks shared by the commands that write."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import Any


def check_writable(directory: Path) -> None:
    """`directory` is, or could be created as, a directory this process can write in; checked without creating
    anything that stays (a refusal must leave every tree as it was). OSError naming the path otherwise.

    The nearest existing ancestor decides: it must be a directory, os.access must allow writing there, and a probe
    directory made in it is removed at once (root passes os.access everywhere, but not in /proc or /sys)."""
    directory = Path(os.path.abspath(directory))
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(existing))
    if not os.access(existing, os.W_OK | os.X_OK):
        err = errno.EROFS if _read_only(existing) else errno.EACCES
        raise OSError(err, os.strerror(err), str(existing))
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".llmpt-write-test-", dir=existing))
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(existing)) from None


def why_unwritable(directory: Path, e: OSError) -> str:
    """check_writable's OSError in words, for a one-line refusal."""
    reason = e.strerror or str(e)
    if e.filename and e.filename != os.path.abspath(directory):
        if e.errno == errno.ENOTDIR:
            return f"{e.filename} is a file, not a directory"
        return f"cannot create it in {e.filename} ({reason})"
    if e.errno == errno.ENOTDIR:
        return "it is a file, not a directory"
    return f"cannot write there ({reason})"


def _read_only(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def probe_writable(directory: Path) -> None:
    """Create `directory` if needed and write/remove a probe file in it; OSError if the machine refuses. Only once
    every check passed: a refusal uses check_writable, which creates nothing."""
    directory.mkdir(parents=True, exist_ok=True)
    probe = directory / f".llmpt-write-test-{os.getpid()}"
    probe.write_bytes(b"")
    probe.unlink()


def cache_dir() -> Path:
    """llmpt's cache (prepared shipped corpus, verified data hashes, matrix --verify results): $LLMPT_CACHE or
    ~/.cache/llmpt."""
    return Path(os.environ.get("LLMPT_CACHE", Path.home() / ".cache" / "llmpt"))


def sha256_file(path: Path) -> str:
    """The SHA-256 of a file, read in 4 MiB blocks."""
    import hashlib

    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def load_shipped_yaml(path: Path) -> Any:
    """One of llmpt's own data files (registry, matrix, families, devices, seed table), parsed with libyaml's C
    loader where PyYAML has it (10x the pure-Python parser: the CLI reads several hundred lines of them per command),
    else the same safe loader in Python. Safe either way: plain YAML, no tags."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(path.read_text(encoding="utf-8"), Loader=loader)  # noqa: S506 - a safe loader, C or Python
