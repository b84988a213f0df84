"""Which checkpoints are complete: a marker written after every rank finished its part of checkpoint-N.

PaddleNLP writes checkpoint-N file by file, so a job killed (or out of disk) mid-save leaves a directory that looks
like a checkpoint. The marker lists every file with its size; a directory without it, or whose files no longer
match it, is never resumed from.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from llmpt.run_dir import RunDir

MARKER = "llmpt-complete.json"


def _files(ckpt: Path) -> dict[str, int]:
    return {
        str(p.relative_to(ckpt)): p.stat().st_size
        for p in sorted(ckpt.rglob("*"))
        if p.is_file() and p.name != MARKER and not p.name.endswith(".tmp")
    }


def mark_complete(ckpt: Path, step: int, run: dict | None = None) -> dict[str, int]:
    """Write the marker atomically (temp file, fsync, rename) once the checkpoint's files are all on disk; `run`:
    the run that saved it (llmpt.resolve.resume.SavedRun), which a resume on another layout checks against.
    Returns the files and their sizes."""
    files = _files(ckpt)
    tmp = ckpt / (MARKER + ".tmp")
    with tmp.open("w") as f:
        json.dump({"step": step, "files": files, **({"run": run} if run else {})}, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(ckpt / MARKER)
    return files


def read_marker(ckpt: Path) -> dict | None:
    """The marker's content (step, files, run), or None when there is no readable marker."""
    try:
        marker = json.loads((ckpt / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def is_complete(ckpt: Path) -> bool:
    marker = ckpt / MARKER
    try:
        recorded = json.loads(marker.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return recorded == _files(ckpt)


def checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    """Every checkpoint-N directory, oldest first."""
    return RunDir(output_dir).checkpoints()


def last_complete(output_dir: Path) -> Path | None:
    """The newest checkpoint whose marker matches its files."""
    for _, p in reversed(checkpoints(output_dir)):
        if is_complete(p):
            return p
    return None
