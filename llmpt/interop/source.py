"""What `--init-from` names, found and checked before anything is written: a PaddleNLP save_pretrained() directory,
a Hugging Face directory (config.json + safetensors, one file or sharded with an index), or a model id with a local
copy in PaddleNLP's or Hugging Face's cache. Nothing is downloaded.

Checked from config.json and the safetensors headers (no tensor data read): the family, every config key the
conversion needs (families.py), the architecture against the model named on the command line, every tensor's
name and shape. A Hugging Face directory is converted later, once every check of the run has passed
(prepare_init_weights), into llmpt's cache, keyed by the source's files; the ranks load that PaddleNLP directory."""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmpt.errors import LlmptError
from llmpt.fsutil import cache_dir
from llmpt.interop import families, safetensors
from llmpt.interop.tokenizer_files import tokenizer_record
from llmpt.models.registry import MODEL_TYPE, ModelSpec, paddlenlp_config

# bump when the conversion's output changes: converted copies in the cache are keyed by it
CONVERSION_VERSION = 1
CONVERTED_MARKER = "llmpt-converted.json"
PADDLE_WEIGHTS = ("model_state.pdparams", "model_state.pdparams.index.json")
SPLIT_PADDLE_WEIGHTS = re.compile(r"^model_state\.(tp\d+|pp\d+|shard\d+)[_a-z0-9]*\.pdparams$")
PADDLE_PREFIXES = ("llama.", "qwen.", "gpt.", "opt.", "bloom.", "chatglm_v2.", "qwen2.", "mistral.", "lm_head.")
HINT = (
    "pass a save_pretrained() directory, a Hugging Face model directory (config.json + *.safetensors) or a model id "
    "copied into the PaddleNLP or Hugging Face cache"
)
# The architecture keys that must agree with the model named on the command line (PaddleNLP config names), with
# PaddleNLP 3.0.0b4's defaults for a config.json that omits them
ARCHITECTURE: dict[str, dict[str, Any]] = {
    "llama": {"hidden_size": None, "num_hidden_layers": None, "num_attention_heads": None,
              "num_key_value_heads": "num_attention_heads", "intermediate_size": None, "alibi": False},
    "qwen": {"hidden_size": None, "num_hidden_layers": None, "num_attention_heads": None, "intermediate_size": None,
             "kv_channels": 128},
    "gpt": {"hidden_size": None, "num_hidden_layers": None, "num_attention_heads": None, "intermediate_size": None},
    "opt": {"hidden_size": None, "num_hidden_layers": None, "num_attention_heads": None, "intermediate_size": None},
    "bloom": {"hidden_size": None, "n_layer": None, "n_head": None},
    "chatglm2": {"hidden_size": None, "num_hidden_layers": None, "num_attention_heads": None,
                 "ffn_hidden_size": None, "kv_channels": 128, "multi_query_group_num": 1},
    "qwen2": {"hidden_size": None, "num_hidden_layers": None, "num_attention_heads": None,
              "num_key_value_heads": "num_attention_heads", "intermediate_size": None},
    "mistral": {"hidden_size": None, "num_hidden_layers": None, "num_attention_heads": None,
                "num_key_value_heads": "num_attention_heads", "intermediate_size": None},
}  # fmt: skip


@dataclass(frozen=True)
class Found:
    """A checked --init-from source."""

    given: str  # as the user typed it
    directory: Path
    where: str  # how it was found: "directory", "PaddleNLP cache", "Hugging Face cache"
    layout: str  # paddle | hf
    config: dict[str, Any]  # its config.json
    paddle_config: dict[str, Any]  # the PaddleNLP config the ranks build
    tensors: dict[str, safetensors.TensorInfo] | None  # safetensors headers (None: .pdparams, not opened)
    tokenizer: dict[str, Any] | None  # tokenizer_files.tokenizer_record of the directory

    @property
    def load_dir(self) -> Path:
        """The PaddleNLP directory the ranks load: the source itself, or its converted copy in the cache."""
        return self.directory if self.layout == "paddle" else converted_dir(self)

    def record(self) -> dict[str, Any]:
        """What run.yaml keeps of it (model.init_source)."""
        return {
            "given": self.given,
            "path": str(self.directory),
            "found_in": self.where,
            "layout": self.layout,
            "converted_to": None if self.layout == "paddle" else str(converted_dir(self)),
            "tokenizer": self.tokenizer,
        }


class InitError(LlmptError):
    """An --init-from source that cannot be used."""


def _err(given: str, what: str, hint: str | None = HINT) -> InitError:
    return InitError(f"--init-from {given}: {what}", hint)


# ---- where it is ---------------------------------------------------------------------------------------------


def paddlenlp_cache_dirs(model_id: str) -> list[Path]:
    """Where PaddleNLP's from_pretrained keeps a model id's files: $PPNLP_HOME/models/ID (default ~/.paddlenlp)."""
    home = Path(os.environ.get("PPNLP_HOME") or Path.home() / ".paddlenlp")
    return [home / "models" / model_id]


def hf_cache_root() -> Path:
    """Hugging Face's hub cache: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "huggingface" / "hub"


def hf_snapshot(model_id: str) -> tuple[Path, Path | None]:
    """(the repository's cache directory, its snapshot: the one refs/main names, else the newest holding a
    config.json; None when there is none). Repository names match case-insensitively, as the Hub's do."""
    root = hf_cache_root()
    wanted = "models--" + model_id.replace("/", "--")
    repo = root / wanted
    if not repo.is_dir() and root.is_dir():
        repo = next((p for p in root.iterdir() if p.name.lower() == wanted.lower()), repo)
    snapshots = repo / "snapshots"
    if not snapshots.is_dir():
        return repo, None
    ref = repo / "refs" / "main"
    if ref.is_file() and (snapshots / ref.read_text().strip() / "config.json").is_file():
        return repo, snapshots / ref.read_text().strip()
    found = sorted((p for p in snapshots.iterdir() if (p / "config.json").is_file()), key=lambda p: p.stat().st_mtime)
    return repo, found[-1] if found else None


def _looks_like_path(given: str) -> bool:
    return given.startswith(("/", ".", "~")) or given.count("/") > 1 or os.sep == "\\" and "\\" in given


def locate(given: str) -> tuple[Path, str]:
    """The directory `given` names and where it was found; InitError saying where llmpt looked otherwise."""
    path = Path(given).expanduser()
    if path.is_dir():
        return path, "directory"
    if path.exists():
        raise _err(given, "a file, not a directory")
    if _looks_like_path(given):
        raise _err(given, "no such directory")
    ids = [given]
    try:
        from llmpt.models.registry import resolve_model

        ids.append(resolve_model(given).id)  # an alias names the registry's id (qwen-7b -> qwen/qwen-7b)
    except LlmptError:
        pass
    looked: list[str] = []
    for model_id in dict.fromkeys(ids):
        for d in paddlenlp_cache_dirs(model_id):
            if (d / "config.json").is_file():
                return d, "PaddleNLP cache"
            looked.append(str(d))
        repo, snap = hf_snapshot(model_id)
        if snap is not None:
            return snap, "Hugging Face cache"
        looked.append(str(repo / "snapshots"))
    raise _err(
        given,
        f"no such directory, and no local copy of that model id (looked in {', '.join(looked)}); llmpt downloads "
        "nothing",
        "copy the weights into one of those places (huggingface-cli download, or PaddleNLP's from_pretrained on a "
        "machine with network), or " + HINT[:1].lower() + HINT[1:],
    )


# ---- what it is ----------------------------------------------------------------------------------------------


def _read_config(given: str, directory: Path) -> dict[str, Any]:
    path = directory / "config.json"
    if not path.is_file():
        raise _err(given, f"no config.json in {directory}")
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _err(given, f"config.json is not valid JSON ({e})", None) from None
    if not isinstance(cfg, dict):
        raise _err(given, "config.json is not a JSON object", None)
    return cfg


def _layout(given: str, directory: Path, cfg: dict[str, Any]) -> tuple[str, dict[str, safetensors.TensorInfo] | None]:
    """paddle or hf, and the safetensors headers when the weights are safetensors."""
    split = sorted(p.name for p in directory.glob("model_state.*.pdparams") if SPLIT_PADDLE_WEIGHTS.match(p.name))
    try:
        has_st = bool(safetensors.weight_files(directory))
        tensors = safetensors.read_headers(directory) if has_st else None
    except safetensors.SafetensorsError as e:
        raise _err(
            given, str(e), "copy the weights again; llmpt reads safetensors headers before anything runs"
        ) from None
    except OSError as e:
        raise _err(given, f"cannot read its weights ({e})", None) from None
    if tensors:
        paddle_named = sum(n.startswith(PADDLE_PREFIXES) for n in tensors)
        return ("paddle" if paddle_named == len(tensors) else "hf"), tensors
    if any((directory / n).is_file() for n in PADDLE_WEIGHTS):
        return "paddle", None
    if split:
        raise _err(
            given,
            f"its weights are split for tensor/pipeline parallel ({split[0]}, ...), which only the same layout loads",
            f"merge them into one model first: llmpt export {given} --format paddle --output DIR, then --init-from DIR",
        )
    if (directory / "pytorch_model.bin").is_file() or list(directory.glob("pytorch_model-*.bin")):
        raise _err(
            given,
            "its weights are torch pickles (pytorch_model*.bin), which llmpt does not read (they need torch)",
            "save them as safetensors: transformers' model.save_pretrained(DIR, safe_serialization=True)",
        )
    raise _err(
        given,
        "no weights there (looked for model_state.pdparams, model_state.pdparams.index.json, model.safetensors, "
        "model.safetensors.index.json, *.safetensors)",
    )


def _paddle_config(given: str, layout: str, cfg: dict[str, Any], spec: ModelSpec) -> dict[str, Any]:
    """The PaddleNLP config the ranks build: the directory's own (PaddleNLP), or its Hugging Face config converted."""
    if layout == "paddle":
        return cfg
    conv = families.CONVERSIONS.get(spec.family)
    if conv is None:
        raise _err(given, f"a Hugging Face checkpoint, but llmpt converts none for the {spec.family} family", None)
    try:
        return conv.from_hf(cfg)
    except families.ConversionRefused as e:
        raise _err(given, f"{e}", "use weights in PaddleNLP's layout, or a model variant llmpt converts") from None
    except (KeyError, TypeError) as e:
        raise _err(given, f"config.json lacks {e} that a {cfg.get('model_type')} config has", None) from None


def _check_model_type(given: str, cfg: dict[str, Any], spec: ModelSpec) -> None:
    """The directory holds the model's family (PaddleNLP's model_type, or one of Hugging Face's for it)."""
    have = cfg.get("model_type")
    conv = families.CONVERSIONS.get(spec.family)
    allowed = {MODEL_TYPE[spec.family], *(conv.hf_model_types if conv else ())}
    if have in allowed:
        return
    reason = families.NOT_CONVERTED.get(str(have))
    tail = f" ({reason})" if reason else ""
    raise _err(given, f"a {have!r} checkpoint, but the model is a {spec.family} model{tail}", None)


def check_architecture(given: str, pcfg: dict[str, Any], spec: ModelSpec) -> None:
    """The weights are the model named on the command line: every architecture key of the family agrees with the
    registry (at its real or tiny size); the first that does not is named."""
    want = paddlenlp_config(spec, from_scratch=False)
    for key, default in ARCHITECTURE.get(spec.family, {}).items():
        fallback = pcfg.get(default) if isinstance(default, str) else default
        have = pcfg.get(key, fallback)
        expected = want.get(key, want.get(default) if isinstance(default, str) else default)
        if have != expected:
            raise _err(
                given,
                f"config.json gives {key} {have!r}, but {spec.id} has {expected!r}: these weights are another model",
                f"name the model these weights are (llmpt models list), or pass weights of {spec.id}",
            )


def _strip_unknown_prefix(names: list[str], prefix: str) -> dict[str, str]:
    """File name -> canonical name: an older checkpoint without the base-model prefix (gpt2's `h.0.…`,
    bloom-560m's `word_embeddings.…`) gets it."""
    if not prefix or any(n.startswith(prefix) for n in names):
        return {n: n for n in names}
    return {n: n if n.startswith("lm_head.") else prefix + n for n in names}


def hf_names(tensors: dict[str, safetensors.TensorInfo], conv: families.Conversion) -> dict[str, str]:
    """Canonical Hugging Face name -> name in the file."""
    return {canon: name for name, canon in _strip_unknown_prefix(list(tensors), conv.hf_prefix).items()}


def check_tensors(given: str, found_layout: str, tensors: dict[str, safetensors.TensorInfo], pcfg: dict[str, Any],
                  spec: ModelSpec) -> None:  # fmt: skip
    """Every tensor the model needs is in the files with its shape, and nothing else is (buffers aside)."""
    conv = families.CONVERSIONS[spec.family]
    if found_layout == "paddle":
        expected = conv.paddle_shapes(pcfg)
        by_name = {n: n for n in tensors}
        fused = tuple(families.fused_tensors(spec.family, pcfg))
        optional: set[str] = set()
        if any(n.endswith(fused) for n in tensors):
            optional = set(expected)  # fused names stand in for some plain ones; PaddleNLP splits them on load
        head = conv.head(pcfg)
        if head is None or head.paddle is None:  # tied: PaddleNLP may save the head too (the embedding itself)
            optional |= {"lm_head.weight", "lm_head.decoder_weight"}
            expected = {**expected, **{n: tensors[n].shape for n in optional & set(tensors) if n.startswith("lm_")}}
    else:
        by_name = hf_names(tensors, conv)
        head = conv.head(pcfg)
        tied = head is not None and head.hf not in by_name
        if tied and head.paddle is not None and not conv.to_hf(pcfg, True).get("tie_word_embeddings"):
            raise _err(given, f"the files have no {head.hf}, and config.json does not tie it to the embedding", None)
        expected = families.hf_layout(conv, pcfg, tied=tied)
        optional = {n for n in expected if n.endswith("inv_freq")}
        if head is not None and head.paddle is None:
            optional.add(head.hf)
    for name, shape in expected.items():
        info = tensors.get(by_name.get(name, name))
        if info is None:
            if name in optional:
                continue
            raise _err(given, f"the weights have no {name} (a {spec.family} of this config needs it)", None)
        if tuple(info.shape) != tuple(shape):
            raise _err(
                given,
                f"{info.name} is {list(info.shape)} in {info.file.name}, but {spec.id} with this config.json needs "
                f"{list(shape)}",
                "pass weights of this model, unmodified",
            )
    ignored = tuple(conv.hf_ignored) + ("inv_freq",)
    for name in by_name:
        if name not in expected and not name.endswith(ignored) and not name.endswith(fused_suffixes(spec, pcfg)):
            shown = by_name[name]
            raise _err(given, f"{shown} ({tensors[shown].file.name}) has no place in a {spec.family} model", None)


def fused_suffixes(spec: ModelSpec, pcfg: dict[str, Any]) -> tuple[str, ...]:
    return tuple(families.fused_tensors(spec.family, pcfg))


def find_init(given: str, spec: ModelSpec) -> Found:
    """Every check of an --init-from source; InitError with one line for the first that fails."""
    directory, where = locate(given)
    cfg = _read_config(given, directory)
    _check_model_type(given, cfg, spec)
    layout, tensors = _layout(given, directory, cfg)
    if layout == "hf" and cfg.get("model_type") == MODEL_TYPE[spec.family] and "paddlenlp_version" in cfg:
        raise _err(given, "config.json is PaddleNLP's but the tensors are not named as PaddleNLP names them", None)
    pcfg = _paddle_config(given, layout, cfg, spec)
    check_architecture(given, pcfg, spec)
    if tensors is not None and spec.family in families.CONVERSIONS:
        check_tensors(given, layout, tensors, pcfg, spec)
    return Found(given, directory, where, layout, cfg, pcfg, tensors, tokenizer_record(directory))


def init_config(given: str | None) -> dict[str, Any] | None:
    """The config.json an --init-from path holds, if any (for checks that run before the source is resolved, such
    as the sequence length against learned positions; the source itself is checked by find_init)."""
    if not given:
        return None
    path = Path(given).expanduser()
    try:
        cfg = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return cfg if isinstance(cfg, dict) else None


# ---- converted copies ----------------------------------------------------------------------------------------


def source_key(found: Found) -> str:
    """The key of a source's converted copy: the conversion's version, the family and config, and each weight
    file's name, size and modification time (a changed file is a new key)."""
    h = hashlib.sha256(f"{CONVERSION_VERSION}\0{json.dumps(found.paddle_config, sort_keys=True)}\0".encode())
    for info in sorted({t.file for t in (found.tensors or {}).values()}):
        st = info.stat()
        h.update(f"{info.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def converted_dir(found: Found) -> Path:
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", found.directory.name if found.where == "directory" else found.given)
    return cache_dir() / "init" / f"{name}-{source_key(found)}"


# ---- the tokenizer that came with the weights ---------------------------------------------------------------


def check_tokenizer(found: Found, data_tokenizers: dict[str, dict[str, Any]]) -> str | None:
    """Data prepared with another tokenizer than the weights' is refused (each --data prefix's manifest record,
    llmpt/data/prepare.py). Returns the note to show when the weights bring no tokenizer, else None."""
    from llmpt.interop.tokenizer_files import differs

    if found.tokenizer is None:
        return (
            f"--init-from {found.given}: the weights bring no tokenizer files; the data's tokenizer is used "
            "(prepare-data recorded it)"
        )
    for prefix, record in data_tokenizers.items():
        record = dict(record or {})
        if not record.get("files") and record.get("dir") and Path(record["dir"]).is_dir():
            mine = tokenizer_record(Path(record["dir"]))  # the shipped corpus before it is prepared
            record["files"] = mine["files"] if mine else {}
        why = differs(found.tokenizer, record)
        if why:
            raise InitError(
                f"--data {prefix}: prepared with another tokenizer than the one that came with the --init-from "
                f"weights ({found.directory}): {why}",
                f"prepare the data with the weights' tokenizer: llmpt prepare-data INPUT… -o PREFIX --tokenizer "
                f"{found.directory}",
            )
    return None


def positions_config(given: str | None, family: str) -> dict[str, Any] | None:
    """The PaddleNLP config of an --init-from source as far as its config.json alone says (None when there is none
    to read); for the checks made before the source is resolved, like the sequence length against learned positions.
    A model id in the caches is found; nothing is refused here (find_init does that, with its own message)."""
    if not given:
        return None
    try:
        directory, _ = locate(given)
    except LlmptError:
        return None
    cfg = init_config(str(directory))
    conv = families.CONVERSIONS.get(family)
    if cfg is None or conv is None or cfg.get("model_type") == conv.paddle_model_type:
        return cfg
    try:
        return conv.from_hf(cfg) if cfg.get("model_type") in conv.hf_model_types else None
    except (families.ConversionRefused, KeyError, TypeError):
        return None
