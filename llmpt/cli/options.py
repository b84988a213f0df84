"""The flags `train`, `plan`, `launch-script` and `run-node` share, declared once: name, help and default.
tests/unit/test_cli_surface.py freezes every command's flags and defaults, so a change here is deliberate."""

from __future__ import annotations

from typing import Any

import typer

from llmpt.launch.scripts import DEFAULT_PORT

MODEL = typer.Argument(..., help="Model id or alias, e.g. qwen-7b or meta-llama/Llama-2-7b.")
_STRATEGY_HELP = "Strategy preset/name (llmpt presets list) or YAML file."
STRATEGY = typer.Option(None, "--strategy", "-s", help=_STRATEGY_HELP + " Default: the demo's dp2 (train only).")
STRATEGY_REQUIRED = typer.Option(..., "--strategy", "-s", help=_STRATEGY_HELP)
DATA = typer.Option(
    None,
    "--data",
    help="Prepared prefix, or WEIGHT:PREFIX (repeatable; weights are normalised; bare prefixes weigh by their token "
    "counts). Tiny models: the shipped corpus.",
)
DEVICE = typer.Option(
    None, "--device", help="gpu or cpu (default: gpu; llmpt train runs on this machine's CPU when it has no GPU)."
)
GPUS = typer.Option(
    None, "--gpus", help="Devices per node: a count (8) or ids (0,1,2,3); CPU: ranks (default: the strategy's minimum)."
)
NNODES = typer.Option(1, "--nnodes", help="Number of nodes; world size = devices x nodes.")
MASTER = typer.Option(None, "--master", help="HOST:PORT of the rank-0 node (multi-node).")
NODE_RANK = typer.Option(None, "--node-rank", help="This node's rank (multi-node).")
SEQ_LEN = typer.Option(None, "--seq-len", help="Sequence length (default: 4096; tiny models 128).")
MAX_STEPS = typer.Option(None, "--max-steps", help="Optimizer steps.")
SAVE_STEPS = typer.Option(None, "--save-steps", help="Checkpoint every N steps.")
SEED = typer.Option(None, "--seed", help="Random seed.")
OUTPUT_DIR = typer.Option(None, "--output-dir", "-o", help="Run directory (default runs/MODEL-STRATEGY).")
INIT_FROM = typer.Option(
    None,
    "--init-from",
    help="Start from weights: a save_pretrained() directory, a Hugging Face directory (config.json + safetensors) "
    "or a model id in the local PaddleNLP / Hugging Face cache.",
)
RESUME = typer.Option(False, "--resume", help="Continue from the newest complete checkpoint in the run directory.")
OVERWRITE = typer.Option(False, "--overwrite", help="Replace a previous run in the run directory.")
CONFIG = typer.Option(
    None, "--config", help="YAML with train, strategy, data, seq_len and training_args sections (see README)."
)
SET = typer.Option(
    None, "--set", help="Override one key: --set train.learning_rate=1e-3, --set training_args.NAME=V (repeatable)."
)
ALLOW_PARTIAL = typer.Option(
    False, "--allow-partial", help="Allow capabilities the matrix marks partial (🚧), with a warning."
)
DEVICE_TYPE = typer.Option(
    None, "--device-type", help="GPU model for the memory check (default: detected with nvidia-smi, else A100-80G)."
)
FORCE = typer.Option(False, "--force", help="Go ahead even if the planner predicts it does not fit.")
PORT = typer.Option(DEFAULT_PORT, "--port", help="Rendezvous port on the first node.")
JSON = typer.Option(False, "--json", help="Print one JSON object.")


def request_fields(values: dict[str, Any]) -> dict[str, Any]:
    """The RunRequest fields among a command's parameters (typer gives repeatable options as lists or None)."""
    from dataclasses import fields

    from llmpt.resolve import RunRequest

    names = {f.name for f in fields(RunRequest)}
    out = {k: v for k, v in values.items() if k in names}
    for key in ("data", "set_items"):
        if key in out:
            out[key] = tuple(out[key] or ())
    return out
