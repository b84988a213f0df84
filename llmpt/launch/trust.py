"""Weights that could have been planted: pickled files llmpt would load (paddle.load unpickles .pdparams, .pdopt, and
the checkpoint's .pth/.pkl state, and unpickling can run any code) in a place other users can write. A warning, not
a refusal: shared group directories are common on clusters, and only the user knows whom they share with."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from llmpt.run_config import RunConfig

PICKLED = (".pdparams", ".pdopt", ".pkl", ".pickle", ".pth", ".pt")


def _others_can_write(path: Path) -> str | None:
    """Why users other than this one can change `path` (group/world-writable, another owner), or None."""
    try:
        st = path.lstat()
    except OSError:
        return None
    why = []
    if st.st_uid != os.geteuid():
        why.append(f"owned by uid {st.st_uid}")
    if st.st_mode & stat.S_IWOTH:
        why.append("world-writable")
    elif st.st_mode & stat.S_IWGRP:
        why.append("group-writable")
    return f"{', '.join(why)} (mode {stat.S_IMODE(st.st_mode):04o})" if why else None


def pickle_warning(flag: str, directory: str | Path | None) -> str | None:
    """One line when `directory` (what `flag` loads) holds pickled files and it, or one of them, can be written by
    other users; None otherwise."""
    if directory is None:
        return None
    root = Path(directory)
    if not root.is_dir():
        return None
    pickled = sorted(p for p in root.rglob("*") if p.suffix in PICKLED and p.is_file())
    if not pickled:
        return None
    for path in (root, *pickled):
        if (why := _others_can_write(path)) is not None:
            return (
                f"{flag} {root}: loads pickled files ({', '.join(p.name for p in pickled[:3])}"
                f"{', …' if len(pickled) > 3 else ''}; unpickling can run code) and {path} is {why}: other users "
                "could have replaced them; load only weights you trust"
            )
    return None


def pickle_warnings(cfg: RunConfig) -> list[str]:
    """The warnings for what a run loads: its --init-from weights and the checkpoint it resumes from."""
    found = (pickle_warning("--init-from", cfg.model.init_from), pickle_warning("--resume", cfg.resume_from))
    return [w for w in found if w]
