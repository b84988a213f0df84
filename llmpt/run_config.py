"""The resolved run: one validated config written to <output_dir>/run.yaml; ranks read it and nothing else.

Built once by llmpt.resolve.resolve_run (CLI flags -> request -> data -> plan -> RunConfig); never re-validated by
the ranks. Everything a rank or the supervisor needs is a field here, resume included."""

from __future__ import annotations

import math
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from llmpt.errors import ConfigError, describe_validation_error
from llmpt.launch.command import Topology
from llmpt.strategies.parallel_dims import ParallelDims
from llmpt.strategies.schema import Strategy


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TrainSettings(_Section):
    """Schedule and bookkeeping of a run (`train.*` in --config files and --set)."""

    max_steps: int = Field(1000, ge=1, description="Optimizer steps to train for; also the LR decay length.")
    stop_at_step: int | None = Field(
        None, ge=1, description="Stop (with a checkpoint) at this step while keeping the max_steps schedule."
    )
    learning_rate: float = Field(3e-4, gt=0, description="Peak learning rate after warmup.")
    min_learning_rate: float = Field(3e-5, ge=0, description="Learning rate floor at the end of the decay.")
    warmup_steps: int = Field(10, ge=0, description="Linear warmup steps.")
    lr_scheduler: Literal["cosine", "linear"] = Field("cosine", description="Decay shape after warmup.")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, ge=0, description="Gradient clipping norm (0 = off).")
    adam_beta1: float = Field(0.9, gt=0, lt=1, description="AdamW beta1.")
    adam_beta2: float = Field(0.95, gt=0, lt=1, description="AdamW beta2.")
    optimizer: Literal["adamw", "adamw_mini", "sgd"] = Field(
        "adamw",
        description="PaddleNLP's adamw or adamw_mini (TrainingArguments.optim; adamw_mini without tensor parallelism), "
        "or sgd: plain SGD without momentum that the rank builds, for numerical checks of gradient reductions. "
        "(PaddleNLP 3.0.0b4 names adafactor but its Trainer cannot build it.)",
    )
    # NumPy takes seeds in 0..2**32-1 and PaddleNLP's set_seed adds per-rank offsets: 2**31-1 leaves room for them
    seed: int = Field(42, ge=0, le=2**31 - 1, description="Seed of weights init, data order and dropout.")
    save_steps: int = Field(0, ge=0, description="Checkpoint every N steps (0: only at the end).")
    save_total_limit: int = Field(
        2, ge=2, description="Checkpoints kept; at least 2, so a kill during a save leaves a complete one."
    )
    logging_steps: int = Field(1, ge=1, description="Log loss/lr every N steps.")
    eval_steps: int = Field(0, ge=0, description="Evaluate on the validation split every N steps (0: never).")
    dropout: float = Field(0.0, ge=0, lt=1, description="Hidden and attention dropout.")
    report_to: Literal["visualdl", "none"] = Field("visualdl", description="Scalar logs (loss, lr) for VisualDL.")
    preempt_signal: Literal["SIGUSR1", "SIGHUP"] = Field(
        "SIGUSR1",
        description="Besides SIGTERM, the signal that preempts the run (each rank finishes its step, a checkpoint is "
        "saved, llmpt exits 75): what a scheduler sends ahead of a time limit (Slurm: --signal=USR1@SECONDS).",
    )
    hang_timeout_s: float = Field(
        1200.0,
        ge=0,
        description="A rank that finishes no step (nor a checkpoint save) for this long stops the job with every "
        "rank's Python stack in ranks/rank<N>.stack (0: never). Default 20 min: under Paddle's 30-minute process "
        "group timeout (PADDLE_PG_TIMEOUT), so a hang is caught with its stacks before a collective's error.",
    )
    progress_every_steps: int = Field(
        10, ge=1, description="When stderr is not a terminal (a batch log): a progress line every N steps..."
    )
    progress_every_s: float = Field(30.0, gt=0, description="... or every this many seconds, whichever comes first.")


@dataclass(frozen=True)
class Conflict:
    """Two train.* settings that contradict each other: `key` must change (to `allowed`) or `bound` must."""

    key: str
    bound: str
    allowed: str
    why: str


def schedule_conflicts(t: TrainSettings) -> list[Conflict]:
    """Every way the schedule contradicts itself: warm-up as long as the run, a floor above the peak learning
    rate, a stop, checkpoint, evaluation or log cadence beyond the last step. The request checks them once, where
    it knows which flag set each value (llmpt/resolve/request.py); run.yaml is not checked again."""
    n = t.max_steps
    rules = [
        (t.warmup_steps > 0 and t.warmup_steps >= n, "warmup_steps", "max_steps", f"0..{n - 1}",
         "the warm-up must end before the run does"),
        (t.min_learning_rate > t.learning_rate, "min_learning_rate", "learning_rate", f"0..{t.learning_rate:g}",
         "the decay's floor is above the peak learning rate"),
        (t.stop_at_step is not None and t.stop_at_step > n, "stop_at_step", "max_steps", f"1..{n}",
         "the run ends before that step"),
        (t.save_steps > n, "save_steps", "max_steps", f"0..{n} (0: only at the end)",
         "no checkpoint would be saved on that cadence"),
        (t.eval_steps > n, "eval_steps", "max_steps", f"0..{n} (0: no evaluation)",
         "no evaluation would run on that cadence"),
        (t.logging_steps > n, "logging_steps", "max_steps", f"1..{n}", "no step would be logged on that cadence"),
    ]  # fmt: skip
    return [Conflict(key, bound, allowed, why) for bad, key, bound, allowed, why in rules if bad]


class ModelSection(_Section):
    id: str = Field(description="Registry id of the model.")
    family: str = Field(description="Architecture family.")
    config: dict[str, Any] = Field(description="PaddleNLP config dict the ranks build the model from.")
    init_from: str | None = Field(
        None, description="PaddleNLP directory whose weights the ranks load (a Hugging Face source's converted copy)."
    )
    init_source: dict[str, Any] | None = Field(
        None,
        description="--init-from as found (llmpt/interop/source.py Found.record): given, path, found_in, layout "
        "(paddle|hf), converted_to, and the tokenizer that came with the weights (dir, files' sha256, vocab_size).",
    )


def _split_text(value: Any) -> Any:
    """[98, 1, 1] -> "98,1,1": a list of weights is the same split as PaddleNLP's comma string."""
    if isinstance(value, (list, tuple)):
        return ",".join(str(x) for x in value)
    return value


def _check_split(value: str) -> str:
    """Three weights train,valid,test (PaddleNLP's splits_string), none negative, the train weight > 0."""
    parts = [p.strip() for p in value.replace("/", ",").split(",")]
    try:
        weights = [float(p) for p in parts]
    except ValueError:
        weights = []
    if len(weights) != 3 or not all(math.isfinite(w) and w >= 0 for w in weights):
        raise ValueError("must be three non-negative weights train,valid,test, e.g. 949,50,1")
    if weights[0] <= 0:
        raise ValueError("the train weight (the first) must be > 0")
    return ",".join(f"{w:g}" for w in weights)


Split = Annotated[str, BeforeValidator(_split_text), AfterValidator(_check_split)]


def split_documents(split: str, num_documents: int) -> list[tuple[int, int]]:
    """The [start, end) document ranges of train, valid and test that PaddleNLP's dataset builder makes of one
    prefix (paddlenlp/data/causal_dataset.py get_train_valid_test_split_, 3.0.0b4: rounded shares, the rounding
    error taken off every boundary after the first)."""
    weights = [float(w) for w in split.split(",")]
    total = sum(weights)
    index = [0]
    for w in weights:
        index.append(index[-1] + int(round(w / total * float(num_documents))))
    diff = index[-1] - num_documents
    index = [index[0]] + [i - diff for i in index[1:]]
    return [(index[i], index[i + 1]) for i in range(3)]


class DataSection(_Section):
    prefixes: Annotated[list[str], BeforeValidator(lambda v: [v] if isinstance(v, str) else v)] = Field(
        min_length=1, description="Prepared .bin/.idx prefixes (llmpt prepare-data); one prefix may be a string."
    )
    split: Split = Field(
        "949,50,1",
        description="Train/valid/test weights of the documents of each prefix (PaddleNLP's dataset builder); "
        "train.eval_steps evaluates on the valid part.",
    )
    seq_len: int = Field(ge=8, description="Training sequence length.")
    tokenizer_dir: str = Field(description="Tokenizer the data was prepared with (for EOS and vocab size).")
    manifests: dict[str, dict[str, Any]] = Field(default_factory=dict, description="prepare-data manifests seen.")
    weights: list[float] | None = Field(
        None, description="Share of each prefix in the training mix (normalised; from WEIGHT:PREFIX or token counts)."
    )
    epochs: list[float | None] | None = Field(
        None, description="How many times the run will see each prefix's training documents (None: count unknown)."
    )
    repeat_warning: float = Field(
        4.0, gt=0, description="Warn when the run will see a corpus more than this many times (epochs)."
    )

    def repeat_warnings(self) -> list[str]:
        """A line for each corpus the run will see more than `repeat_warning` times."""
        seen = zip(self.prefixes, self.epochs or [None] * len(self.prefixes), strict=True)
        return [
            f"data {p}: the run will see it ~{e:.1f} times (more than data.repeat_warning {self.repeat_warning:g})"
            for p, e in seen
            if e is not None and e > self.repeat_warning
        ]

    def blend(self) -> list[Any]:
        """PaddleNLP's data_prefix: one prefix, or [w1, prefix1, w2, prefix2, …] blended by those weights."""
        if len(self.prefixes) == 1:
            return list(self.prefixes)
        weights = self.weights or [1.0] * len(self.prefixes)
        return [x for w, p in zip(weights, self.prefixes, strict=True) for x in (w, p)]


class RunConfig(_Section):
    """Everything a rank needs."""

    llmpt_version: str
    output_dir: str
    device: Literal["cpu", "gpu"]
    world_size: int
    nnodes: int = 1
    devices: tuple[str, ...] = Field(description="Device ids on each node (CPU: one per rank).")
    master: str | None = Field(None, description="HOST:PORT of the rendezvous node (multi-node).")
    node_rank: int | None = Field(None, description="This node's rank (the node that wrote run.yaml).")
    resume_from: str | None = Field(None, description="Checkpoint directory the ranks resume from (--resume).")
    model: ModelSection
    strategy: Strategy
    degrees: ParallelDims
    training_args: dict[str, Any] = Field(description="Passed verbatim to PaddleNLP's argument parser.")
    model_args: dict[str, Any]
    data: DataSection
    train: TrainSettings
    notes: list[str] = Field(default_factory=list)
    estimate: dict[str, Any] | None = Field(None, description="The planner's estimate (llmpt plan --json 'estimate').")

    @model_validator(mode="after")
    def _consistent(self) -> RunConfig:
        if len(self.devices) * self.nnodes != self.world_size or self.degrees.world_size != self.world_size:
            raise ValueError(
                f"world_size {self.world_size} != {len(self.devices)} devices x {self.nnodes} nodes "
                f"or degrees {self.degrees.describe()}"
            )
        return self

    @property
    def nproc_per_node(self) -> int:
        return len(self.devices)

    @property
    def topology(self) -> Topology:
        return Topology(self.devices, self.device, self.nnodes, self.master, self.node_rank)

    def on_node(self, master: str | None, node_rank: int | None, nproc_per_node: int) -> RunConfig:
        """This run as one node of it starts it (llmpt run-node): its master, rank and local ranks."""
        return self.model_copy(
            update={"master": master, "node_rank": node_rank, "devices": tuple(str(i) for i in range(nproc_per_node))}
        )

    @property
    def tokens_per_step(self) -> int:
        """Tokens one optimizer step consumes across all ranks."""
        b = self.strategy.batch
        return b.micro_batch_size * b.grad_accum * self.degrees.data_degree * self.data.seq_len


def write_run_yaml(cfg: RunConfig, path: Path) -> RunConfig:
    """Write run.yaml and read it back: what the ranks will see is what was validated."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # a temporary of this process's own: the nodes of a multi-node run write the shared run directory's run.yaml at
    # once (a shared name let one node rename another's half-written file into place); checked before the rename
    tmp = path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}.tmp")
    tmp.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True))
    back = load_run_yaml(tmp)
    if back != cfg:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"{path}: run.yaml does not round-trip")
    tmp.replace(path)
    return back


def load_run_yaml(path: Path) -> RunConfig:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        return RunConfig.model_validate(data)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such run.yaml") from None
    except ValidationError as e:
        raise ConfigError(describe_validation_error(str(path), e, RunConfig)) from None
