"""Strategy resolution: a name (+ its preset YAML, if one ships) or a YAML file -> one validated Strategy."""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from llmpt.errors import ConfigError, StrategyError, describe_validation_error
from llmpt.overrides import deep_merge, load_yaml, plain, typed
from llmpt.strategies.grammar import NameParts, NameSyntaxError, format_name, parse_name
from llmpt.strategies.schema import PRESET_SECTIONS, Strategy
from llmpt.strategies.validate import check_strategy


def presets_dir() -> Path:
    """Where the shipped presets live: ./presets next to the package (editable install), or $LLMPT_PRESETS_DIR."""
    env = os.environ.get("LLMPT_PRESETS_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "presets"


def list_presets() -> list[str]:
    """Names of the shipped presets, sorted by world size then name."""
    names = [p.stem for p in presets_dir().glob("*.yaml")]
    return sorted(names, key=lambda n: (parse_name(n).parallel.dims.min_ranks, n))


def read_yaml(path: Path, load: Callable[[str], Any] = yaml.safe_load) -> dict[str, Any]:
    """A YAML mapping from a file, or ConfigError naming the file and what is wrong with it."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read ({e.__class__.__name__}: {e})") from None
    try:
        data = load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}:{where}: not valid YAML ({problem})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values, got {type(data).__name__}")
    return data


def read_strategy_yaml(path: Path) -> dict[str, Any]:
    """A preset or strategy file, each value typed by the Strategy field it fills (as --set and --config are):
    `granularity: off` stays the string "off", `master_grad: off` is False."""
    out: dict[str, Any] = {}
    for key, raw in read_yaml(path, load_yaml).items():
        fi = Strategy.model_fields.get(key) if key != "name" else None  # a name is a name, not text made of a number
        section = fi.annotation if fi is not None else None
        if isinstance(raw, dict) and isinstance(section, type) and issubclass(section, BaseModel):
            fields = section.model_fields
            out[key] = {k: typed(v, fields[k].annotation) if k in fields else plain(v) for k, v in raw.items()}
        else:
            out[key] = typed(raw, fi.annotation) if fi is not None else plain(raw)
    return out


def build_strategy(parts: NameParts, sections: dict[str, Any], source: str) -> Strategy:
    """Combine what the name says with a preset's sections; check the result."""
    unknown = sorted(set(sections) - set(PRESET_SECTIONS))
    if unknown:
        said_by_name = [k for k in unknown if k in ("parallel", "name")]
        if said_by_name:
            raise StrategyError(
                f"{source}: '{said_by_name[0]}' is said by the strategy name, not the preset",
                "rename the preset file (e.g. tp4pp2.yaml) to change degrees",
            )
        raise ConfigError(
            f"{source}: unknown key '{unknown[0]}'; allowed: {', '.join(PRESET_SECTIONS)}",
            f"did you mean '{c}'?" if (c := _closest(unknown[0], PRESET_SECTIONS)) else None,
        )
    recompute = dict(sections.get("recompute") or {})
    if parts.recompute != "off":
        if recompute.get("granularity", parts.recompute) != parts.recompute:
            raise StrategyError(
                f"{source}: recompute.granularity {recompute['granularity']!r} contradicts the name's "
                f"recompute suffix ({parts.recompute})",
                "drop recompute.granularity from the file; the name says it",
            )
        recompute["granularity"] = parts.recompute
    data = {
        **sections,
        "name": format_name(parts),
        "recompute": recompute,
        "parallel": parts.parallel,
    }
    try:
        strategy = Strategy.model_validate(data)
    except ValidationError as e:
        raise ConfigError(describe_validation_error(source, e, Strategy)) from None
    check_strategy(strategy)
    return strategy


def _closest(word: str, choices: list[str] | tuple[str, ...]) -> str | None:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return close[0] if close else None


def is_strategy_file(name_or_path: str) -> bool:
    """--strategy names a YAML file (a path or *.yaml), not a strategy name."""
    return name_or_path.endswith((".yaml", ".yml")) or os.sep in name_or_path


DEVICE_KINDS = ("gpu", "cpu")
# precision/kernel settings of the base profile that need AMP: they yield to an fp32 precision set on top of it
AMP_ONLY = (("precision", "master_grad"), ("kernels", "flash_attention"))


def base_profile(device: str) -> dict[str, Any]:
    """The sections every strategy inherits on this kind of device (presets/base/<device>.yaml)."""
    return read_strategy_yaml(presets_dir() / "base" / f"{device}.yaml")


def _strategy_layer(name_or_path: str) -> tuple[NameParts, dict[str, Any], str]:
    """The name's parts, the preset's or file's own sections, and the label that names them."""
    if is_strategy_file(name_or_path):
        path = Path(name_or_path)
        data = read_strategy_yaml(path)
        name = data.pop("name", None) or path.stem
        if not isinstance(name, str):
            raise ConfigError(f"{path}: name: must be a strategy name string (got {name!r})")
        try:
            return parse_name(name), data, str(path)
        except StrategyError as e:
            raise StrategyError(f"{path}: {e.message}", e.hint) from None
    try:
        parts = parse_name(name_or_path)
    except NameSyntaxError as e:
        close = _closest(name_or_path, list_presets())
        raise StrategyError(
            f"unknown strategy '{name_or_path}'." + (f" Did you mean '{close}'?" if close else ""),
            "see: llmpt presets list" if close else e.hint,
        ) from None
    canonical = format_name(parts)
    preset = presets_dir() / f"{canonical}.yaml"
    if preset.is_file():
        return parts, read_strategy_yaml(preset), f"presets/{canonical}.yaml"
    return parts, {}, canonical


def _leaves(tree: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for k, v in tree.items():
        if isinstance(v, dict) and v:
            out += _leaves(v, (*prefix, k))
        else:
            out.append((*prefix, k))
    return out


def compose_strategy(
    name_or_path: str,
    device: str = "gpu",
    overrides: dict[str, Any] | None = None,
    origin: Callable[[tuple[str, ...]], str | None] | None = None,
    overrides_source: str = "--set",
) -> tuple[Strategy, dict[str, str]]:
    """The strategy from its layers — base profile (device) < preset or strategy file < the user's overrides — and
    where each setting came from ("precision.dtype" -> "base profile (gpu)", "preset …", "--set …", "name").

    A shipped preset's or the base profile's kernels mean "on where supported"; only a strategy file or the user
    asks for one explicitly. AMP-only settings of the base profile yield to an fp32 precision set above it."""
    parts, own, label = _strategy_layer(name_or_path)
    base = base_profile(device)
    user = overrides or {}
    sources: dict[str, str] = {}
    for path in _leaves(base):
        sources[".".join(path)] = f"base profile ({device})"
    own_label = f"preset {label[len('presets/') : -len('.yaml')]}" if label.startswith("presets/") else label
    for path in _leaves(own):
        sources[".".join(path)] = own_label
    for path in _leaves(user):
        sources[".".join(path)] = (origin(path) if origin else None) or overrides_source
    merged = deep_merge(deep_merge(base, own), user)
    if (merged.get("precision") or {}).get("dtype") == "fp32":
        for path in AMP_ONLY:
            key = ".".join(path)
            if sources.get(key, "").startswith("base profile"):
                merged[path[0]] = {**merged[path[0]], path[1]: False}
                sources[key] += ", off under fp32"
    strategy = build_strategy(parts, merged, label)
    for field_name in type(strategy.parallel).model_fields:
        sources[f"parallel.{field_name}"] = "name"
    if parts.recompute != "off":
        sources["recompute.granularity"] = "name"
    return strategy, sources


def resolve_strategy(name_or_path: str, device: str = "gpu") -> Strategy:
    """A strategy from a shipped preset name, any grammatical name, or a YAML file path, on its base profile."""
    return compose_strategy(name_or_path, device)[0]


def load_strategy_file(path: Path, device: str = "gpu") -> Strategy:
    """A strategy from a user's YAML file: its `name:` key (or the file's stem) plus the preset sections."""
    return resolve_strategy(str(path) if is_strategy_file(str(path)) else f"./{path}", device)


def preset_is_shipped(strategy: Strategy) -> bool:
    return (presets_dir() / f"{strategy.name}.yaml").is_file()
