"""What llmpt checks before it changes a Paddle or PaddleNLP function (cpu_backend's patches, checkpoint_fixes'
fixes): that the installed release still has the function llmpt read, with the parameters it read."""

from __future__ import annotations

import inspect
import types
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


class ModuleProxy(types.ModuleType):
    """A stand-in for an object (a module) inside one Paddle or PaddleNLP module only: answers the overridden
    attributes, forwards the rest to the real object (cpu_backend's "proxy" patches, paddlenlp fixes' "proxy")."""

    def __init__(self, real, **overrides):
        super().__init__(getattr(real, "__name__", type(real).__name__))
        object.__setattr__(self, "_real", real)
        object.__setattr__(self, "_over", dict(overrides))

    def __getattr__(self, name):
        over = object.__getattribute__(self, "_over")
        if name in over:
            return over[name]
        return getattr(object.__getattribute__(self, "_real"), name)
