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
