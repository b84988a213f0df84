"""File-system checks shared by the commands that write."""

from __future__ import annotations

import os
from pathlib import Path


def probe_writable(directory: Path) -> None:
    """Create `directory` if needed and write/remove a probe file in it; OSError if the machine refuses."""
    directory.mkdir(parents=True, exist_ok=True)
    probe = directory / f".llmpt-write-test-{os.getpid()}"
    probe.write_bytes(b"")
    probe.unlink()


def cache_dir() -> Path:
    """llmpt's cache (prepared shipped corpus, verified data hashes, matrix --verify results): $LLMPT_CACHE or
    ~/.cache/llmpt."""
    return Path(os.environ.get("LLMPT_CACHE", Path.home() / ".cache" / "llmpt"))
