"""Tensors from one layout to the other through the conversion table (families.py), and the converted copy of a
Hugging Face --init-from source that the ranks load (prepare_init_weights), written once every check has passed."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmpt.interop import families, safetensors
from llmpt.interop.source import CONVERTED_MARKER, hf_names


def to_hf(family: str, config: dict[str, Any], tensors: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """PaddleNLP tensors (unfused, float32 or the stored dtype) -> (Hugging Face tensors by name, whether the head
    is tied to the embedding, so not written), eagerly (see hf_producers)."""
    producers, tied = hf_producers(family, config, tensors.__getitem__, {n: tuple(a.shape) for n, a in tensors.items()})
    return {n: make() for n, (_, make) in producers.items()}, tied


def hf_producers(
    family: str, config: dict[str, Any], get: Callable[[str], Any], shapes: dict[str, tuple[int, ...]]
) -> tuple[dict[str, tuple[tuple[int, ...], Callable[[], Any]]], bool]:
    """Hugging Face name -> (shape, a function making the tensor from the PaddleNLP ones `get` returns), and whether
    the head is tied to the embedding (then not written), so that an export holds one tensor at a time, not the
    model (a 70B model is 280 GB in float32). A head that still equals the embedding is written tied."""
    import numpy as np

    conv = families.conversion(family)
    out: dict[str, tuple[tuple[int, ...], Callable[[], Any]]] = {
        r.hf: (r.hf_shape(shapes), lambda r=r: r.to_hf([get(p) for p in r.paddle])) for r in conv.rules(config)
    }
    head = conv.head(config)
    tied = True
    if head is not None and head.paddle is not None:
        same = (
            head.kind == "copy"
            and shapes[head.paddle] == shapes[head.embedding]
            and np.array_equal(get(head.paddle), get(head.embedding))
        )
        tied = same and bool(conv.to_hf(config, True).get("tie_word_embeddings"))
        if not tied:
            linear = head.kind == "linear"
            shape = tuple(reversed(shapes[head.paddle])) if linear else shapes[head.paddle]

            def make(name: str = head.paddle, linear: bool = linear) -> Any:
                arr = get(name)
                return np.ascontiguousarray(arr.T) if linear else arr

            out[head.hf] = (shape, make)
    elif head is None:
        tied = bool(config.get("tie_word_embeddings"))
    return out, tied


def from_hf(family: str, config: dict[str, Any], tensors: dict[str, Any]) -> dict[str, Any]:
    """Hugging Face tensors (by canonical name) -> PaddleNLP tensors, eagerly (see paddle_producers)."""
    return {n: make() for n, (_, make) in paddle_producers(family, config, tensors.__getitem__, set(tensors)).items()}


def paddle_producers(
    family: str, config: dict[str, Any], get: Callable[[str], Any], present: set[str]
) -> dict[str, tuple[tuple[int, ...], Callable[[], Any]]]:
    """PaddleNLP name -> (shape, a function making the tensor from the Hugging Face ones `get` returns by canonical
    name), so that a large model is converted one tensor at a time. A tied head that PaddleNLP keeps apart (OPT's
    decoder_weight) starts as a copy of the embedding; a rotary buffer the file lacks is left to the model."""
    import numpy as np

    conv = families.conversion(family)
    shapes = conv.paddle_shapes(config)
    out: dict[str, tuple[tuple[int, ...], Callable[[], Any]]] = {}
    for r in conv.rules(config):
        if r.hf not in present:
            if r.hf.endswith("inv_freq"):
                continue
            raise KeyError(r.hf)
        for i, name in enumerate(r.paddle):
            out[name] = (shapes[name], lambda r=r, i=i: r.from_hf(get(r.hf), shapes)[i])
    head = conv.head(config)
    if head is not None and head.paddle is not None:
        src = head.hf if head.hf in present else conv_hf_name(conv, config, head.embedding)

        def make(src: str = src, kind: str = head.kind if head.hf in present else "copy") -> Any:
            arr = get(src)
            return np.ascontiguousarray(arr.T) if kind == "linear" else arr

        out[head.paddle] = (shapes[head.paddle], make)
    return out


def conv_hf_name(conv: families.Conversion, config: dict[str, Any], paddle_name: str) -> str:
    return next(r.hf for r in conv.rules(config) if r.paddle == (paddle_name,))


@dataclass(frozen=True)
class Written:
    files: list[Path]
    dtype: str  # safetensors dtype of the tensors written
    tied: bool  # the head is the embedding (not written)
    tensors: int
    parameters: int


TORCH_DTYPES = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}


def write_model(
    out_dir: Path,
    fmt: str,
    family: str,
    config: dict[str, Any],
    tensors: dict[str, Any],
    dtype: str,
    max_bytes: int,
    stored: dict[str, str] | None = None,
) -> Written:
    """A PaddleNLP state (unfused) as a model directory: `hf` (Hugging Face's names, layout and config, safetensors
    marked "pt") or `paddle` (PaddleNLP's, safetensors marked "np", which its from_pretrained reads; numpy has no
    bfloat16, so bf16 is written as float32 there, exactly). `tensors` are float32, or as stored (memory maps) with
    `stored` giving each one's safetensors dtype: then each is read, converted and written one at a time."""
    conv = families.conversion(family)

    def get(name: str) -> Any:
        return safetensors.to_float32(tensors[name], stored[name]) if stored is not None else tensors[name]

    shapes = {n: tuple(a.shape) for n, a in tensors.items()}
    if fmt == "hf":
        producers, tied = hf_producers(family, config, get, shapes)
        out_config = {**conv.to_hf(config, tied), "torch_dtype": TORCH_DTYPES[dtype], "use_cache": True}
        metadata = {"format": "pt"}
    else:
        producers = {n: (shapes[n], lambda n=n: get(n)) for n in conv.paddle_shapes(config) if n in tensors}
        head = conv.head(config)
        tied = head is None or head.paddle is None
        dtype = "F32" if dtype == "BF16" else dtype
        out_config = {**config, "dtype": TORCH_DTYPES[dtype]}
        metadata = {"format": "np"}
    item = safetensors.ITEM_SIZES[dtype]
    pend = {
        n: safetensors.Pending(
            dtype, shape, item * _numel(shape), lambda make=make: safetensors.encode(make(), dtype)[1]
        )
        for n, (shape, make) in producers.items()
    }
    files = safetensors.write_sharded(out_dir, pend, metadata, max_bytes)
    (out_dir / "config.json").write_text(json.dumps(out_config, indent=2) + "\n")
    params = sum(_numel(p.shape) for p in pend.values())
    return Written([*files, out_dir / "config.json"], dtype, tied, len(pend), params)


def _paddle_dtype(dtype: str) -> str:
    """What a converted tensor is written as for PaddleNLP: numpy has no bfloat16, and PaddleNLP reads safetensors
    through numpy, so bfloat16 becomes float32 (exact); float16 and float32 stay."""
    return "F16" if dtype == "F16" else "F32"


def convert_hf_dir(source: Path, family: str, paddle_config: dict[str, Any], out_dir: Path) -> list[Path]:
    """A Hugging Face directory's weights as a PaddleNLP save_pretrained() directory (config.json + safetensors in
    PaddleNLP's names and layout, which its from_pretrained reads), written into the existing, empty `out_dir`."""
    infos = safetensors.read_headers(source)
    canon = {c: infos[n] for c, n in hf_names(infos, families.conversion(family)).items()}

    def get(name: str) -> Any:
        return safetensors.to_float32(safetensors.load(canon[name]), canon[name].dtype)

    dtype = _paddle_dtype("F16" if {i.dtype for i in canon.values()} == {"F16"} else "F32")
    producers = paddle_producers(family, paddle_config, get, set(canon))
    item = safetensors.ITEM_SIZES[dtype]
    pend = {
        n: safetensors.Pending(
            dtype, shape, item * _numel(shape), lambda make=make: safetensors.encode(make(), dtype)[1]
        )
        for n, (shape, make) in producers.items()
    }
    written = safetensors.write_sharded(out_dir, pend, {"format": "np"}, 5 * 2**30)
    cfg = {**paddle_config, "dtype": "float16" if dtype == "F16" else "float32"}
    (out_dir / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    return [*written, out_dir / "config.json"]


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def prepare_init_weights(init_source: dict[str, Any] | None, family: str) -> Path | None:
    """The converted copy of a Hugging Face --init-from source (run.yaml model.init_source), made if it is not in
    the cache yet: into a temporary directory beside it, renamed into place with a marker, so a cut-short conversion
    is never loaded. Called once every check of the run has passed (llmpt train, llmpt run-node)."""
    if not init_source or init_source.get("layout") != "hf":
        return None
    target = Path(init_source["converted_to"])
    if (target / CONVERTED_MARKER).is_file():
        return target
    from llmpt.interop.source import _read_config

    source = Path(init_source["path"])
    paddle_config = families.conversion(family).from_hf(_read_config(init_source["given"], source))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        convert_hf_dir(source, family, paddle_config, tmp)
        (tmp / CONVERTED_MARKER).write_text(json.dumps({"from": str(source), "family": family}) + "\n")
        if target.exists():
            shutil.rmtree(target)  # a copy without its marker: a conversion cut short
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
