"""The bad-input corpus (cases.yaml): every case exits 2 with one line on stderr naming the input and the fix, no
traceback, and nothing written anywhere: not in its directory, not in llmpt's cache, not in the working directory,
not in $HOME or $TMPDIR (each a fresh directory per case, compared as whole trees: paths, kinds, sizes, contents).
With --json the same refusal is one JSON object on stderr (schema llmpt.error/1), with the same exit code."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
from collections import Counter
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
MIN_CASES = 130

# What a case may not change: each is a fresh, separate directory per case ({tmp} is "case").
ROOTS = ("case", "cache", "cwd", "home", "tmp")
# created by `import paddle` / `import paddlenlp` themselves in a fresh $HOME (only a subprocess case imports
# them after the snapshot): not llmpt's writes
THIRD_PARTY_HOME = (".paddlenlp", ".cache/paddle")


def command_of(argv: list[str]) -> str:
    """The command a case exercises: `presets show`, `matrix --verify`, `train`, …"""
    if argv[0] in ("presets", "models") and len(argv) > 1 and not argv[1].startswith("-"):
        return f"{argv[0]} {argv[1]}"
    if argv[0] == "matrix" and "--verify" in argv:
        return "matrix --verify"
    return argv[0]


EVERY_COMMAND = {
    "presets list", "presets show", "presets validate", "models list", "models show", "plan", "matrix",
    "matrix --verify", "prepare-data", "train", "rehearse", "doctor", "launch-script", "run-node", "export",
    "status", "tune",
}  # fmt: skip


def test_the_corpus_is_large_and_covers_every_command():
    assert len(CASES) >= MIN_CASES, len(CASES)
    assert len({c["id"] for c in CASES}) == len(CASES), [i for i, n in Counter(c["id"] for c in CASES).items() if n > 1]
    per_command = Counter(command_of(c["argv"]) for c in CASES)
    assert set(per_command) == EVERY_COMMAND, per_command


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """Two small prepared datasets from different parts of the shipped corpus (A, B), and the shipped corpus as
    `llmpt train` prepares it into the cache (for cases that start from a cache that already holds it)."""
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
    prepare_data(None, output=str(root / "kjv"))
    out["kjv"] = root / "kjv"
    return out


def test_the_shipped_corpus_is_known_without_preparing_it(datasets):
    """train refuses before preparing the shipped corpus, so what it checks (vocabulary, documents) comes from the
    shipped files: the same numbers a prepared copy's manifest holds."""
    from llmpt.data.tokenizer import shipped_corpus_facts

    m = json.loads(Path(f"{datasets['kjv']}.manifest.json").read_text())
    facts = shipped_corpus_facts()
    assert facts["documents"] == m["documents"]
    assert facts["tokenizer"]["vocab_size"] == m["tokenizer"]["vocab_size"]


def _fmt(value, ctx):
    return value.format(**ctx) if isinstance(value, str) else value


def _copy_prepared(src: str | Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    for suffix in (".bin", ".idx", ".manifest.json"):
        shutil.copy(f"{src}{suffix}", f"{dst}{suffix}")


def _setup(case, dirs: dict[str, Path], datasets, ctx, holders):
    tmp = dirs["case"]
    for op in case.get("setup", []):
        ((kind, arg),) = op.items()
        if kind == "write":  # text file; `root` (case, cache, cwd, home) defaults to the case directory
            p = dirs[arg.get("root", "case")] / arg["path"]
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(arg["text"])
        elif kind == "mkdir":
            (tmp / arg).mkdir(parents=True)
        elif kind == "write_bytes":
            (tmp / arg["path"]).write_bytes(bytes.fromhex(arg["hex"].replace(" ", "")))
        elif kind == "prepared":
            _copy_prepared(datasets[arg["dataset"]], tmp / arg["name"])
        elif kind == "cache_corpus":  # the shipped corpus already prepared into the cache (<cache>/data/kjv)
            _copy_prepared(datasets["kjv"], dirs["cache"] / "data" / "kjv")
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
        elif kind in ("hf_weights", "paddle_weights"):  # a tiny model's directory in either layout (zeros)
            _write_weights(tmp / arg["path"], "hf" if kind == "hf_weights" else "paddle", arg)
        elif kind == "run_yaml":  # a valid run.yaml (llmpt train --dry-run's), then `edit` applied to it
            _write_run_yaml(tmp / arg["path"], datasets, dirs, arg.get("set", {}), arg.get("drop", []))
        else:
            raise AssertionError(f"unknown setup op {kind}")


def _write_weights(directory: Path, fmt: str, arg: dict) -> None:
    """config.json + model.safetensors of a registry model (`model`) with its PaddleNLP config changed by `set`, in
    the Hugging Face (`hf_weights`) or PaddleNLP layout; then `hf_set` changes the written config.json and `tensor`
    ({name, shape}) replaces one tensor's shape."""
    import numpy as np

    from llmpt.interop import convert, families, safetensors
    from llmpt.models.registry import paddlenlp_config, resolve_model

    spec = resolve_model(arg["model"])
    config = {**paddlenlp_config(spec, 64), **arg.get("set", {})}
    state = {n: np.zeros(s, np.float32) for n, s in families.conversion(spec.family).paddle_shapes(config).items()}
    directory.mkdir(parents=True)
    convert.write_model(directory, fmt, spec.family, config, state, "F32", 2**40)
    if arg.get("hf_set"):
        written = json.loads((directory / "config.json").read_text())
        (directory / "config.json").write_text(json.dumps({**written, **arg["hf_set"]}))
    if arg.get("tensor"):
        infos = safetensors.read_headers(directory)
        tensors = {n: safetensors.pending(np.zeros(i.shape, np.float32), "F32") for n, i in infos.items()}
        tensors[arg["tensor"]["name"]] = safetensors.pending(np.zeros(arg["tensor"]["shape"], np.float32), "F32")
        safetensors.write_file(directory / "model.safetensors", tensors, {"format": "pt"})


def _write_run_yaml(path: Path, datasets, dirs, changes: dict, drop: list[str]) -> None:
    """A run.yaml as llmpt writes it (a 2-node dp2 on CPU), with keys changed (`a.b: value`) or dropped."""
    data = dirs["case"] / "d"
    if not Path(f"{data}.bin").exists():
        _copy_prepared(datasets["a"], data)
    argv = ["train", "llama-tiny", "--strategy", "dp2", "--device", "cpu", "--gpus", "1", "--nnodes", "2",
            "--master", "127.0.0.1:1", "--node-rank", "0", "--data", str(data), "-o", str(dirs["case"] / "run"),
            "--max-steps", "3", "--dry-run", "--json"]  # fmt: skip
    r = CliRunner().invoke(app, argv)
    assert r.exit_code == 0, r.stderr
    cfg = json.loads(r.stdout)["run_config"]
    for key, value in changes.items():
        *parents, last = key.split(".")
        node = cfg
        for k in parents:
            node = node[k]
        node[last] = value
    for key in drop:
        *parents, last = key.split(".")
        node = cfg
        for k in parents:
            node = node[k]
        del node[last]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))


def snapshot(root: Path, skip: tuple[str, ...] = ()) -> dict[str, tuple]:
    """Every path under `root` (the root included): its kind, and for a file its size, SHA-256 and mode, for a
    link its target."""
    if not root.exists():
        return {}
    out: dict[str, tuple] = {".": ("dir",)}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            rel = str(p.relative_to(root))
            if any(rel == s or rel.startswith(s + "/") or s.startswith(rel + "/") for s in skip):
                continue  # a skipped path, or a directory on the way to one
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                out[rel] = ("dir",)
            else:
                data = p.read_bytes()
                out[rel] = ("file", len(data), hashlib.sha256(data).hexdigest(), p.stat().st_mode)
    return out


def _snapshots(dirs: dict[str, Path]) -> dict[str, dict[str, tuple]]:
    return {k: snapshot(dirs[k], THIRD_PARTY_HOME if k == "home" else ()) for k in ROOTS}


def _changes(before: dict[str, tuple], after: dict[str, tuple]) -> list[str]:
    keys = sorted(set(before) | set(after))
    return [
        f"{k}: {before.get(k, ('absent',))[0]} -> {after.get(k, ('absent',))[0]}"
        for k in keys
        if before.get(k) != after.get(k)
    ]


def _run(argv, limit: int | None, env, cwd: Path) -> tuple[int, str]:
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
        cwd=cwd,
        preexec_fn=cap,
        timeout=300,
    )
    return r.returncode, r.stderr


def run_case(case, tmp_path: Path, datasets, monkeypatch, extra: tuple[str, ...] = ()):
    """Set the case up in fresh directories, run it, and return (exit code, stderr lines, context); asserts that
    no directory changed."""
    dirs = {k: tmp_path / k for k in ROOTS}
    for d in dirs.values():
        d.mkdir()
    ctx = {"tmp": str(dirs["case"]), "cache": str(dirs["cache"]), "cwd": str(dirs["cwd"])}
    holders: list[socket.socket] = []
    env = {
        "LLMPT_CACHE": str(dirs["cache"]),
        "LLMPT_NO_DETECT": "1",
        "COLUMNS": "400",
        "HOME": str(dirs["home"]),
        "TMPDIR": str(dirs["tmp"]),
        **case.get("env", {}),  # e.g. an unwritable LLMPT_CACHE
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(tempfile, "tempdir", str(dirs["tmp"]))  # in-process: tempfile caches $TMPDIR
    monkeypatch.chdir(dirs["cwd"])
    try:
        _setup(case, dirs, datasets, ctx, holders)
        before = _snapshots(dirs)
        argv = [_fmt(a, ctx) for a in case["argv"]] + list(extra)
        code, err = _run(argv, case.get("fsize_limit"), env, dirs["cwd"])
    finally:
        for s in holders:
            s.close()
    after = _snapshots(dirs)
    changed = {k: _changes(before[k], after[k]) for k in ROOTS if before[k] != after[k]}
    assert not changed, f"a refusal wrote: {changed}\nstderr: {err}"
    return code, [ln for ln in err.splitlines() if ln.strip()], ctx


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_bad_input_is_refused_in_one_line(case, tmp_path, datasets, monkeypatch):
    code, lines, ctx = run_case(case, tmp_path, datasets, monkeypatch)
    err = "\n".join(lines)
    assert code == 2, (code, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for want in case["expect"]:
        assert _fmt(want, ctx) in lines[0], (want, lines[0])


IN_PROCESS = [c for c in CASES if "fsize_limit" not in c]


@pytest.mark.parametrize("case", IN_PROCESS, ids=[c["id"] for c in IN_PROCESS])
def test_bad_input_with_json_is_one_json_object(case, tmp_path, datasets, monkeypatch):
    code, lines, ctx = run_case(case, tmp_path, datasets, monkeypatch, extra=("--json",))
    assert code == 2, (code, lines)
    assert len(lines) == 1, lines
    err = json.loads(lines[0])
    assert err["schema"] == "llmpt.error/1" and err["exit_code"] == 2, err
    said = err["error"] + (f"; hint: {err['hint']}" if err["hint"] else "")
    for want in case["expect"]:
        assert _fmt(want, ctx) in said, (want, said)
