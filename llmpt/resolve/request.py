"""What the user asked for, before anything is checked: one request for train, plan, launch-script and rehearse,
and the layering of `--config FILE`, the named flags and `--set` on top of llmpt's defaults.

Precedence: defaults < preset < --config FILE < named flags < --set a.b=v. Every key of every layer is checked here
against the schema of the section it fills (SCHEMA), typed by its field, and remembered with the flag, `--set` or
file that set it, so that every refusal names what the user typed; the train settings are checked against each
other here too (warm-up vs run length, floor vs peak learning rate, cadences vs the last step)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any

from annotated_types import Ge
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llmpt.errors import ConfigError, LlmptError
from llmpt.models.registry import ROPE_SCALING_FAMILIES, ModelSpec, RopeScaling, rope_scaling_config
from llmpt.overrides import (
    Leaf,
    Origin,
    Section,
    Setting,
    load_yaml,
    nest,
    parse_set,
    read_layer,
    unflatten,
)
from llmpt.run_config import DataSection, TrainSettings, schedule_conflicts, split_documents
from llmpt.strategies.expand import MANAGED_TRAINING_ARGS, OWNED_TRAINING_ARGS
from llmpt.strategies.paddlenlp_fields import PADDLENLP_VERSION, TRAINING_ARGUMENTS
from llmpt.strategies.presets import read_yaml
from llmpt.strategies.schema import PRESET_SECTIONS, Strategy

DEFAULT_SEQ_LEN = 4096  # the seed table's sequence length
TINY_SEQ_LEN = 128  # tiny models are CPU rehearsal models: short sequences keep a CPU step fast
# the README's main job: a tiny llama on the shipped corpus, 2 CPU ranks, data parallel
DEMO = {"model": "llama-tiny", "strategy": "dp2", "device": "cpu", "max_steps": 200}
DEMO_TRAIN = {"learning_rate": 3e-3, "min_learning_rate": 3e-4, "warmup_steps": 20}
# one micro batch of 8 per rank and step: the dp2 preset's 1 x 8 accumulation is for GPUs, not 2 CPU cores
DEMO_STRATEGY = {"batch": {"micro_batch_size": 8, "grad_accum": 1}}
# Continued pretraining (--init-from) is the seed's scenario: its configurations (llm/llama/pretrain-*.json,
# continue_training 1) decay from 3e-5 to 3e-6 after 30 warm-up steps. From scratch keeps TrainSettings' defaults.
SEED_CONTINUED_TRAIN = {"learning_rate": 3e-5, "min_learning_rate": 3e-6, "warmup_steps": 30}
# A default that contradicts a value the user set yields to it, with a note: the warm-up becomes a tenth of the
# run, the floor a tenth of the peak (the ratio of every default schedule above). Two values the user set that
# contradict each other are refused instead.
YIELDING = {
    "warmup_steps": lambda t: t.max_steps // 10,
    "min_learning_rate": lambda t: float(f"{t.learning_rate / 10:.6g}"),
}
# the named flags that fill a settings key
FLAGS = {
    ("train", "max_steps"): "--max-steps",
    ("train", "seed"): "--seed",
    ("train", "save_steps"): "--save-steps",
    ("seq_len",): "--seq-len",
    ("data", "prefixes"): "--data",
}
# what a user sets under data: (the rest comes from the prepared data)
DATA_KEYS = ("prefixes", "split", "repeat_warning")


def _training_args_section() -> Section:
    """`training_args.<name>`: PaddleNLP's TrainingArguments fields llmpt does not set, typed by the pinned
    dataclass (llmpt/strategies/paddlenlp_fields.py); names llmpt sets or decides are refused with their owner."""
    refused = {name: f"llmpt sets it from {owner}; set that instead" for name, owner in OWNED_TRAINING_ARGS.items()}
    for name, why in MANAGED_TRAINING_ARGS.items():
        refused[name] = (
            f"has no effect in llmpt ({why.removeprefix('nothing: ')})"
            if why.startswith("nothing:")
            else f"llmpt decides it from {why}; set that instead"
        )
    free = {name: Leaf(ann) for name, ann in TRAINING_ARGUMENTS.items() if name not in refused}
    return Section(
        ("training_args",),
        free,
        refused,
        allowed_text=f"the fields of PaddleNLP {PADDLENLP_VERSION}'s TrainingArguments that llmpt does not set "
        "(llmpt/strategies/paddlenlp_fields.py)",
    )


class ModelSettings(BaseModel):
    """What a run may change of the model: only what leaves its weights as they are (the architecture is the MODEL
    argument's, its weights --init-from's, its dropout train.dropout)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rope_scaling: RopeScaling = Field(
        description="Rotary position scaling for a longer context than the model was trained on (llama only, as "
        "PaddleNLP implements it); over the model's own (Llama-3.1: llama3, factor 8), key by key"
    )


ARCHITECTURE_FIELDS = tuple(k for k in ModelSpec.model_fields if k not in ("id", "aliases", "source", "notes"))
ARCHITECTURE_IS_THE_MODELS = (
    "the architecture is the MODEL argument's (llmpt models show MODEL) or its --init-from config.json"
)


# What each section of --config / --set may hold: the pydantic schema of the section it fills.
SCHEMA = Section(
    (),
    {
        "train": Section.of_model(TrainSettings, ("train",)),
        "strategy": Section.of_model(
            Strategy,
            ("strategy",),
            keys=PRESET_SECTIONS,
            elsewhere={
                "name": "the strategy is --strategy",
                "parallel": "the strategy name says the degrees (--strategy, e.g. tp2sd4_stage2)",
            },
        ),
        "data": Section.of_model(
            DataSection,
            ("data",),
            keys=DATA_KEYS,
            elsewhere={
                "seq_len": "the sequence length is the top-level seq_len (or --seq-len)",
                "tokenizer_dir": "it comes from the prepared data's manifest (llmpt prepare-data --tokenizer)",
                "manifests": "they are read from the prepared data",
            },
        ),
        "model": replace(
            Section.of_model(
                ModelSettings,
                ("model",),
                elsewhere={
                    **dict.fromkeys(("config", *ARCHITECTURE_FIELDS), ARCHITECTURE_IS_THE_MODELS),
                    "id": "the model is the MODEL argument (llmpt models show MODEL)",
                    "init_from": "its weights are --init-from",
                    "dropout": "its dropout is train.dropout",
                },
            ),
            allowed_text="rope_scaling (the architecture is the MODEL argument, llmpt models show MODEL; its weights "
            "--init-from; its dropout train.dropout)",
        ),
        "seq_len": Leaf(Annotated[int, Ge(8)]),
        "training_args": _training_args_section(),
    },
)
CONFIG_KEYS = tuple(SCHEMA.children)


@dataclass(frozen=True)
class RunRequest:
    """What the user typed (None = not given). The CLI's shared options (llmpt/cli/options.py) fill it."""

    model: str | ModelSpec | None = None
    strategy: str | None = None
    data: tuple[str, ...] = ()
    device: str | None = None
    gpus: str | None = None
    nnodes: int = 1
    master: str | None = None
    node_rank: int | None = None
    seq_len: int | None = None
    max_steps: int | None = None
    output_dir: str | None = None
    init_from: str | None = None
    seed: int | None = None
    save_steps: int | None = None
    resume: bool = False
    overwrite: bool = False
    config_file: str | None = None
    set_items: tuple[str, ...] = ()
    allow_partial: bool = False
    device_type: str | None = None
    force: bool = False
    # True: this machine starts the job and hosts its rendezvous (train). False: the job runs elsewhere (plan,
    # launch-script): no local device detection decides for it, no local port is checked.
    local: bool = True

    @property
    def demo(self) -> bool:
        """`llmpt train` with no model: the README's main job."""
        return self.model is None

    @property
    def model_name(self) -> str:
        m = self.model or DEMO["model"]
        return m.id if isinstance(m, ModelSpec) else m


@dataclass(frozen=True)
class Layers:
    """Every key the layers set (defaults of the demo and of --init-from, --config, flags, --set), checked and
    typed, with where each came from; the train settings checked against each other; notes on defaults that
    yielded."""

    settings: dict[tuple[str, ...], Setting]
    train: TrainSettings
    notes: list[str] = field(default_factory=list)

    def section(self, key: str) -> dict[str, Any]:
        """The values under one section, nested (`strategy` -> {"batch": {"micro_batch_size": 2}})."""
        return unflatten(self.settings, (key,))

    def setting(self, *path: str) -> Setting | None:
        return self.settings.get(tuple(path))

    def origin(self, *path: str) -> str | None:
        """Where the value at `path` came from, as the user typed it (`--set strategy.batch.grad_accum`,
        `run.yaml: strategy.batch.grad_accum`, `--max-steps`), or which default set it; None if no layer did."""
        s = self.settings.get(tuple(path))
        if s is None:
            return None
        return s.origin.where(tuple(path)) if s.origin.user_set else s.origin.label

    @property
    def source(self) -> str:
        """The layers the strategy overrides came from, for refusals about the strategy as a whole."""
        sources = dict.fromkeys(s.origin.source for p, s in self.settings.items() if p[0] == "strategy")
        return " + ".join(sources) or "--set"

    @property
    def training_args(self) -> dict[str, Any]:
        """The `training_args.*` passthrough: extra PaddleNLP TrainingArguments, checked and typed."""
        return self.section("training_args")

    @property
    def split(self) -> str:
        s = self.settings.get(("data", "split"))
        return s.value if s is not None else DataSection.model_fields["split"].default


def read_layers(req: RunRequest) -> Layers:
    """The request's layers, lowest first, each read against SCHEMA; a later layer's value of a key wins."""
    layers: list[tuple[Any, Origin]] = []
    if req.demo:
        demo = {"train": {"max_steps": DEMO["max_steps"], **DEMO_TRAIN}, "strategy": DEMO_STRATEGY}
        layers.append((demo, Origin("demo")))
    if req.init_from:
        layers.append(({"train": SEED_CONTINUED_TRAIN}, Origin("seed")))
    if req.config_file:
        read_yaml(Path(req.config_file))  # a missing, unreadable, malformed or non-mapping file, said once
        layers.append((load_yaml(Path(req.config_file).read_text(encoding="utf-8")), Origin("config", req.config_file)))
    flag_values = {
        ("train", "max_steps"): req.max_steps,
        ("train", "seed"): req.seed,
        ("train", "save_steps"): req.save_steps,
        ("seq_len",): req.seq_len,
        ("data", "prefixes"): list(req.data) or None,
    }
    for path, value in flag_values.items():
        if value is not None:
            layers.append((nest(path, value), Origin("flag", FLAGS[path])))
    if req.set_items:
        layers.append((parse_set(req.set_items), Origin("set")))
    settings: dict[tuple[str, ...], Setting] = {}
    for tree, origin in layers:
        settings.update(read_layer(tree, SCHEMA, origin))
    notes: list[str] = []
    train = _train_settings(settings, notes, seeded=bool(req.init_from))
    _check_split_weights(settings, train)
    return Layers(settings, train, notes)


def _show(settings: dict[tuple[str, ...], Setting], path: tuple[str, ...], value: Any) -> str:
    s = settings.get(path)
    return s.show(path) if s is not None else Origin("default").show(path, str(value))


def _train_settings(settings: dict[tuple[str, ...], Setting], notes: list[str], seeded: bool) -> TrainSettings:
    """TrainSettings from the `train.*` keys: a default that contradicts what the user set yields (YIELDING, with
    a note); two values the user set that contradict each other are refused, naming both as typed."""
    values = unflatten(settings, ("train",))
    for _ in YIELDING:
        t = TrainSettings.model_construct(**values)  # each key is checked already; fills the defaults
        conflicts = schedule_conflicts(t)
        if not conflicts:
            break
        c = conflicts[0]
        key, bound = ("train", c.key), ("train", c.bound)
        set_key = settings.get(key)
        if c.key in YIELDING and (set_key is None or not set_key.origin.user_set):
            new = YIELDING[c.key](t)
            notes.append(
                f"{_show(settings, key, getattr(t, c.key))} contradicts {_show(settings, bound, getattr(t, c.bound))}: "
                f"{c.key} {new:g} instead (set train.{c.key} to choose)"
            )
            values[c.key] = new
            settings[key] = Setting(new, Origin("default"), f"{new:g}")
            continue
        raise ConfigError(
            f"{_show(settings, key, getattr(t, c.key))}: {c.why} (given "
            f"{_show(settings, bound, getattr(t, c.bound))}); allowed: {c.allowed}"
        )
    train = TrainSettings.model_validate(values)
    if seeded:
        kept = [k for k in SEED_CONTINUED_TRAIN if (s := settings.get(("train", k))) and s.origin.kind == "seed"]
        if kept:
            said = ", ".join(f"{k} {getattr(train, k):g}" for k in kept)
            notes.append(
                f"--init-from: continued pretraining on the seed configurations' schedule: {said} "
                "(set train.* to change)"
            )
    return train


def _check_split_weights(settings: dict[tuple[str, ...], Setting], train: TrainSettings) -> None:
    """Evaluation needs a validation part in data.split."""
    split = settings.get(("data", "split"))
    if train.eval_steps and split is not None and float(split.value.split(",")[1]) == 0:
        raise ConfigError(
            f"{split.show(('data', 'split'))}: gives the validation part weight 0, but "
            f"{_show(settings, ('train', 'eval_steps'), train.eval_steps)} evaluates on it; allowed: a validation "
            "weight > 0 (e.g. 949,50,1), or train.eval_steps 0"
        )


def check_split_documents(layers: Layers, manifests: dict[str, dict[str, Any]]) -> None:
    """Every prefix keeps documents in the parts the run reads: train always, valid when it evaluates (PaddleNLP
    splits each prefix's documents by data.split; a part of 0 documents has no dataset at all)."""
    split = layers.split
    s = layers.setting("data", "split")
    said = s.show(("data", "split")) if s is not None else f"data.split {split} (the default)"
    used = ("train", "validation") if layers.train.eval_steps else ("train",)
    for prefix, m in manifests.items():
        parts = dict(zip(("train", "validation", "test"), split_documents(split, m["documents"]), strict=True))
        for part in used:
            lo, hi = parts[part]
            if hi == lo:
                raise ConfigError(
                    f"{said}: leaves no {part} documents in --data {prefix} ({m['documents']} documents)",
                    "give that part more weight, or use more data" + ("" if part == "train" else ", or no evaluation"),
                )


def strategy_name(req: RunRequest) -> str:
    if req.strategy:
        return req.strategy
    if req.demo:
        return DEMO["strategy"]
    raise LlmptError("--strategy is required", "e.g. --strategy tp2sd4_stage2 (see: llmpt presets list)")


def device_of(req: RunRequest) -> str:
    """--device, else: the demo on CPU; a job started here on this machine's GPU if it has one, else its CPU; a
    job described for elsewhere (plan, launch-script) on GPUs."""
    if req.device is not None:
        if req.device not in ("gpu", "cpu"):
            raise LlmptError(f"--device {req.device}: allowed: gpu, cpu")
        return req.device
    if req.demo:
        return DEMO["device"]
    if not req.local or req.device_type:
        return "gpu"
    # no paddle import here: a visible NVIDIA device node is enough to prefer the GPU
    return "gpu" if os.path.exists("/dev/nvidia0") else "cpu"


def seq_len_of(req: RunRequest, layers: Layers, spec: ModelSpec) -> int:
    """--seq-len, else the config file's, else 128 for tiny models and the seed's 4096 for real ones; with
    --init-from, no longer than the checkpoint's positions: a learned table (LEARNED_POSITIONS) always, rotary
    positions (TRAINED_ROTARY) unless a rope scaling is set (model.rope_scaling)."""
    s = layers.setting("seq_len")
    scaling = rope_scaling_of(layers, spec)  # a scaling the family has no path for is refused here
    learned = _checkpoint_positions(req.init_from, spec.family) if req.init_from else None
    rotary = None
    if req.init_from and learned is None and scaling is None and spec.position == "rope":
        rotary = _checkpoint_positions(req.init_from, spec.family, TRAINED_ROTARY)
    bound = learned if learned is not None else rotary
    if s is None:
        value = TINY_SEQ_LEN if spec.id.endswith("-tiny") else DEFAULT_SEQ_LEN
        if bound is not None and value > bound:
            what = "learned positions" if learned is not None else "trained rotary positions"
            note = (
                f"seq_len {bound}: the --init-from checkpoint's {bound} {what} ({spec.family}), not the default "
                f"{value}" + ("" if learned is not None else " (set model.rope_scaling for a longer context)")
            )
            if note not in layers.notes:
                layers.notes.append(note)
            return bound
        return value
    if learned is not None and s.value > learned:
        raise ConfigError(
            f"{s.show(('seq_len',))}: longer than the {learned} positions of the --init-from checkpoint; allowed: "
            f"8..{learned} ({spec.family} learns one embedding per position, so PaddleNLP cannot extend them)"
        )
    if rotary is not None and s.value > rotary:
        raise ConfigError(
            f"{s.show(('seq_len',))}: longer than the {rotary} positions the --init-from checkpoint was trained "
            f"on; allowed: 8..{rotary}, or a longer context with a rope scaling ({spec.family}'s rotary positions "
            f"past {rotary} were never trained)",
            _scaling_hint(spec, s.value, rotary),
        )
    return s.value


def _scaling_hint(spec: ModelSpec, seq_len: int, positions: int) -> str:
    if spec.family not in ROPE_SCALING_FAMILIES:
        return f"PaddleNLP's {spec.family} modeling implements no rope scaling: use --seq-len {positions} or less"
    factor = -(-seq_len // positions)
    return (
        f"e.g. --set model.rope_scaling.type=linear --set model.rope_scaling.factor={factor}, or "
        f"--set model.rope_scaling.type=llama3 --set model.rope_scaling.factor={factor} "
        f"(original_max_position_embeddings {positions}); or --seq-len {positions}"
    )


def rope_scaling_of(layers: Layers, spec: ModelSpec, positions: int | None = None) -> RopeScaling | None:
    """The rope scaling the user set (model.rope_scaling.*), over the model's own key by key when of the same type;
    None when none is set. Refused (ConfigError, naming the key as given) for a family whose modeling has no rope
    scaling, or a scaling that is not whole. llama3's original_max_position_embeddings defaults to `positions` (the
    checkpoint's) or the model's."""
    given = layers.section("model").get("rope_scaling")
    if not given:
        return None
    first = next(p for p in layers.settings if p[:2] == ("model", "rope_scaling"))
    said = layers.settings[first].show(first)
    if spec.family not in ROPE_SCALING_FAMILIES:
        raise ConfigError(
            f"{said}: PaddleNLP's {spec.family} modeling has no rope scaling ({spec.id} builds a plain rotary "
            "table whatever its config says)",
            "leave model.rope_scaling unset for this model",
        )
    own = spec.rope_scaling
    base = own.model_dump() if own is not None and given.get("type", own.type) == own.type else {}
    values = {**base, **given}
    if values.get("type") == "llama3" and values.get("original_max_position_embeddings") is None:
        values["original_max_position_embeddings"] = positions or spec.max_position_embeddings
    try:
        return RopeScaling.model_validate(values)
    except ValidationError as e:
        err = e.errors()[0]
        what = err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing":
            what = f"needs model.rope_scaling.{err['loc'][0]}"
            if err["loc"][0] == "type":
                what += " (llama3, linear, ntk or dynamic_ntk)"
        # a rule between two keys: named by the first of them the user set
        named = [k for k in ("low_freq_factor", "high_freq_factor") if k in what and k in given]
        if named:
            path = ("model", "rope_scaling", named[0])
            said = layers.settings[path].show(path)
        raise ConfigError(f"{said}: {what}") from None


def apply_model_settings(
    spec: ModelSpec, config: dict[str, Any], seq_len: int, layers: Layers, init_from: bool
) -> list[str]:
    """Carry model.rope_scaling into the PaddleNLP config (in place) with the rotary table long enough for the
    sequence; a checkpoint's computed table raised to the sequence length (COMPUTED_POSITIONS). The notes to show."""
    notes: list[str] = []
    positions = config.get("max_position_embeddings")
    scaling = rope_scaling_of(layers, spec, positions if init_from else None)
    if scaling is not None:
        for key in ("rope_scaling", "rope_scaling_type", "rope_scaling_factor"):
            config.pop(key, None)
        config.update(rope_scaling_config(scaling))
        # the table each scaling builds (llama/modeling.py): llama3 and dynamic_ntk max_position_embeddings rows
        # (dynamic_ntk rescales past them by itself), linear and ntk max_position_embeddings x factor
        if scaling.type == "llama3":
            need = seq_len
        elif scaling.type == "dynamic_ntk":
            need = 0
        else:
            need = math.ceil(seq_len / scaling.factor)
        if isinstance(positions, int) and need > positions:
            config["max_position_embeddings"] = need
        notes.append(
            f"model.rope_scaling: {scaling.type}, factor {scaling.factor:g}"
            + (
                f", original_max_position_embeddings {scaling.original_max_position_embeddings}"
                if scaling.type == "llama3"
                else ""
            )
            + f" ({spec.family}'s rotary table: {config.get('max_position_embeddings')} positions)"
        )
    elif init_from and (note := extend_positions(spec.family, config, seq_len)):
        notes.append(note)
    window = config.get("sliding_window") if spec.family == "mistral" else None
    if init_from and isinstance(window, int) and seq_len > window:
        notes.append(
            f"--init-from: the checkpoint's sliding_window {window} is not applied by PaddleNLP {PADDLENLP_VERSION}'s "
            f"mistral modeling: each of the {seq_len} tokens attends to every token before it"
        )
    return notes


# How a checkpoint's positions bound the sequence length of continued pretraining (--init-from), per family, as
# PaddleNLP 3.0.0b4's modeling builds them. From scratch nothing bounds it: run_pretrain.py raises the positions to
# the sequence length (llmpt/models/registry.py does the same).
#   gpt, opt   learned position tables, one trained row per position (opt adds 2 offset rows): the sequence
#              length must fit the checkpoint's max_position_embeddings (run_pretrain.py keeps it when continuing)
#   llama      a rotary cos/sin table of max_position_embeddings rows, computed at build time and sliced [:seq_len]:
#              past its end the positions are silently wrong (an out-of-range gather on CPU); no weight depends on
#              it, so it is raised to the sequence length (COMPUTED_POSITIONS, with a note)
#   chatglm2   a rotary table of max_sequence_length rows, which its config also calls seq_length: the rank sets
#              seq_length to the sequence length, so the table always fits
#   qwen       a rotary cache that grows on demand; bloom: ALiBi biases computed per sequence: no bound
# tests/integration/test_positions.py checks each line against the modeling on tiny CPU models.
LEARNED_POSITIONS = {"gpt": "max_position_embeddings", "opt": "max_position_embeddings"}
COMPUTED_POSITIONS = {"llama": "max_position_embeddings"}
# Continued pretraining past the positions released weights were trained on: the rotary tables of llama (rope; not
# Baichuan's ALiBi), qwen2 and mistral compute any position, but positions past the checkpoint's
# max_position_embeddings were never trained, and a pretraining user continuing a 4k model at 16k expects to be told,
# not a silent extrapolation: refused unless model.rope_scaling is set (llama: PaddleNLP's rope scaling; qwen2 and
# mistral have none, so the sequence must fit). From scratch the positions are the run's own: no bound.
TRAINED_ROTARY = {"llama": "max_position_embeddings", "qwen2": "max_position_embeddings",
                  "mistral": "max_position_embeddings"}  # fmt: skip


def _checkpoint_positions(init_from: str, family: str, table: dict[str, str] = LEARNED_POSITIONS) -> int | None:
    """The positions of a --init-from checkpoint that bound its sequence length (None: not a family of `table`, or
    no readable config.json there; the run refuses the latter with its own message)."""
    key = table.get(family)
    if key is None:
        return None
    from llmpt.interop.source import positions_config  # a Hugging Face config says it in its own words (n_positions)

    value = (positions_config(init_from, family) or {}).get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def extend_positions(family: str, config: dict[str, Any], seq_len: int) -> str | None:
    """Raise a --init-from checkpoint's computed rotary positions to `seq_len` (COMPUTED_POSITIONS), in place;
    the note that says so, or None."""
    key = COMPUTED_POSITIONS.get(family)
    have = config.get(key) if key else None
    if not isinstance(have, int) or have >= seq_len:
        return None
    config[key] = seq_len
    return (
        f"--init-from: {key} {have} -> {seq_len} ({family}'s rotary table is computed, no weight depends on it; "
        f"the checkpoint was trained on {have} positions)"
    )
