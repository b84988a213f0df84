"""The CLI's start-up path never imports paddle or paddlenlp (ruff TID253 bans module-level imports; this
checks the transitive result)."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
from typer.testing import CliRunner
from llmpt.cli.main import app
r = CliRunner()
for args in (["--help"], ["presets", "list"], ["presets", "show", "tp2sd4_stage2", "--json"],
             ["plan", "qwen-7b", "--strategy", "tp2sd4_stage2", "--gpus", "8", "--json"]):
    res = r.invoke(app, args)
    assert res.exit_code == 0, (args, res.stdout, res.stderr)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("paddle", "paddlenlp"))
print("HEAVY:" + ",".join(heavy))
"""


def test_cli_commands_do_not_import_paddle():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "HEAVY:\n" in out.stdout, out.stdout
