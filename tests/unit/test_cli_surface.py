"""The CLI surface is frozen: every command's flags, their defaults and whether they are required. A change to it
shows here as a diff and is made on purpose: regenerate with LLMPT_UPDATE_GOLDEN=1 pytest tests/unit/test_cli_surface.py.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

from llmpt.cli.main import app

GOLDEN = Path(__file__).with_name("golden") / "cli_surface.json"
# the run flags `train`, `plan`, `launch-script` and `run-node` share must agree in name and default
SHARED = ("--strategy", "--gpus", "--nnodes", "--master", "--node-rank", "--seq-len", "--device", "--data",
          "--max-steps", "--save-steps", "--seed", "--output-dir", "--init-from", "--config", "--set",
          "--allow-partial", "--device-type", "--force", "--overwrite", "--json")  # fmt: skip


def _surface(group, prefix: str = "llmpt") -> dict:
    out = {}
    ctx = typer.Context(group)
    for name in sorted(group.list_commands(ctx)):
        cmd = group.get_command(ctx, name)
        path = f"{prefix} {name}"
        if hasattr(cmd, "list_commands"):
            out.update(_surface(cmd, path))
            continue
        out[path] = {
            p.name: {
                "flags": sorted(p.opts + p.secondary_opts),
                "kind": p.param_type_name,
                "required": p.required,
                "default": p.default
                if isinstance(p.default, str | int | float | bool | type(None))
                else repr(p.default),
                "multiple": bool(getattr(p, "multiple", False)),
            }
            for p in cmd.params
        }
    return out


def surface() -> dict:
    return _surface(typer.main.get_command(app))


def test_cli_surface_is_frozen():
    now = surface()
    if os.environ.get("LLMPT_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(json.dumps(now, indent=1, sort_keys=True) + "\n")
    assert now == json.loads(GOLDEN.read_text()), "CLI surface changed: see the module docstring"


def test_shared_run_flags_agree_across_commands():
    by_flag: dict[str, dict] = {}
    for cmd in ("llmpt train", "llmpt plan", "llmpt launch-script", "llmpt run-node"):
        for p in surface()[cmd].values():
            for flag in p["flags"]:
                if flag in SHARED:
                    by_flag.setdefault(flag, {})[cmd] = (p["required"], p["default"], p["kind"], p["multiple"])
    for flag, seen in by_flag.items():
        # a flag is the same everywhere, or required where the command has nothing to default to (plan and
        # launch-script have no demo strategy; a cluster script states its node count)
        optional = {v for v in seen.values() if not v[0]}
        assert len(optional) <= 1, (flag, seen)
        assert len({v[2:] for v in seen.values()}) == 1, (flag, seen)
    assert set(by_flag) == set(SHARED)
