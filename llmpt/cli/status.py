"""`llmpt status RUN_DIR`: how a run stands, from its files (llmpt/launch/status.py)."""

from __future__ import annotations

import typer

from llmpt import schemas
from llmpt.cli import options as opt
from llmpt.cli._common import console, print_json


def status(
    run_dir: str = typer.Argument(..., help="The run directory (train's -o)."),
    json_out: bool = opt.JSON,
) -> None:
    """A run's state, progress, last loss, rank liveness and checkpoints, read from its files (any node)."""
    from llmpt.launch.status import run_status

    s = run_status(run_dir)
    if json_out:
        print_json(s, schemas.STATUS)
        return
    of = f"/{s['max_steps']}" if s["max_steps"] else ""
    loss = f" · loss {s['last_loss']:.4f}" if s["last_loss"] is not None else ""
    ago = f" · last record {s['seconds_since_last_record']:.0f} s ago" if s["seconds_since_last_record"] else ""
    console.print(
        f"{s['output_dir']}: {s['model'] or '?'} · {s['strategy'] or '?'} · {s['state']} · step {s['step']}{of}"
        f"{loss}{ago}",
        highlight=False,
        soft_wrap=True,
    )
    for r in s["ranks"]:
        seen = f", progress {r['seconds_since_progress']:.0f} s ago" if r["seconds_since_progress"] is not None else ""
        step = f"step {r['step']}" if r["step"] is not None else "no progress yet"
        console.print(f"  rank {r['rank']}: {r['process']} · {step}{seen}", highlight=False, soft_wrap=True)
    done = [c for c in s["checkpoints"] if c["complete"]]
    cut = [c for c in s["checkpoints"] if not c["complete"]]
    ckpts = ", ".join(f"checkpoint-{c['step']}" for c in done) or "none"
    cut_names = ", ".join(f"checkpoint-{c['step']}" for c in cut)
    cut_text = f" (incomplete: {cut_names})" if cut else ""
    console.print(f"  complete checkpoints: {ckpts}{cut_text}", highlight=False, soft_wrap=True)
