"""`llmpt export`: a run (its final model, else its newest complete checkpoint), one checkpoint-N, or a
save_pretrained() directory, written as one unsplit model in the Hugging Face layout (config.json with Hugging
Face's names, safetensors, sharded with an index above --max-shard-size) or PaddleNLP's, with its tokenizer files.

Every check comes first (the source is complete and readable, the family converts, the output directory is new);
the files are written into a temporary directory beside the output and renamed into place, so a refusal or a
failure leaves nothing behind."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmpt.errors import LlmptError
from llmpt.interop import checkpoint, convert, families, safetensors
from llmpt.interop.tokenizer_files import copy_tokenizer
from llmpt.launch.checkpoints import MARKER, is_complete, last_complete
from llmpt.run_dir import CHECKPOINT_RE, RunDir

FORMATS = ("hf", "paddle")
DTYPES = {"fp32": "F32", "bf16": "BF16", "fp16": "F16"}
DEFAULT_MAX_SHARD = "5GB"


class ExportError(LlmptError):
    """A source or an output `llmpt export` refuses."""


@dataclass(frozen=True)
class Source:
    """What will be exported: the weights' directory, the family, their config, where the tokenizer comes from."""

    given: str
    weights_dir: Path
    what: str  # "final model of run R", "checkpoint-N of run R", "checkpoint-N", "save_pretrained() directory"
    family: str
    config: dict[str, Any]
    tokenizer_dir: Path | None
    step: int | None


def parse_size(text: str) -> int:
    """'5GB', '500MB', '2GiB', '1000000' -> bytes (decimal units as transformers' max_shard_size reads them)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*", text, re.IGNORECASE)
    if not m:
        raise ExportError(f"--max-shard-size {text}: not a size", "e.g. --max-shard-size 5GB (or 500MB, 2GiB)")
    unit = (m.group(2) or "B").upper()
    base = 1024 if "I" in unit else 1000
    power = "BKMGT".index(unit[0]) if unit != "B" else 0
    size = int(float(m.group(1)) * base**power)
    if size < 1:
        raise ExportError(f"--max-shard-size {text}: must be at least 1 byte")
    return size


def _family(config: dict[str, Any], given: str) -> str:
    fam = families.family_of_paddle_type(str(config.get("model_type")))
    if fam is None:
        raise ExportError(
            f"{given}: a {config.get('model_type')!r} model, which llmpt does not export; exported families: "
            f"{', '.join(families.CONVERSIONS)}"
        )
    return fam


def _has_weights(d: Path) -> bool:
    return (d / "config.json").is_file() and (
        any(d.glob("model_state*.pdparams"))
        or bool(safetensors.weight_files(d))
        or (d / "model_state.pdparams.index.json").is_file()
    )


def _run_yaml(run_dir: Path) -> Any | None:
    from llmpt.run_config import load_run_yaml

    run = RunDir(run_dir)
    return load_run_yaml(run.run_yaml) if run.run_yaml.is_file() else None


def _config(d: Path, given: str) -> dict[str, Any]:
    try:
        cfg = json.loads((d / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ExportError(f"{given}: {d / 'config.json'} is not readable JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise ExportError(f"{given}: {d / 'config.json'} is not a JSON object")
    return cfg


def find_source(given: str) -> Source:
    """The weights RUN_OR_CHECKPOINT names; ExportError naming what is wrong with it."""
    path = Path(given).expanduser()
    if not path.is_dir():
        raise ExportError(
            f"{given}: {'not a directory' if path.exists() else 'no such directory'}",
            "pass a run directory (llmpt train -o DIR), one of its checkpoint-N, or a save_pretrained() directory",
        )
    m = CHECKPOINT_RE.match(path.name)
    if m:
        if not is_complete(path):
            why = "no " + MARKER if not (path / MARKER).is_file() else "its files changed since " + MARKER
            raise ExportError(
                f"{given}: an incomplete checkpoint ({why}): a save cut short, or a copy in progress",
                "export the run directory (its newest complete checkpoint), or another checkpoint-N",
            )
        cfg = _config(path, given)
        run = _run_yaml(path.parent)
        tok = Path(run.data.tokenizer_dir) if run is not None else path
        owner = f" of run {path.parent}" if run is not None else ""
        return Source(given, path, f"{path.name}{owner}", _family(cfg, given), cfg, tok, int(m.group(1)))
    run = _run_yaml(path)
    if run is not None:
        tok = Path(run.data.tokenizer_dir)
        if _has_weights(path):
            cfg = _config(path, given)
            return Source(given, path, f"final model of run {path}", _family(cfg, given), cfg, tok, None)
        ckpt = last_complete(path)
        if ckpt is None:
            raise ExportError(
                f"{given}: a run with no final model and no complete checkpoint (still running, or stopped before "
                "its first save)",
                "wait for it to save (train.save_steps), or pass a checkpoint-N that is complete",
            )
        cfg = _config(ckpt, given)
        step = int(CHECKPOINT_RE.match(ckpt.name).group(1))  # type: ignore[union-attr]
        return Source(given, ckpt, f"{ckpt.name} of run {path}", _family(cfg, given), cfg, tok, step)
    if _has_weights(path):
        cfg = _config(path, given)
        return Source(given, path, "save_pretrained() directory", _family(cfg, given), cfg, path, None)
    raise ExportError(
        f"{given}: neither a run (no run.yaml), a checkpoint-N, nor a model directory (config.json + weights)",
        "pass a run directory (llmpt train -o DIR), one of its checkpoint-N, or a save_pretrained() directory",
    )


def check_output(output: Path) -> None:
    """A new or empty directory that can be written; nothing is created."""
    from llmpt.fsutil import check_writable, why_unwritable

    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise ExportError(
            f"--output {output}: {'not a directory' if not output.is_dir() else 'not empty'}",
            "export into a new directory",
        )
    try:
        check_writable(output)
    except OSError as e:
        raise ExportError(f"--output {output}: {why_unwritable(output, e)}", "choose a writable --output") from None


def _clean_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """A PaddleNLP config as save_pretrained() would write it for one process: the parallel layout it was trained
    with dropped (the export is one unsplit model)."""
    drop = {"tensor_parallel_degree", "tensor_parallel_rank", "tensor_parallel_output", "sep_parallel_degree",
            "context_parallel_degree", "sequence_parallel", "fuse_attention_qkv", "fuse_attention_ffn"}  # fmt: skip
    out = {k: v for k, v in cfg.items() if k not in drop}
    out["architectures"] = [a.removesuffix("Pipe") for a in cfg.get("architectures") or []]
    return out


def export(given: str, output: str, fmt: str = "hf", dtype: str | None = None, max_shard: str = DEFAULT_MAX_SHARD
           ) -> dict[str, Any]:  # fmt: skip
    """Check, read, merge, convert and write; the report `--json` prints."""
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt}: allowed: {', '.join(FORMATS)}")
    if dtype is not None and dtype not in DTYPES:
        raise ExportError(f"--dtype {dtype}: allowed: {', '.join(DTYPES)} (default: as the weights are stored)")
    if fmt == "paddle" and dtype == "bf16":
        raise ExportError(
            "--dtype bf16 with --format paddle: PaddleNLP reads safetensors through numpy, which has no bfloat16",
            "export fp32 or fp16 for PaddleNLP, or bf16 with --format hf",
        )
    max_bytes = parse_size(max_shard)
    out = Path(output).expanduser()
    src = find_source(given)
    config = _clean_config(src.config)
    conv = families.conversion(src.family)
    try:
        conv.paddle_shapes(config)
        if fmt == "hf":
            conv.to_hf(config, True)  # a config Hugging Face's layout cannot express is refused before reading
    except families.ConversionRefused as e:
        raise ExportError(f"{given}: {e}") from None
    except (KeyError, TypeError, ValueError) as e:
        raise ExportError(f"{given}: its config.json lacks {e} (a {src.family} config states it)") from None
    check_output(out)
    try:
        state = checkpoint.read_state(src.weights_dir, src.family, src.config)
    except (OSError, safetensors.SafetensorsError) as e:
        raise ExportError(f"{given}: cannot read the weights ({e})") from None
    checkpoint.unfuse_state(src.family, config, state)
    _check_complete(given, conv, config, state)
    stored = sorted(set(state.dtypes[n] for n in conv.paddle_shapes(config) if n in state.dtypes))
    write_dtype = (
        DTYPES[dtype] if dtype else (stored[0] if len(stored) == 1 and stored[0] in DTYPES.values() else "F32")
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        written = convert.write_model(tmp, fmt, src.family, config, state.tensors, write_dtype, max_bytes, state.dtypes)
        tok_files = copy_tokenizer(src.tokenizer_dir, tmp, hf_names=fmt == "hf") if src.tokenizer_dir else []
        files = [*written.files, *tok_files]
        if out.exists():
            out.rmdir()  # checked empty above
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {
        "source": given,
        "weights": src.what,
        "weights_dir": str(src.weights_dir),
        "step": src.step,
        "family": src.family,
        "format": fmt,
        "dtype": {v: k for k, v in DTYPES.items()}[written.dtype],
        "output_dir": str(out),
        "merged": {"files": state.files, "tp": state.tp, "pp": state.pp},
        "tensors": written.tensors,
        "parameters": written.parameters,
        "tied_embeddings": written.tied,
        "files": [{"path": str(out / f.name), "bytes": (out / f.name).stat().st_size} for f in files],
        "tokenizer_files": [f.name for f in tok_files],
        "remote_code": conv.remote_code if fmt == "hf" else None,
    }


def _check_complete(given: str, conv: families.Conversion, config: dict[str, Any], state: checkpoint.State) -> None:
    """Every tensor the config's model has, with its shape (the checkpoint is the model its config.json says)."""
    for name, shape in conv.paddle_shapes(config).items():
        arr = state.tensors.get(name)
        if arr is None:
            raise ExportError(f"{given}: the weights have no {name} (read {', '.join(state.files)})")
        if tuple(arr.shape) != tuple(shape):
            raise ExportError(f"{given}: {name} is {list(arr.shape)}, but its config.json makes it {list(shape)}")
