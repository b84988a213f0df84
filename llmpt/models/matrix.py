"""The capability matrix (matrix.yaml, the seed's published claims) and what each family's PaddleNLP modeling
implements (families.yaml): what a strategy needs from both. Refuses unsupported combinations; turns optional
accelerations off where unsupported."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from llmpt.errors import ModelError, StrategyError
from llmpt.fsutil import load_shipped_yaml
from llmpt.models.registry import ModelSpec
from llmpt.strategies.parallel_dims import ParallelDims
from llmpt.strategies.schema import KernelConfig, RecomputeConfig, Strategy
from llmpt.versions import PADDLENLP

MATRIX_PATH = Path(__file__).with_name("matrix.yaml")
FAMILIES_PATH = Path(__file__).with_name("families.yaml")

SYMBOL_STATUS = {"✅": "supported", "🚧": "partial", "❌": "unsupported", "⬜": "unlisted"}
STATUS_SYMBOL = {v: k for k, v in SYMBOL_STATUS.items()}
STATUS_TEXT = {
    "supported": "supported",
    "partial": "in progress (partial)",
    "unsupported": "not supported",
    "unlisted": "not listed as supported",
}


@dataclass(frozen=True)
class Column:
    key: str
    title: str
    meaning: str


@dataclass(frozen=True)
class Cell:
    status: str
    source: str

    @property
    def symbol(self) -> str:
        return STATUS_SYMBOL[self.status]


@dataclass(frozen=True)
class Row:
    name: str
    cells: dict[str, Cell]


@dataclass(frozen=True)
class Matrix:
    columns: tuple[Column, ...]
    rows: tuple[Row, ...]

    def row(self, name: str) -> Row:
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(name)

    def column(self, key: str) -> Column:
        return next(c for c in self.columns if c.key == key)


@lru_cache(maxsize=1)
def load_matrix() -> Matrix:
    data = load_shipped_yaml(MATRIX_PATH)
    columns = tuple(Column(**c) for c in data["columns"])
    rows = []
    for r in data["rows"]:
        symbols = r["cells"].split()
        if len(symbols) != len(columns):
            raise RuntimeError(f"matrix.yaml: row {r['name']} has {len(symbols)} cells, expected {len(columns)}")
        cells = {c.key: Cell(SYMBOL_STATUS[s], r["source"]) for c, s in zip(columns, symbols, strict=True)}
        for key, override in (r.get("verified") or {}).items():
            cells[key] = Cell(override["status"], override["source"])
        rows.append(Row(r["name"], cells))
    return Matrix(columns, tuple(rows))


@dataclass(frozen=True)
class Need:
    """A capability a strategy needs: the matrix column, why, and whether it is an optional acceleration."""

    column: str
    why: str
    optional: bool = False


def parallel_uses(s: Strategy, d: ParallelDims) -> list[tuple[str, str]]:
    """(axis, what) for each parallel feature `s` at degrees `d` uses: dp, tp, pp, sp, sep, cp."""
    uses = [(a, f"{what} ({a}{getattr(d, a)})") for a, what in _AXIS_WHAT.items() if getattr(d, a) > 1]
    if s.parallel.sequence_parallel:
        uses.insert(sum(a in ("dp", "tp", "pp") for a, _ in uses), ("sp", "sequence parallel"))
    return uses


_AXIS_WHAT = {"dp": "data parallel", "tp": "tensor parallel", "pp": "pipeline parallel",
              "sep": "segment parallel", "cp": "context parallel"}  # fmt: skip


def needed_cells(s: Strategy, d: ParallelDims) -> list[Need]:
    """The matrix columns `s` at degrees `d` relies on (the seed's table has no sep/cp columns)."""
    needs = [Need(axis, what) for axis, what in parallel_uses(s, d) if axis not in ("sep", "cp")]
    if d.sharding > 1:
        rc = s.recompute.granularity != "off"
        needs.append(
            Need(
                f"s{s.parallel.stage}_{'rc' if rc else 'dp'}",
                f"sharding stage {s.parallel.stage} {'with' if rc else 'without'} recompute (sd{d.sharding})",
            )
        )
    if s.recompute.granularity in ("full_attn", "core_attn") or s.recompute.no_recompute_layers:
        needs.append(Need("sr", "selective recompute"))
    if s.kernels.flash_attention:
        needs.append(Need("fa", "flash attention", optional=True))
    return needs


# --- what each family's PaddleNLP modeling implements (families.yaml) ------------------------------------------

CAPABILITY_KEYS = (
    "tensor_parallel",
    "pipeline",
    "sequence_parallel",
    "segment_parallel",
    "context_parallel",
    "flash_attention",
    "fused_rms_norm",
    "fused_rope",
    "fuse_attention_qkv",
    "fuse_attention_ffn",
    "recompute_full",
    "recompute_full_attn",
    "recompute_core_attn",
    "no_recompute_layers",
)
CLAIM_STATUSES = ("supported", "unsupported", "always")
GRANULARITIES = ("full", "full_attn", "core_attn")


@dataclass(frozen=True)
class Capability:
    """A path a modeling may or may not have: its key, how to name it, the config switch, the KernelConfig field."""

    key: str
    title: str
    switch: str
    kernel: str | None = None


@dataclass(frozen=True)
class Claim:
    """What one family's modeling does about one capability, and where its source says so."""

    status: str  # supported | unsupported | always (always on: the switch has no effect)
    evidence: str  # "file: function — what it does"
    probe: tuple[dict, ...] = ()  # checked against the installed PaddleNLP by tests/integration
    instead: str = ""
    requires: tuple[tuple[str, bool], ...] = ()  # strategy settings the path needs: ("kernels.flash_attention", True)
    granularities: tuple[str, ...] = ()  # no_recompute_layers: the granularities it holds for (empty: all)
    pipeline: Claim | None = None  # the claim when pp > 1 (the Pipe class), where it differs

    @property
    def serves(self) -> bool:
        return self.status != "unsupported"


@dataclass(frozen=True)
class Families:
    capabilities: dict[str, Capability]
    modules: dict[str, tuple[str, ...]]  # family -> modules under paddlenlp.transformers its code lives in
    families: dict[str, dict[str, Claim]]
    variants: dict[str, dict[str, dict[str, Claim]]]  # family -> variant -> capability -> claim
    variant_when: dict[str, dict[str, dict[str, str]]]  # family -> variant -> {ModelSpec field: value}

    def variant_of(self, spec: ModelSpec) -> str | None:
        for name, when in self.variant_when.get(spec.family, {}).items():
            if all(getattr(spec, k) == v for k, v in when.items()):
                return name
        return None

    def claim(self, spec: ModelSpec, capability: str, pp: int = 1) -> Claim:
        """The claim that holds for this model (its variant's, if it has one) on a layout with `pp` stages."""
        c = self.families[spec.family][capability]
        variant = self.variant_of(spec)
        if variant is not None:
            c = self.variants[spec.family][variant].get(capability, c)
        return c.pipeline if pp > 1 and c.pipeline is not None else c


def _claim(family: str, key: str, raw: dict) -> Claim:
    where = f"families.yaml: {family}.{key}"
    unknown = set(raw) - {"status", "evidence", "probe", "instead", "requires", "granularities", "pipeline"}
    if unknown or raw.get("status") not in CLAIM_STATUSES or not raw.get("evidence"):
        raise RuntimeError(f"{where}: needs status ({'/'.join(CLAIM_STATUSES)}) and evidence; unknown {unknown}")
    requires = raw.get("requires") or {}
    bad = [k for k, v in requires.items() if not isinstance(v, bool) or _setting_field(k) is None]
    if bad or any(g not in GRANULARITIES for g in raw.get("granularities", ())):
        raise RuntimeError(f"{where}: requires maps boolean strategy settings (kernels.*, recompute.*) to a value")
    return Claim(
        status=raw["status"],
        evidence=raw["evidence"],
        probe=tuple(raw.get("probe") or ()),
        instead=raw.get("instead", ""),
        requires=tuple(requires.items()),
        granularities=tuple(raw.get("granularities", ())),
        pipeline=_claim(family, f"{key}.pipeline", raw["pipeline"]) if raw.get("pipeline") else None,
    )


@lru_cache(maxsize=1)
def load_families() -> Families:
    data = load_shipped_yaml(FAMILIES_PATH)
    caps = {k: Capability(key=k, **v) for k, v in data["capabilities"].items()}
    if tuple(caps) != CAPABILITY_KEYS:
        raise RuntimeError(f"families.yaml: capabilities must be {CAPABILITY_KEYS}")
    modules, families, variants, when = {}, {}, {}, {}
    for family, raw in data["families"].items():
        raw = dict(raw)
        modules[family] = tuple(raw.pop("modules"))
        for name, v in (raw.pop("variants", None) or {}).items():
            v = dict(v)
            when.setdefault(family, {})[name] = v.pop("when")
            v.pop("note", None)
            variants.setdefault(family, {})[name] = {k: _claim(f"{family}.{name}", k, c) for k, c in v.items()}
        if set(raw) != set(CAPABILITY_KEYS):
            raise RuntimeError(f"families.yaml: {family} must have a claim for each of {CAPABILITY_KEYS}")
        families[family] = {k: _claim(family, k, raw[k]) for k in CAPABILITY_KEYS}
    return Families(caps, modules, families, variants, when)


@dataclass(frozen=True)
class CapabilityNeed:
    """A modeling path a strategy relies on; `kernel` for an optional acceleration (a KernelConfig field)."""

    capability: str
    why: str
    kernel: str | None = None


_AXIS_CAPABILITY = {"tp": "tensor_parallel", "pp": "pipeline", "sp": "sequence_parallel",
                    "sep": "segment_parallel", "cp": "context_parallel"}  # fmt: skip


def needed_capabilities(s: Strategy, d: ParallelDims) -> list[CapabilityNeed]:
    """The modeling paths `s` at degrees `d` relies on (families.yaml keys)."""
    needs = [
        CapabilityNeed(_AXIS_CAPABILITY[axis], what + (" (_sp)" if axis == "sp" else ""))
        for axis, what in parallel_uses(s, d)
        if axis != "dp"
    ]
    g = s.recompute.granularity
    if g != "off":
        needs.append(CapabilityNeed(f"recompute_{g}", f"recompute granularity {g}"))
    if s.recompute.no_recompute_layers:
        layers = list(s.recompute.no_recompute_layers)
        needs.append(CapabilityNeed("no_recompute_layers", f"recompute.no_recompute_layers {layers}"))
    caps = load_families().capabilities
    for key in CAPABILITY_KEYS:
        kernel = caps[key].kernel
        if kernel and getattr(s.kernels, kernel):
            needs.append(CapabilityNeed(key, caps[key].title, kernel=kernel))
    return needs


def _setting_field(path: str):
    """The schema field of a boolean strategy setting 'section.key' (kernels.flash_attention), or None."""
    section, _, key = path.partition(".")
    model = {"kernels": KernelConfig, "recompute": RecomputeConfig}.get(section)
    f = model.model_fields.get(key) if model else None
    return f if f is not None and f.annotation is bool else None


def setting(s: Strategy, path: str) -> bool:
    section, _, key = path.partition(".")
    return getattr(getattr(s, section), key)


def unmet_requirements(claim: Claim, s: Strategy) -> list[tuple[str, bool]]:
    """The (setting, value) pairs the claim's path requires that `s` does not have."""
    return [(path, want) for path, want in claim.requires if setting(s, path) != want]


def _serves(claim: Claim, s: Strategy, need: CapabilityNeed) -> bool:
    if not claim.serves:
        return False
    if need.capability == "no_recompute_layers" and claim.granularities:
        return s.recompute.granularity in claim.granularities
    return True


def modeling_supports(spec: ModelSpec, s: Strategy, d: ParallelDims) -> bool:
    """The family's modeling has a path for every non-optional need of `s` at `d` (and what those paths require)."""
    fam = load_families()
    for need in needed_capabilities(s, d):
        claim = fam.claim(spec, need.capability, d.pp)
        if need.kernel is None and not _serves(claim, s, need):
            return False
        if unmet_requirements(claim, s):
            return False
    return True


def model_supports(spec: ModelSpec, s: Strategy, d: ParallelDims) -> bool:
    """Both the matrix row (published claims) and the family's modeling accept `s` at `d`."""
    row = load_matrix().row(spec.matrix_row)
    return row_supports(row, needed_cells(s, d)) and modeling_supports(spec, s, d)


def _modeling_name(spec: ModelSpec, variant: str | None) -> str:
    return f"PaddleNLP {PADDLENLP}'s {spec.family} modeling" + (f" (for {variant} models)" if variant else "")


# --- checking a strategy against a model ------------------------------------------------------------------------


@dataclass
class CapabilityCheck:
    """The outcome of checking a model against a strategy: notes to show, and kernels to switch off."""

    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    kernels_off: dict[str, bool] = field(default_factory=dict)


def check_capabilities(
    spec: ModelSpec,
    s: Strategy,
    d: ParallelDims,
    *,
    allow_partial: bool = False,
    optional_kernels: bool = True,
    explicit_kernels: frozenset[str] | set[str] | None = None,
) -> CapabilityCheck:
    """Refuse (ModelError) what the model's matrix row (the published claims) or its family's PaddleNLP modeling
    does not support. Optional kernels (KernelConfig fields) the model lacks are switched off with a note, unless
    asked for explicitly: `explicit_kernels` names those the user asked for (a strategy file, --set, a flag);
    without it, `optional_kernels=False` means flash attention was asked for explicitly."""
    if explicit_kernels is None:
        explicit_kernels = set() if optional_kernels else {"flash_attention"}
    row = load_matrix().row(spec.matrix_row)
    out = CapabilityCheck()
    partial: list[str] = []
    for need in needed_cells(s, d):
        cell = row.cells[need.column]
        where = f"capability matrix, row {row.name}: {cell.symbol} {STATUS_TEXT[cell.status]}"
        if cell.status == "supported":
            continue
        if need.optional and "flash_attention" not in explicit_kernels:
            out.kernels_off["flash_attention"] = False
            out.notes.append(f"{spec.id}: {need.why} off ({where})")
            continue
        if cell.status == "partial":
            # after the modeling's check: --allow-partial cannot help where the modeling has no path at all
            partial.append(f"{spec.id}: {need.why} is only partially supported ({where})")
            continue
        raise ModelError(
            f"{spec.id} does not support {need.why} ({where}). {runnable_text(spec)}",
            f"see: llmpt matrix --model {spec.aliases[0] if spec.aliases else spec.id}",
        )
    fam = load_families()
    variant = fam.variant_of(spec)
    modeling = _modeling_name(spec, variant)
    for need in needed_capabilities(s, d):
        claim = fam.claim(spec, need.capability, d.pp)
        title = fam.capabilities[need.capability].title
        if need.kernel is None:
            if not _serves(claim, s, need):
                raise _refusal(spec, s, d, need, claim, modeling, title)
            continue
        if need.kernel in out.kernels_off or claim.status == "supported":
            continue
        if claim.status == "always":
            out.notes.append(
                f"{spec.id}: kernels.{need.kernel} has no effect: {modeling} always does it ({claim.evidence})"
            )
            continue
        if need.kernel in explicit_kernels:
            raise ModelError(
                f"{spec.id}: strategy {s.name} asks for {title} (kernels.{need.kernel}), but {modeling} has no "
                f"{title} path ({claim.evidence})",
                f"set kernels.{need.kernel}: false (or --set strategy.kernels.{need.kernel}=false)",
            )
        out.kernels_off[need.kernel] = False
        out.notes.append(f"{spec.id}: {title} off ({modeling} has none: {claim.evidence})")
    if partial and not allow_partial:
        raise ModelError(partial[0], "pass --allow-partial to run it anyway")
    out.warnings += partial
    final = s.model_copy(update={"kernels": s.kernels.model_copy(update=out.kernels_off)})
    for need in needed_capabilities(s, d):
        claim = fam.claim(spec, need.capability, d.pp)
        for path, want in unmet_requirements(claim, final):
            have = "on" if setting(final, path) else "off"
            fix = f"--set strategy.{path}={str(want).lower()}"
            if path.startswith("kernels.") and want:
                fix = f"{path.split('.')[1]} is a GPU kernel needing bf16/fp16: run on --device gpu with {fix}"
            raise ModelError(
                f"{spec.id}: strategy {s.name} asks for {need.why}, which {modeling} runs only with {path} "
                f"{'on' if want else 'off'} ({claim.evidence}), and {path} is {have}",
                f"{fix}, or use a layout without {need.why.split(' (')[0]}",
            )
    return out


def _refusal(
    spec: ModelSpec, s: Strategy, d: ParallelDims, need: CapabilityNeed, claim: Claim, modeling: str, title: str
) -> ModelError:
    """What was given, that the modeling has no such path (with the evidence), and what to use instead."""
    alternatives = [a for a in (_runs(spec, name, d) for name in _alternatives(s, d, need)) if a]
    if not alternatives and need.capability.startswith("recompute_"):
        alternatives = [a for a in [_runs(spec, _without_recompute(s.name), d)] if a]
    if alternatives:
        hint = "use " + " or ".join(alternatives)
    elif claim.instead:
        hint = claim.instead
    else:
        hint = runnable_text(spec)
    return ModelError(
        f"{spec.id}: strategy {s.name} asks for {need.why}, but {modeling} has no {title} path ({claim.evidence})",
        hint,
    )


def _alternatives(s: Strategy, d: ParallelDims, need: CapabilityNeed) -> list[str]:
    """Strategy names that drop what `need` asks for and keep the rest (same ranks)."""
    from llmpt.strategies.grammar import rename

    name, cap = s.name, need.capability
    try:
        if cap == "sequence_parallel":
            return [rename(name, sequence_parallel=False)]
        if cap in ("segment_parallel", "context_parallel"):
            axis = "sep" if cap == "segment_parallel" else "cp"
            if s.parallel.dp is not None:
                return [rename(name, **{axis: 1, "dp": d.dp * getattr(d, axis)})]
            try:
                return [rename(name, **{axis: 1})]
            except StrategyError:  # nothing but the sequence axis: the same ranks as data parallel
                return [f"dp{d.world_size}"]
        if cap.startswith("recompute_"):
            # another granularity; recompute off only when the family has none (see _refusal)
            return [rename(name, recompute=g) for g in GRANULARITIES if f"recompute_{g}" != cap]
    except StrategyError:
        return []
    return []


def _without_recompute(name: str) -> str | None:
    from llmpt.strategies.grammar import rename

    try:
        return rename(name, recompute="off")
    except StrategyError:
        return None


def _runs(spec: ModelSpec, name: str | None, d: ParallelDims) -> str | None:
    """'--strategy NAME' (plus the --set a recompute setting it needs) when `name` plans for `spec` on the same
    number of ranks as `d`, as far as capabilities go; None otherwise."""
    from llmpt.models.shape import check_model_shape
    from llmpt.strategies.presets import resolve_strategy

    if name is None:
        return None
    try:
        alt = resolve_strategy(name)
        alt_d = alt.parallel.dims.for_world(d.world_size, name)
        check_model_shape(spec, alt, alt_d, seq_len=spec.max_position_embeddings)
    except (StrategyError, ModelError):
        return None
    if model_supports(spec, alt, alt_d):
        return f"--strategy {name}"
    # a path that needs a recompute setting (e.g. use_reentrant) still runs with that setting
    fam = load_families()
    sets = {
        path: want
        for n in needed_capabilities(alt, alt_d)
        for path, want in unmet_requirements(fam.claim(spec, n.capability, alt_d.pp), alt)
        if path.startswith("recompute.")
    }
    if not sets:
        return None
    alt = alt.model_copy(
        update={"recompute": alt.recompute.model_copy(update={k.split(".")[1]: v for k, v in sets.items()})}
    )
    if not model_supports(spec, alt, alt_d):
        return None
    return f"--strategy {name} " + " ".join(f"--set strategy.{k}={str(v).lower()}" for k, v in sets.items())


def row_supports(row: Row, needs: list[Need]) -> bool:
    return all(row.cells[n.column].status == "supported" for n in needs if not n.optional)


def runnable_presets(spec: ModelSpec) -> list[str]:
    """Shipped presets whose required cells the model's row supports, whose needs its family's modeling serves,
    and whose degrees fit its shape."""
    from llmpt.models.shape import check_model_shape
    from llmpt.strategies.presets import list_presets, resolve_strategy

    out = []
    for name in list_presets():
        s = resolve_strategy(name)
        d = s.parallel.dims.smallest(s.name)
        if not model_supports(spec, s, d):
            continue
        try:
            check_model_shape(spec, s, d, seq_len=spec.max_position_embeddings)
        except ModelError:
            continue
        out.append(name)
    return out


def runnable_text(spec: ModelSpec) -> str:
    """The shipped presets that run the model — those the matrix and the modeling allow, and of them those that fit
    the seed's card — for a refusal: never a layout that does not fit, named as one that runs."""
    allowed = runnable_presets(spec)
    if not allowed:
        return f"no shipped preset runs {spec.id}"
    fitting = [n for n in allowed if _fits_seed_card(spec, n)]
    card = f"an {SEED_CARD} at {SEED_SEQ_LEN} tokens"
    if fitting:
        rest = [n for n in allowed if n not in fitting]
        more = f" (the matrix also allows {', '.join(rest)}, which do not fit)" if rest else ""
        return f"Strategies that run {spec.id} and fit {card}: {', '.join(fitting)}{more}"
    return (
        f"The matrix allows {', '.join(allowed)} for {spec.id}, but none of them fits {card} "
        "(check other cards and devices with llmpt plan --device-type)"
    )


SEED_CARD, SEED_SEQ_LEN = "A100-80G", 4096  # the seed table's machine and sequence length


def _fits_seed_card(spec: ModelSpec, name: str) -> bool:
    from llmpt.planner.devices import resolve_device
    from llmpt.planner.estimate import Layout, estimate, usable_mb
    from llmpt.strategies.presets import resolve_strategy

    s = resolve_strategy(name)
    d = s.parallel.dims.smallest(name)
    card = resolve_device(SEED_CARD)
    e = estimate(Layout(spec, s, d, SEED_SEQ_LEN, min(d.world_size, 8)), card)
    return e.memory_mb_per_card <= usable_mb(card)


# --- the modeling behind each matrix cell, for `llmpt matrix` ----------------------------------------------------

# matrix column -> the modeling paths that serve it (any of them for *_rc: sharding "with recompute" at any granularity)
COLUMN_CAPABILITIES: dict[str, tuple[str, ...]] = {
    "tp": ("tensor_parallel",),
    "pp": ("pipeline",),
    "sp": ("sequence_parallel",),
    "fa": ("flash_attention",),
    **{f"s{i}_rc": ("recompute_full", "recompute_full_attn", "recompute_core_attn") for i in (1, 2, 3)},
    "sr": ("recompute_full_attn", "recompute_core_attn", "no_recompute_layers"),
}


def family_label(spec: ModelSpec) -> str:
    """'llama', or 'llama+alibi' for a model whose claims come from a family variant."""
    variant = load_families().variant_of(spec)
    return spec.family + (f"+{variant}" if variant else "")


def modeling_cell(row: Row, column: str) -> dict | None:
    """Whether the PaddleNLP modeling of the row's models serves this cell (pp = 1): per family (or variant)
    'supported', 'partial' (some of the paths: selective recompute) or 'unsupported'; None for a cell that needs
    no modeling path (dp, sharding without recompute)."""
    from llmpt.models.registry import all_models

    caps = COLUMN_CAPABILITIES.get(column)
    if caps is None:
        return None
    fam = load_families()
    per: dict[str, str] = {}
    for spec in (m for m in all_models() if m.matrix_row == row.name):
        served = [fam.claim(spec, c).serves for c in caps]
        if column == "sr":
            status = "supported" if all(served) else "partial" if any(served) else "unsupported"
        else:
            status = "supported" if any(served) else "unsupported"
        per[family_label(spec)] = status
    statuses = set(per.values())
    overall = statuses.pop() if len(statuses) == 1 else "partial"
    return {"status": overall, "families": dict(sorted(per.items()))}


def claim_json(claim: Claim) -> dict:
    out: dict = {"status": claim.status, "evidence": claim.evidence}
    if claim.requires:
        out["requires"] = dict(claim.requires)
    if claim.granularities:
        out["granularities"] = list(claim.granularities)
    if claim.pipeline is not None:
        out["pipeline"] = claim_json(claim.pipeline)
    return out


def modeling_json(spec: ModelSpec) -> dict:
    """What the model's family (variant) modeling implements, capability by capability."""
    fam = load_families()
    return {key: claim_json(fam.claim(spec, key)) for key in CAPABILITY_KEYS}


def families_json() -> dict:
    """families.yaml as `llmpt matrix --json` publishes it: per family, each capability's claim; a variant's
    claims (and the ModelSpec fields that select it) under "variants"."""
    fam = load_families()
    out: dict = {}
    for family, claims in fam.families.items():
        out[family] = {k: claim_json(c) for k, c in claims.items()}
        variants = fam.variants.get(family, {})
        if variants:
            out[family]["variants"] = {
                v: {"when": fam.variant_when[family][v], **{k: claim_json(c) for k, c in vc.items()}}
                for v, vc in variants.items()
            }
    return {
        "paddlenlp": PADDLENLP,
        "capabilities": {k: {"title": c.title, "switch": c.switch} for k, c in fam.capabilities.items()},
        "families": out,
    }
