"""The errors llmpt raises for bad input; the CLI turns each into one line, a hint and exit code 2."""

from __future__ import annotations

import difflib
from typing import Any


class LlmptError(Exception):
    """A problem with what the user asked for: `message` says what was given and what is allowed,
    `hint` says what to run next."""

    exit_code = 2  # bad input; failures of a run that was allowed to start use 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class LlmptWarning(UserWarning):
    """Something the user should know that does not stop the command (shown as one yellow line)."""


class StrategyError(LlmptError):
    """A strategy name, preset file or strategy/world-size combination that cannot run."""


class ModelError(LlmptError):
    """An unknown model, or a model whose shape or capabilities conflict with the strategy."""


class ConfigError(LlmptError):
    """A config file or --set override that cannot be read or does not fit the schema."""


def describe_validation_error(source: str, exc: Any, model: type | None = None, prefix: str = "") -> str:
    """One line for the first problem in a pydantic ValidationError: `source: a.b: what (got x)`.

    With `model`, an unknown key also lists the keys allowed at that place; `prefix` names the section the
    model was validated as (e.g. "train.").
    """
    err = exc.errors()[0]
    loc = prefix + ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        allowed = _fields_at(model, err["loc"][:-1]) if model is not None else []
        tail = f"; allowed: {', '.join(allowed)}" if allowed else ""
        close = difflib.get_close_matches(str(err["loc"][-1]), allowed, n=1, cutoff=0.6)
        mean = f" (did you mean '{close[0]}'?)" if close else ""
        return f"{source}: unknown key '{loc}'{mean}{tail}"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    msg = msg[0].lower() + msg[1:] if msg else msg
    got = err.get("input")
    shown = "" if isinstance(got, dict) or got is None and err["type"] == "missing" else f" (got {got!r})"
    return f"{source}: {loc}: {msg}{shown}"


def _fields_at(model: type, path: tuple[Any, ...]) -> list[str]:
    # Walk nested pydantic models along the error location to list the keys allowed there.
    for key in path:
        field = getattr(model, "model_fields", {}).get(key)
        if field is None or not hasattr(field.annotation, "model_fields"):
            return []
        model = field.annotation
    return list(getattr(model, "model_fields", {}))
