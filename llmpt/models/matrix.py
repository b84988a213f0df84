"""The capability matrix (matrix.yaml): which parallel capability each model row supports, and what a
strategy needs from it. Refuses unsupported combinations; turns optional accelerations off where unsupported."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml

from llmpt.errors import ModelError
from llmpt.models.registry import ModelSpec
from llmpt.strategies.parallel_dims import ParallelDims
from llmpt.strategies.schema import Strategy

MATRIX_PATH = Path(__file__).with_name("matrix.yaml")

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
    data = yaml.safe_load(MATRIX_PATH.read_text(encoding="utf-8"))
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


def needed_cells(s: Strategy, d: ParallelDims) -> list[Need]:
    """The matrix columns `s` at degrees `d` relies on."""
    needs = []
    if d.dp > 1:
        needs.append(Need("dp", f"data parallel (dp{d.dp})"))
    if d.tp > 1:
        needs.append(Need("tp", f"tensor parallel (tp{d.tp})"))
    if d.pp > 1:
        needs.append(Need("pp", f"pipeline parallel (pp{d.pp})"))
    if s.parallel.sequence_parallel:
        needs.append(Need("sp", "sequence parallel"))
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
) -> CapabilityCheck:
    """Refuse (ModelError) what the model's matrix row does not support; `optional_kernels` means the
    strategy's kernels came from a preset ('on where supported'), not from an explicit request."""
    row = load_matrix().row(spec.matrix_row)
    out = CapabilityCheck()
    for need in needed_cells(s, d):
        cell = row.cells[need.column]
        where = f"capability matrix, row {row.name}: {cell.symbol} {STATUS_TEXT[cell.status]}"
        if cell.status == "supported":
            continue
        if need.optional and optional_kernels:
            out.kernels_off["flash_attention"] = False
            out.notes.append(f"{spec.id}: {need.why} off ({where})")
            continue
        if cell.status == "partial":
            if allow_partial:
                out.warnings.append(f"{spec.id}: {need.why} is only partially supported ({where})")
                continue
            raise ModelError(
                f"{spec.id}: {need.why} is only partially supported ({where})",
                "pass --allow-partial to run it anyway",
            )
        runnable = ", ".join(runnable_presets(spec)) or "none of the shipped presets"
        raise ModelError(
            f"{spec.id} does not support {need.why} ({where}). Strategies that run {spec.id}: {runnable}",
            f"see: llmpt matrix --model {spec.aliases[0] if spec.aliases else spec.id}",
        )
    # fused kernels exist only for the layers they fuse
    if s.kernels.fused_rms_norm and spec.norm != "rmsnorm":
        out.kernels_off["fused_rms_norm"] = False
        out.notes.append(f"{spec.id}: fused RMSNorm off (the model uses {spec.norm})")
    if s.kernels.fused_rope and spec.position != "rope":
        out.kernels_off["fused_rope"] = False
        out.notes.append(f"{spec.id}: fused rotary embedding off (the model uses {spec.position} positions)")
    return out


def row_supports(row: Row, needs: list[Need]) -> bool:
    return all(row.cells[n.column].status == "supported" for n in needs if not n.optional)


def runnable_presets(spec: ModelSpec) -> list[str]:
    """Shipped presets whose required cells the model's row supports and whose degrees fit its shape."""
    from llmpt.models.shape import check_model_shape
    from llmpt.strategies.presets import list_presets, resolve_strategy

    row = load_matrix().row(spec.matrix_row)
    out = []
    for name in list_presets():
        s = resolve_strategy(name)
        d = s.parallel.dims.smallest(s.name)
        if not row_supports(row, needed_cells(s, d)):
            continue
        try:
            check_model_shape(spec, s, d, seq_len=spec.max_position_embeddings)
        except ModelError:
            continue
        out.append(name)
    return out
