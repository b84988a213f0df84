"""The bad-input corpus (cases.yaml): every case exits 2 with one line on stderr naming the input and the fix,
no traceback, and nothing written, changed or half-written in its directory."""

from __future__ import annotations

import gzip
import os
import resource
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

pytest.importorskip("paddlenlp")  # prepare-data loads the tokenizer through PaddleNLP
pytestmark = pytest.mark.paddle

from llmpt.cli.main import app  # noqa: E402
from llmpt.data.prepare import prepare_data  # noqa: E402
from llmpt.data.tokenizer import SHIPPED_CORPUS  # noqa: E402

HERE = Path(__file__).parent
CASES = yaml.safe_load((HERE / "cases.yaml").read_text())


def test_the_corpus_is_large_and_covers_every_subcommand():
    assert len(CASES) >= 60
    assert len({c["id"] for c in CASES}) == len(CASES)
    commands = {c["argv"][0] for c in CASES}
    assert commands == {"presets", "models", "plan", "matrix", "prepare-data", "train", "rehearse"}


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """Two small prepared datasets from different parts of the shipped corpus (A, B)."""
    root = tmp_path_factory.mktemp("datasets")
    with gzip.open(SHIPPED_CORPUS, "rt", encoding="utf-8") as f:
        lines = f.readlines()
    out = {}
    for name, part in (("a", lines[:300]), ("b", lines[300:700])):
        src = root / f"{name}.jsonl"
        src.write_text("".join(part))
        prepare_data([str(src)], output=str(root / name))
        out[name] = root / name
    (root / "big.jsonl").write_text("".join(lines[:4000]))
    out["big_corpus"] = root / "big.jsonl"
    return out


def _fmt(value, ctx):
    return value.format(**ctx) if isinstance(value, str) else value


def _setup(case, tmp: Path, datasets, ctx, holders):
    for op in case.get("setup", []):
        ((kind, arg),) = op.items()
        if kind == "write":
            p = tmp / arg["path"]
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(arg["text"])
        elif kind == "write_bytes":
            (tmp / arg["path"]).write_bytes(bytes.fromhex(arg["hex"].replace(" ", "")))
        elif kind == "prepared":
            for suffix in (".bin", ".idx", ".manifest.json"):
                shutil.copy(f"{datasets[arg['dataset']]}{suffix}", tmp / f"{arg['name']}{suffix}")
        elif kind == "delete":
            (tmp / arg).unlink()
        elif kind == "truncate":
            with (tmp / arg["path"]).open("r+b") as f:
                f.truncate(arg["keep"])
        elif kind == "patch":
            with (tmp / arg["path"]).open("r+b") as f:
                f.seek(arg["offset"])
                f.write(bytes.fromhex(arg["hex"]))
        elif kind == "copy":
            shutil.copy(tmp / arg["src"], tmp / arg["dst"])
        elif kind == "manifest":
            import json

            p = tmp / arg["path"]
            m = json.loads(p.read_text())
            m[arg["key"]] += arg["add"]
            p.write_text(json.dumps(m))
        elif kind == "big_line":
            with (tmp / arg["path"]).open("w") as f:
                f.write('{"text": "' + "in the beginning " * (arg["mb"] * 2**20 // 17 + 1) + '"}\n')
        elif kind == "copy_corpus":
            shutil.copy(datasets["big_corpus"], tmp / arg)
        elif kind == "bind_port":
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            s.listen(1)
            holders.append(s)
            ctx["port"] = s.getsockname()[1]
        else:
            raise AssertionError(f"unknown setup op {kind}")


def _snapshot(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*")) if p.is_file()}


def _run(argv, limit: int | None, env) -> tuple[int, str]:
    if limit is None:
        r = CliRunner().invoke(app, argv, env=env)
        return r.exit_code, r.stderr

    def cap():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    r = subprocess.run(
        [sys.executable, "-m", "llmpt.cli", *argv],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        preexec_fn=cap,
        timeout=300,
    )
    return r.returncode, r.stderr


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_bad_input_is_refused_in_one_line(case, tmp_path, datasets, monkeypatch):
    tmp = tmp_path / "case"
    tmp.mkdir()
    ctx = {"tmp": str(tmp)}
    holders: list[socket.socket] = []
    env = {"LLMPT_CACHE": str(tmp_path / "cache"), "LLMPT_NO_DETECT": "1", "COLUMNS": "400"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    try:
        _setup(case, tmp, datasets, ctx, holders)
        before = _snapshot(tmp)
        code, err = _run([_fmt(a, ctx) for a in case["argv"]], case.get("fsize_limit"), env)
    finally:
        for s in holders:
            s.close()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, (code, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for want in case["expect"]:
        assert _fmt(want, ctx) in lines[0], (want, lines[0])
    assert _snapshot(tmp) == before  # nothing written, changed or left half-written
