"""Layered settings: defaults < preset < --config FILE < named flags < --set a.b=v. Every layer is read key by key
against the schema of the section it fills, each value typed by the field it lands in, and every value keeps where it
came from, so that a refusal names the flag, `--set` or file key the user typed."""

from __future__ import annotations

import difflib
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError

from llmpt.errors import ConfigError

# ---- YAML that remembers what was typed ---------------------------------------------------------------------


@dataclass(frozen=True)
class Scalar:
    """A plain (unquoted) YAML scalar that YAML 1.1 resolved to something other than a string (`off` -> False,
    `1.0` -> 1.0, `null` -> None), kept with its text: a field that wants a string gets the text back."""

    value: Any
    text: str


def load_yaml(text: str) -> Any:
    """YAML as plain Python values, except that non-string plain scalars come as `Scalar` (value and text)."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        return None if node is None else _build(loader, node)
    finally:
        loader.dispose()


def _build(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # `<<: *anchor` merges
        return {plain(_build(loader, k)): _build(loader, v) for k, v in node.value}
    if isinstance(node, yaml.SequenceNode):
        return [_build(loader, x) for x in node.value]
    value = loader.construct_object(node, deep=True)
    if node.style is None and not isinstance(value, str):
        return Scalar(value, node.value)
    return value


def plain(raw: Any) -> Any:
    """The YAML value of a tree that may hold `Scalar`s."""
    if isinstance(raw, Scalar):
        return raw.value
    if isinstance(raw, dict):
        return {k: plain(v) for k, v in raw.items()}
    if isinstance(raw, list):
        return [plain(x) for x in raw]
    return raw


def shown(raw: Any) -> str:
    """A value as the user typed it, for messages."""
    if isinstance(raw, Scalar):
        return raw.text
    if isinstance(raw, str):
        return raw if raw and raw.strip() == raw and " " not in raw else repr(raw)
    return repr(plain(raw))


# ---- --set -------------------------------------------------------------------------------------------------------


def parse_set(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """`--set train.learning_rate=1e-3 --set strategy.batch.grad_accum=4` -> a nested dict; each value read as YAML
    (keeping the text of non-string scalars, see `Scalar`); a later --set of the same key wins."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip() or any(not part.strip() for part in key.split(".")):
            raise ConfigError(f"--set {item!r}: expected KEY.PATH=VALUE, e.g. --set train.learning_rate=1e-3")
        try:
            value = load_yaml(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        set_path(out, [part.strip() for part in key.split(".")], value)
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


# ---- where a value came from -------------------------------------------------------------------------------------

OriginKind = Literal["default", "demo", "seed", "config", "flag", "set"]
_DEFAULT_LABELS = {
    "default": "default",
    "demo": "the demo's default",
    "seed": "the seed's default for --init-from",
}


@dataclass(frozen=True)
class Origin:
    """One layer: llmpt's defaults, a config file, a named flag, or --set."""

    kind: OriginKind
    name: str = ""  # the config file, or the flag ("--max-steps")

    @property
    def user_set(self) -> bool:
        return self.kind in ("config", "flag", "set")

    def where(self, path: tuple[str, ...]) -> str:
        """The key as the user spelt it: `--max-steps`, `--set train.max_steps`, `run.yaml: train.max_steps`."""
        key = ".".join(path)
        if self.kind == "flag":
            return self.name
        if self.kind == "set":
            return f"--set {key}"
        if self.kind == "config":
            return f"{self.name}: {key}"
        return key

    def show(self, path: tuple[str, ...], text: str) -> str:
        """The key and its value as the user typed them (or as a default set them)."""
        key = ".".join(path)
        if self.kind == "flag":
            return f"{self.name} {text}"
        if self.kind == "set":
            return f"--set {key}={text}"
        if self.kind == "config":
            return f"{self.name}: {key}: {text}"
        return f"{key} {text} by {_DEFAULT_LABELS[self.kind]}"

    @property
    def label(self) -> str:
        """'the demo's default', '--set', 'run.yaml', '--max-steps'."""
        if self.kind == "default":
            return "the default"
        return _DEFAULT_LABELS.get(self.kind) or self.source

    @property
    def source(self) -> str:
        """The layer alone, for errors about a section as a whole (`--set`, `run.yaml`)."""
        return self.name if self.kind in ("config", "flag") else ("--set" if self.kind == "set" else self.kind)


@dataclass(frozen=True)
class Setting:
    """One checked value of one key, with the layer it came from and its text as typed."""

    value: Any
    origin: Origin
    text: str

    def show(self, path: tuple[str, ...]) -> str:
        return self.origin.show(path, self.text)


# ---- the schema a layer is read against ------------------------------------------------------------------------


@dataclass(frozen=True)
class Leaf:
    """A settable value; `annotation` is a type with its pydantic constraints (Annotated[int, Ge(1)])."""

    annotation: Any

    @classmethod
    def of_field(cls, model: type[BaseModel], name: str) -> Leaf:
        fi = model.model_fields[name]
        return cls(Annotated[(fi.annotation, *fi.metadata)] if fi.metadata else fi.annotation)

    def read(self, raw: Any, origin: Origin, path: tuple[str, ...]) -> Any:
        """The value typed by this leaf's annotation, or a ConfigError naming what was given as the user typed it
        (`--max-steps 0`, `--set train.max_steps=0`, `run.yaml: train.max_steps: … (got 0)`) and what is allowed."""
        candidate = typed(raw, self.annotation)
        try:
            return TypeAdapter(self.annotation).validate_python(candidate)
        except ValidationError as e:
            if origin.kind in ("flag", "set"):
                raise ConfigError(f"{origin.show(path, _text(raw))}: {problem(e, self.annotation)}") from None
            raise ConfigError(f"{origin.where(path)}: {problem(e, self.annotation)} (got {shown(raw)})") from None


@dataclass(frozen=True)
class Section:
    """Keys -> nodes. `elsewhere`: keys that are not settable here, each with where its value comes from."""

    path: tuple[str, ...]
    children: Mapping[str, Leaf | Section]
    elsewhere: Mapping[str, str] = field(default_factory=dict)
    allowed_text: str | None = None  # instead of listing the keys (a long list)
    closed: str | None = None  # nothing is settable here: why

    @classmethod
    def of_model(
        cls,
        model: type[BaseModel],
        path: tuple[str, ...],
        keys: tuple[str, ...] | None = None,
        elsewhere: Mapping[str, str] | None = None,
    ) -> Section:
        """The fields of a pydantic model (only `keys`, if given); a field that is itself a model is a section."""
        children: dict[str, Leaf | Section] = {}
        for name, fi in model.model_fields.items():
            if keys is not None and name not in keys:
                continue
            ann = fi.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                children[name] = cls.of_model(ann, (*path, name))
            else:
                children[name] = Leaf.of_field(model, name)
        return cls(path, children, dict(elsewhere or {}))

    def child(self, key: str, origin: Origin, path: tuple[str, ...]) -> Leaf | Section:
        if key in self.children:
            return self.children[key]
        dotted = ".".join(path)
        if self.closed:
            raise ConfigError(f"{origin.where(path)}: {self.closed}")
        if key in self.elsewhere:
            raise ConfigError(f"{origin.where(path)}: {self.elsewhere[key]}")
        names = list(self.children)
        close = difflib.get_close_matches(key, names + list(self.elsewhere), n=1, cutoff=0.6)
        mean = f" (did you mean '{'.'.join((*self.path, close[0]))}'?)" if close else ""
        under = f" under {'.'.join(self.path)}" if self.path else ""
        allowed = self.allowed_text or ", ".join(names)
        raise ConfigError(f"{origin.source}: unknown key '{dotted}'{mean}; allowed{under}: {allowed}")


def read_layer(tree: Any, schema: Section, origin: Origin) -> dict[tuple[str, ...], Setting]:
    """Every leaf of one layer, checked against `schema` and typed: path -> Setting."""
    out: dict[tuple[str, ...], Setting] = {}

    def walk(node: Leaf | Section, raw: Any, path: tuple[str, ...]) -> None:
        if isinstance(node, Leaf):
            out[path] = Setting(node.read(raw, origin, path), origin, _text(raw))
            return
        if raw is None or (isinstance(raw, Scalar) and raw.value is None):
            return  # an empty section (`train:` with nothing under it)
        if not isinstance(raw, dict):
            if node.closed:
                raise ConfigError(f"{origin.where(path)}: {node.closed}")
            where = f"{origin.source}: {'.'.join(path)}" if path else origin.source
            keys = ", ".join(node.children) or "none"
            raise ConfigError(f"{where}: expected a mapping of keys to values (got {shown(raw)}); keys: {keys}")
        for key, value in raw.items():
            sub = (*path, str(key))
            walk(node.child(str(key), origin, sub), value, sub)

    walk(schema, tree, ())
    return out


def _text(raw: Any) -> str:
    if isinstance(raw, Scalar):
        return raw.text
    if isinstance(raw, str):
        return raw
    return str(plain(raw))


# ---- typing a value by its field -------------------------------------------------------------------------------


def typed(raw: Any, ann: Any) -> Any:
    """The candidate value for a field of type `ann`: YAML's value where the field takes that type, the text as
    typed where it takes a string (`granularity: off` stays "off"); a YAML boolean is never read as a number."""
    if isinstance(raw, Scalar):
        v = raw.value
        if isinstance(v, bool) and not _admits_bool(ann):
            return raw.text
        if _admits(v, ann):
            return v
        return raw.text if _admits_str(ann) else v
    if isinstance(raw, list):
        item = _item_type(ann)
        return [typed(x, item) for x in raw]
    if isinstance(raw, dict):
        return {k: typed(v, Any) for k, v in raw.items()}
    return raw


def _members(ann: Any) -> list[Any]:
    """The alternatives of a type, Annotated and Optional unwrapped."""
    origin = get_origin(ann)
    if origin is Annotated:
        return _members(get_args(ann)[0])
    if origin is Union or isinstance(ann, types.UnionType):
        return [m for a in get_args(ann) for m in _members(a)]
    return [ann]


def _literal_values(m: Any) -> tuple[Any, ...]:
    return get_args(m) if get_origin(m) is Literal else ()


def _admits_bool(ann: Any) -> bool:
    return any(m is bool or m is Any or any(type(a) is bool for a in _literal_values(m)) for m in _members(ann))


def _admits_str(ann: Any) -> bool:
    return any(m is str or m is Any or any(isinstance(a, str) for a in _literal_values(m)) for m in _members(ann))


def _admits(value: Any, ann: Any) -> bool:
    for m in _members(ann):
        if m is Any:
            return True
        if get_origin(m) is Literal:
            if any(type(a) is type(value) and a == value for a in get_args(m)):
                return True
        elif value is None:
            if m is type(None):
                return True
        elif m is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return True
        elif m is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return True
        elif isinstance(m, type) and isinstance(value, m):
            return True
    return False


def _item_type(ann: Any) -> Any:
    for m in _members(ann):
        if get_origin(m) in (list, tuple, set, frozenset):
            args = [a for a in get_args(m) if a is not Ellipsis]
            return args[0] if args else Any
    return Any


# ---- saying what a field allows ----------------------------------------------------------------------------------

_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string", type(None): "null"}
_PLURALS = {int: "integers", float: "numbers", bool: "booleans", str: "strings"}


def describe(ann: Any) -> str:
    """What a field takes, in words: 'an integer >= 1', 'one of off, full', 'a list of integers or null'."""
    parts, nullable = [], False
    for m in _members(ann):
        if m is type(None):
            nullable = True
        elif get_origin(m) is Literal:
            parts.append("one of " + ", ".join(str(a) for a in get_args(m)))
        elif get_origin(m) in (list, tuple, set, frozenset):
            item = _item_type(m)
            parts.append(f"a list of {_PLURALS.get(item, describe(item) + ' values')}")
        else:
            parts.append(_NAMES.get(m, getattr(m, "__name__", str(m))))
    return " or ".join(parts) + _bounds(ann) + (" or null" if nullable else "")


def _bounds(ann: Any) -> str:
    if get_origin(ann) is not Annotated:
        return ""
    words = []
    for meta in get_args(ann)[1:]:
        for attr, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"), ("min_length", "of length >=")):
            bound = getattr(meta, attr, None)
            if bound is not None:
                words.append(f"{op} {bound}")
    return (" " + " and ".join(words)) if words else ""


def problem(e: ValidationError, ann: Any) -> str:
    """The first problem of a field's ValidationError, in llmpt's words."""
    err = e.errors()[0]
    if err["type"] == "value_error":
        msg = err["msg"].removeprefix("Value error, ")
        return msg[:1].lower() + msg[1:]
    text = f"must be {describe(ann)}"
    if err["type"] == "literal_error" and isinstance(err.get("input"), str):
        choices = [str(a) for m in _members(ann) for a in _literal_values(m)]
        close = difflib.get_close_matches(err["input"], choices, n=1, cutoff=0.6)
        if close:
            text += f"; did you mean '{close[0]}'?"
    return text


def nest(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    """{'a': {'b': value}} for ('a', 'b')."""
    out: Any = value
    for key in reversed(path):
        out = {key: out}
    return out


def unflatten(settings: Mapping[tuple[str, ...], Setting], prefix: tuple[str, ...] = ()) -> dict[str, Any]:
    """The values under `prefix` as a nested dict."""
    out: dict[str, Any] = {}
    n = len(prefix)
    for path, s in settings.items():
        if path[:n] == prefix and len(path) > n:
            d = out
            for key in path[n:-1]:
                d = d.setdefault(key, {})
            d[path[-1]] = s.value
    return out
