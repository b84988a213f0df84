"""What llmpt checks before it changes a Paddle or PaddleNLP function (cpu_backend's patches, checkpoint_fixes'
fixes): that the installed release still has the function llmpt read, with the parameters it read."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any


def signature_problems(fn: Callable[..., Any], expected: tuple[str, ...], kind: str) -> list[str]:
    """[] when `fn` takes exactly the parameters `expected` (by name, in order); else one line saying what it takes.
    `kind`: "patch" or "fix", for the line."""
    try:
        found = tuple(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        found = None
    return [] if found == expected else [f"parameters {found}, the {kind} expects {expected}"]
