"""Layered settings: defaults < preset < --config FILE < named flags < --set a.b=v, merged before one validation."""

from __future__ import annotations

from typing import Any

import yaml

from llmpt.errors import ConfigError


def parse_set(items: list[str]) -> dict[str, Any]:
    """`--set train.learning_rate=1e-3 --set strategy.batch.grad_accum=4` -> a nested dict (values read as YAML)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip() or any(not part for part in key.split(".")):
            raise ConfigError(f"--set {item!r}: expected KEY.PATH=VALUE, e.g. --set train.learning_rate=1e-3")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        set_path(out, key.strip().split("."), value)
    return out


def set_path(d: dict[str, Any], path: list[str], value: Any) -> None:
    for part in path[:-1]:
        nxt = d.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"--set {'.'.join(path)}: {part} is a value, not a section")
        d = nxt
    d[path[-1]] = value


def deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """`top` wins; nested dicts merge key by key."""
    out = dict(base)
    for k, v in top.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out
