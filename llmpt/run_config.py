"""The resolved run: one validated config written to <output_dir>/run.yaml; ranks read it and nothing else.

Built once by llmpt.resolve.resolve_run (CLI flags -> request -> data -> plan -> RunConfig); never re-validated by
the ranks. Everything a rank or the supervisor needs is a field here, resume included."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

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
    seed: int = Field(42, description="Seed of weights init, data order and dropout.")
    save_steps: int = Field(0, ge=0, description="Checkpoint every N steps (0: only at the end).")
    save_total_limit: int = Field(
        2, ge=2, description="Checkpoints kept; at least 2, so a kill during a save leaves a complete one."
    )
    logging_steps: int = Field(1, ge=1, description="Log loss/lr every N steps.")
    eval_steps: int = Field(0, ge=0, description="Evaluate on the validation split every N steps (0: never).")
    dropout: float = Field(0.0, ge=0, lt=1, description="Hidden and attention dropout.")
    report_to: Literal["visualdl", "none"] = Field("visualdl", description="Scalar logs (loss, lr) for VisualDL.")


class ModelSection(_Section):
    id: str = Field(description="Registry id of the model.")
    family: str = Field(description="Architecture family.")
    config: dict[str, Any] = Field(description="PaddleNLP config dict the ranks build the model from.")
    init_from: str | None = Field(None, description="save_pretrained() directory whose weights the ranks load.")


class DataSection(_Section):
    prefixes: list[str] = Field(description="Prepared .bin/.idx prefixes (llmpt prepare-data).")
    split: str = Field("949,50,1", description="Train/valid/test split weights of PaddleNLP's dataset builder.")
    seq_len: int = Field(ge=8, description="Training sequence length.")
    tokenizer_dir: str = Field(description="Tokenizer the data was prepared with (for EOS and vocab size).")
    manifests: dict[str, dict[str, Any]] = Field(default_factory=dict, description="prepare-data manifests seen.")


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
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True))
    tmp.replace(path)
    back = load_run_yaml(path)
    if back != cfg:
        raise RuntimeError(f"{path}: run.yaml does not round-trip")
    return back


def load_run_yaml(path: Path) -> RunConfig:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        return RunConfig.model_validate(data)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such run.yaml") from None
    except ValidationError as e:
        raise ConfigError(describe_validation_error(str(path), e, RunConfig)) from None
