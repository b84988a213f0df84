"""The weights of a PaddleNLP model directory, whatever layout wrote them, as one unsplit state: a save_pretrained()
directory, a run's final model or one of its checkpoint-N, from any strategy.

What PaddleNLP 3.0.0b4's Trainer writes on CPU ranks (measured on llama-tiny):
  dp, sharding stage 1/2/3   model_state.pdparams, whole (stage 3 gathers before saving)
  tp2                        model_state.tp00.pdparams, model_state.tp01.pdparams: each rank's slices
  pp2                        model_state.pp00.pdparams, model_state.pp01.pdparams: each stage's layers, under the
                             single-model names
  tp2 x pp2                  model_state.tp00_pp00.pdparams ... model_state.tp01_pp01.pdparams
  unified_checkpoint         model.safetensors / model-0000K-of-0000N.safetensors + index: whole tensors
A .pdparams file is a pickle of numpy arrays (bfloat16 as uint16): read here without paddle, by an unpickler that
admits numpy's array constructors and nothing else. Tensor-parallel slices are put back together by the split rule of
each tensor (families.tp_parts; a plain split is found from the full shape the config gives)."""

from __future__ import annotations

import json
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmpt.errors import LlmptError
from llmpt.interop import families, safetensors

RANK_FILE = re.compile(r"^model_state\.((?:tp|pp|shard)\d+(?:_(?:tp|pp|shard)\d+)*)\.pdparams$")
SHARDED_INDEX = "model_state.pdparams.index.json"
# keys paddle.save adds next to the tensors
NOT_TENSORS = ("StructuredToParameterName@@",)


class CheckpointError(LlmptError):
    """Weights that cannot be read or put together."""


class _NumpyOnly(pickle.Unpickler):
    """A .pdparams pickle holds numpy arrays in a dict: nothing else may be constructed while reading one."""

    def find_class(self, module: str, name: str) -> Any:
        if module.split(".")[0] == "numpy" or (module, name) == ("collections", "OrderedDict"):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not a numpy array constructor")


def read_pdparams(path: Path) -> dict[str, Any]:
    """One .pdparams file's tensors (numpy arrays), without paddle."""
    try:
        with path.open("rb") as f:
            state = _NumpyOnly(f).load()
    except (pickle.UnpicklingError, EOFError, ValueError, AttributeError, ImportError) as e:
        raise CheckpointError(f"{path}: not a readable .pdparams file ({e})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a state dict")
    return {k: v for k, v in state.items() if k not in NOT_TENSORS and hasattr(v, "shape")}


@dataclass
class State:
    """A whole model's tensors by PaddleNLP name, and what they were read from."""

    tensors: dict[str, Any]  # numpy arrays: float32, float16, or uint16 holding bfloat16
    dtypes: dict[str, str]  # name -> safetensors dtype of how it was stored (F32, F16, BF16)
    files: list[str]  # the files read, relative to the directory
    tp: int = 1
    pp: int = 1


def _dtype_of(arr: Any) -> str:
    kind = str(arr.dtype)
    return {"float32": "F32", "float16": "F16", "uint16": "BF16", "float64": "F64"}.get(kind, kind)


def _rank_of(tag: str, axis: str) -> int:
    m = re.search(rf"{axis}(\d+)", tag)
    return int(m.group(1)) if m else 0


def read_state(directory: Path, family: str, config: dict[str, Any]) -> State:
    """The unsplit state of a model directory (see the module docstring for the layouts)."""
    st_files = safetensors.weight_files(directory)
    if st_files:
        infos = safetensors.read_headers(directory)
        tensors = {n: safetensors.load(i) for n, i in infos.items()}
        return State(tensors, {n: i.dtype for n, i in infos.items()}, [p.name for p in st_files])
    if (directory / "model_state.pdparams").is_file():
        t = read_pdparams(directory / "model_state.pdparams")
        return State(t, {n: _dtype_of(a) for n, a in t.items()}, ["model_state.pdparams"])
    if (directory / SHARDED_INDEX).is_file():
        weight_map = json.loads((directory / SHARDED_INDEX).read_text())["weight_map"]
        t = {}
        for f in sorted(set(weight_map.values())):
            t |= read_pdparams(directory / f)
        return State(t, {n: _dtype_of(a) for n, a in t.items()}, sorted(set(weight_map.values())))
    ranked = sorted((m.group(1), p) for p in directory.glob("model_state.*.pdparams") if (m := RANK_FILE.match(p.name)))
    if not ranked:
        raise CheckpointError(f"{directory}: no weights (model_state*.pdparams or *.safetensors)")
    tp = 1 + max(_rank_of(tag, "tp") for tag, _ in ranked)
    pp = 1 + max(_rank_of(tag, "pp") for tag, _ in ranked)
    by_tp: list[dict[str, Any]] = [{} for _ in range(tp)]
    for tag, path in ranked:
        part = read_pdparams(path)
        mine = by_tp[_rank_of(tag, "tp")]
        for name, arr in part.items():
            if name in mine and tuple(mine[name].shape) != tuple(arr.shape):
                raise CheckpointError(
                    f"{path}: {name} is {list(arr.shape)} here and {list(mine[name].shape)} in another file of the "
                    "same tensor-parallel rank (a parameter split by sharding is not merged by llmpt)"
                )
            mine.setdefault(name, arr)
    names = list(by_tp[0])
    for r, mine in enumerate(by_tp):
        if list(mine) != names and set(mine) != set(names):
            missing = sorted(set(names) ^ set(mine))[0]
            raise CheckpointError(
                f"{directory}: tensor-parallel rank {r} lacks or adds {missing} (an incomplete copy?)"
            )
    full = families.conversion(family).paddle_shapes(config) if family in families.CONVERSIONS else {}
    tensors = {n: merge_tp(family, n, [m[n] for m in by_tp], full.get(n), config) for n in names}
    return State(tensors, {n: _dtype_of(a) for n, a in tensors.items()}, [p.name for _, p in ranked], tp, pp)


def merge_tp(family: str, name: str, shards: list[Any], full: tuple[int, ...] | None, config: dict[str, Any]):
    """One tensor from its tensor-parallel slices (rank order): replicated tensors as they are, fused ones part by
    part (families.tp_parts), others concatenated along the one axis the full shape says was split."""
    import numpy as np

    tp = len(shards)
    if tp == 1:
        return shards[0]
    shape = tuple(shards[0].shape)
    if full is not None and shape == tuple(full):
        return shards[0]  # replicated (norms, row-parallel biases)
    parts = families.tp_parts(family, name, config)
    if parts is not None:
        total = sum(parts)
        per = [shape[-1] * p // total for p in parts]
        cut = np.cumsum(per)[:-1]
        pieces = [np.split(s, cut, axis=-1) for s in shards]
        return np.concatenate([np.concatenate([p[i] for p in pieces], axis=-1) for i in range(len(parts))], axis=-1)
    if full is not None:
        axes = [a for a, (s, f) in enumerate(zip(shape, full, strict=True)) if s * tp == f]
        if len(axes) != 1:
            raise CheckpointError(f"{name}: slices of {list(shape)} do not make {list(full)} over {tp} ranks")
        return np.concatenate(shards, axis=axes[0])
    if all(np.array_equal(shards[0], s) for s in shards[1:]):
        return shards[0]
    return np.concatenate(shards, axis=-1)  # a fused column-parallel tensor (qkv_proj): split on its last axis


def unfuse_state(family: str, config: dict[str, Any], state: State) -> None:
    """Fused tensors (fuse_attention_qkv / fuse_attention_ffn runs) split back into PaddleNLP's plain names, in
    place."""
    fused = families.fused_tensors(family, config)
    for name in [n for n in state.tensors if n.endswith(tuple(fused))]:
        suffix = next(s for s in fused if name.endswith(s))
        prefix = name[: -len(suffix)]
        f = fused[suffix]
        arrays = families.unfuse(f, state.tensors.pop(name))
        dtype = state.dtypes.pop(name)
        for part, arr in zip(f.parts, arrays, strict=True):
            state.tensors[prefix + part] = arr
            state.dtypes[prefix + part] = dtype
