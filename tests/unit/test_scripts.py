"""launch-script's cluster files: the sbatch script's options, syntax (bash -n) and control flow (a stand-in `srun`
that only exits with a code: requeue on 75, the batch shell surviving SIGTERM), absolute paths, the log directory;
the PaddleJob manifest against the operator's own CRD schema (tests/assets/paddlejob_crd_v1_schema.json) in strict
mode and the core/v1 rules a schema cannot say; and the pickled-weights warning."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from llmpt.data.mmap import index_bytes
from llmpt.launch.trust import pickle_warning

CRD = Path(__file__).parents[1] / "assets" / "paddlejob_crd_v1_schema.json"
TRAIN = ("llama-tiny", "--strategy", "dp2", "--device", "cpu", "--gpus", "1", "--nnodes", "2")


@pytest.fixture
def prefix(tmp_path):
    """A prepared-looking dataset (no manifest: the shipped tokenizer) that launch-script accepts without paddle."""
    ids = np.arange(1, 501, dtype=np.uint16) % 900
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "d.bin").write_bytes(ids.tobytes())
    idx = index_bytes(np.array([200, 300], np.int32), np.arange(3), np.dtype(np.uint16))
    (tmp_path / "data" / "d.idx").write_bytes(idx)
    return tmp_path / "data" / "d"


def _script(cli, out: Path, prefix: Path, *extra: str) -> str:
    r = cli("launch-script", *TRAIN, "--slurm", "--data", str(prefix), "-o", str(out), *extra)
    assert r.exit_code == 0, r.stderr
    text = (out / "launch.sbatch").read_text()
    assert subprocess.run(["bash", "-n", str(out / "launch.sbatch")], capture_output=True).returncode == 0
    return text


def _sbatch(text: str) -> list[str]:
    return re.findall(r"^#SBATCH (.*)$", text, re.M)


# ---- Slurm: what the script says ----------------------------------------------------------------------------------


def test_slurm_options_become_sbatch_lines(cli, tmp_path, prefix):
    out = tmp_path / "run"
    text = _script(
        cli, out, prefix, "--partition", "gpu", "--account", "proj-1", "--time", "1-00:00:00", "--qos", "high",
        "--sbatch", "--constraint=a100", "--sbatch", "--mail-type=END", "--requeue", "--signal-before", "600",
    )  # fmt: skip
    lines = _sbatch(text)
    assert lines[:7] == [
        "--job-name=llmpt-llama-tiny-dp2",
        "--nodes=2",
        "--ntasks-per-node=1",
        "--exclusive",
        f"--output={out}/logs/slurm-%j.out",
        "--open-mode=append",
        "--partition=gpu",
    ]
    assert lines[7:] == [
        "--account=proj-1", "--time=1-00:00:00", "--qos=high", "--requeue", "--signal=USR1@600",
        "--constraint=a100", "--mail-type=END",
    ]  # fmt: skip
    # Slurm opens --output before the script runs: the directory exists once the script is written
    assert (out / "logs").is_dir()
    assert 'scontrol requeue "$SLURM_JOB_ID"' in text
    assert f"run-node {out}/run.yaml --resume" in text
    # a preempted node exits 75 while another may still finish the checkpoint: srun waits, never kills on that
    assert "srun --wait=120 " in text and "--kill-on-bad-exit" not in text
    # every #SBATCH line comes before the first command (sbatch stops reading them there)
    first_command = min(i for i, ln in enumerate(text.splitlines()) if ln and not ln.startswith("#"))
    assert all(i < first_command for i, ln in enumerate(text.splitlines()) if ln.startswith("#SBATCH"))


def test_the_signal_is_the_runs_preempt_signal(cli, tmp_path, prefix):
    text = _script(cli, tmp_path / "r", prefix, "--signal-before", "90", "--set", "train.preempt_signal=SIGHUP")
    assert "--signal=HUP@90" in _sbatch(text)
    assert "preempt_signal: SIGHUP" in (tmp_path / "r" / "run.yaml").read_text()


def test_default_script_has_no_requeue_and_a_port_from_the_job_id(cli, tmp_path, prefix):
    text = _script(cli, tmp_path / "r", prefix)
    assert not any(s.startswith(("--requeue", "--signal", "--time", "--partition")) for s in _sbatch(text))
    assert "scontrol requeue" not in text
    assert "PORT=$(( 20000 + SLURM_JOB_ID % 60 * 200 ))" in text
    text = _script(cli, tmp_path / "r2", prefix, "--port", "31000")
    assert "PORT=31000" in text


def test_relative_paths_are_made_absolute(cli, tmp_path, prefix, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = cli("launch-script", *TRAIN, "--slurm", "--data", "data/d", "-o", "rel/run")
    assert r.exit_code == 0, r.stderr
    cfg = yaml.safe_load((tmp_path / "rel" / "run" / "run.yaml").read_text())
    assert cfg["output_dir"] == str(tmp_path / "rel" / "run")
    assert cfg["data"]["prefixes"] == [str(prefix)]
    assert cfg["training_args"]["output_dir"] == str(tmp_path / "rel" / "run")
    assert str(tmp_path / "rel" / "run" / "run.yaml") in (tmp_path / "rel" / "run" / "launch.sbatch").read_text()
    # the default run directory too (runs/MODEL-STRATEGY under this directory)
    r = cli("launch-script", *TRAIN, "--slurm", "--data", "data/d", "--json")
    assert r.exit_code == 0, r.stderr
    assert Path(json.loads(r.stdout)["output_dir"]).is_absolute()


def test_a_relative_path_from_a_config_file_is_refused(cli, tmp_path, prefix, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_text("data:\n  prefixes: [data/d]\n")
    r = cli("launch-script", *TRAIN, "--slurm", "--config", str(tmp_path / "c.yaml"), "-o", str(tmp_path / "run"))
    assert r.exit_code == 2
    assert "data.prefixes 'data/d'" in r.stderr and "relative" in r.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--sbatch", "--constraint=a100\n#SBATCH --wrap=rm"), "one sbatch option on one line"),
        (("--sbatch", "--time=10"), "use --time"),
        (("--sbatch", "--nodes=4"), "use --nnodes"),
        (("--sbatch", "constraint=a100"), "one sbatch option"),
        (("--time", "ten minutes"), "not a Slurm time limit"),
        (("--time", "10:00", "--signal-before", "600"), "not shorter than --time 10:00 (600 s)"),
        (("--signal-before", "0"), "1..65535"),
        (("--partition", "gpu a100"), "not a Slurm name"),
        (("--account", "x\ny"), "not a Slurm name"),
        (("--port", "70000"), "1..65535"),
    ],
)
def test_bad_slurm_options_are_refused_writing_nothing(cli, tmp_path, prefix, args, says):
    r = cli("launch-script", *TRAIN, "--slurm", "--data", str(prefix), "-o", str(tmp_path / "run"), *args)
    assert r.exit_code == 2 and says in r.stderr, r.stderr
    assert not (tmp_path / "run").exists()


def test_options_of_the_other_scheduler_are_warned_about(cli, tmp_path, prefix):
    r = cli("launch-script", *TRAIN, "--k8s", "--data", str(prefix), "-o", str(tmp_path / "r"), "--requeue")
    assert r.exit_code == 0 and "warning: --requeue has no effect with --k8s" in r.stderr
    r = cli("launch-script", *TRAIN, "--slurm", "--data", str(prefix), "-o", str(tmp_path / "s"), "--pvc", "c:/x")
    assert r.exit_code == 0 and "warning: --pvc has no effect with --slurm" in r.stderr


# ---- Slurm: what the script does (srun stands in: it only exits with a code) -------------------------------------


@pytest.fixture
def fake_slurm(tmp_path):
    """`srun` that sleeps FAKE_SRUN_SLEEP seconds and exits FAKE_SRUN_RC; `scontrol` that lists one host and records a
    requeue in FAKE_SLURM_LOG."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text('#!/bin/bash\nsleep "${FAKE_SRUN_SLEEP:-0}"\nexit "$FAKE_SRUN_RC"\n')
    (bin_dir / "scontrol").write_text(
        '#!/bin/bash\ncase "$1" in\n  show) echo localhost ;;\n  requeue) echo "requeue $2" >> "$FAKE_SLURM_LOG" ;;\n'
        "  *) exit 1 ;;\nesac\n"
    )
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    log = tmp_path / "scontrol.log"

    def run(script: Path, rc: int, sleep: float = 0, term_after: float | None = None):
        env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", SLURM_JOB_ID="777", SLURM_JOB_NODELIST="n1",
                   SLURM_JOB_NUM_NODES="2", FAKE_SRUN_RC=str(rc), FAKE_SRUN_SLEEP=str(sleep), FAKE_SLURM_LOG=str(log))  # fmt: skip
        p = subprocess.Popen(
            ["bash", str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        if term_after is not None:
            time.sleep(term_after)
            p.send_signal(signal.SIGTERM)
        out, _ = p.communicate(timeout=60)
        return p.returncode, out, log.read_text() if log.exists() else ""

    return run


def test_preempted_requeues_the_job_and_exits_0(cli, tmp_path, prefix, fake_slurm):
    _script(cli, tmp_path / "r", prefix, "--requeue", "--port", "31000")
    rc, out, calls = fake_slurm(tmp_path / "r" / "launch.sbatch", 75)
    assert (rc, calls) == (0, "requeue 777\n"), out
    assert "master localhost:31000" in out and "requeueing job 777" in out


def test_other_endings_do_not_requeue(cli, tmp_path, prefix, fake_slurm):
    _script(cli, tmp_path / "r", prefix, "--requeue")
    for code in (0, 1, 2):
        rc, out, calls = fake_slurm(tmp_path / "r" / "launch.sbatch", code)
        assert (rc, calls) == (code, ""), out
    assert "master localhost:31400" in out  # 20000 + 777 % 60 * 200


def test_without_requeue_a_preempted_job_ends_75(cli, tmp_path, prefix, fake_slurm):
    _script(cli, tmp_path / "r", prefix)
    rc, out, calls = fake_slurm(tmp_path / "r" / "launch.sbatch", 75)
    assert (rc, calls) == (75, ""), out
    assert "sbatch this script to continue" in out


def test_sigterm_to_the_batch_shell_waits_for_run_node(cli, tmp_path, prefix, fake_slurm):
    """Slurm signals the batch shell too (scancel, the time limit): it must outlive srun to requeue."""
    _script(cli, tmp_path / "r", prefix, "--requeue")
    rc, out, calls = fake_slurm(tmp_path / "r" / "launch.sbatch", 75, sleep=2, term_after=0.8)
    assert (rc, calls) == (0, "requeue 777\n"), out
    assert "the batch script got SIGTERM" in out


# ---- Kubernetes ------------------------------------------------------------------------------------------------------


def _strict(schema):
    """kubectl apply --validate=strict: a field the schema does not name is an error (the API server would otherwise
    drop it without a word)."""
    if isinstance(schema, dict):
        schema = {k: _strict(v) for k, v in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
        return schema
    return [_strict(v) for v in schema] if isinstance(schema, list) else schema


def validate_manifest(text: str) -> tuple[dict, dict]:
    """The ConfigMap and the PaddleJob, checked: the PaddleJob against the operator's CRD schema (v1, strict; its
    pod template is Kubernetes' core/v1 PodTemplateSpec as the operator's client library generated it), then the
    core/v1 rules no schema says (names, references between volumes and mounts, enumerations)."""
    import jsonschema

    config_map, job = yaml.safe_load_all(text)
    crd = json.loads(CRD.read_text())
    jsonschema.Draft7Validator(_strict(crd["openAPIV3Schema"])).validate(job)
    dns_label = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    assert config_map["apiVersion"] == "v1" and config_map["kind"] == "ConfigMap"
    assert set(config_map) == {"apiVersion", "kind", "metadata", "data"}
    assert all(isinstance(v, str) for v in config_map["data"].values())
    # pods are named NAME-worker-N (the operator's genPaddleResName) and are DNS labels
    assert dns_label.match(job["metadata"]["name"]) and len(job["metadata"]["name"]) <= 63 - len("-worker-99")
    pod = job["spec"]["worker"]["template"]["spec"]
    assert pod["restartPolicy"] in ("Always", "OnFailure", "Never")
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert len(volumes) == len(pod["volumes"])
    for v in pod["volumes"]:
        assert dns_label.match(v["name"])
        kinds = set(v) - {"name"}
        assert len(kinds) == 1, v  # a volume has exactly one source
        if "hostPath" in v:
            assert v["hostPath"]["type"] in ("", "DirectoryOrCreate", "Directory", "FileOrCreate", "File")
        if "configMap" in v:
            assert v["configMap"]["name"] == config_map["metadata"]["name"]
        if "emptyDir" in v:
            assert v["emptyDir"].get("medium", "") in ("", "Memory")
    for c in pod["containers"]:
        assert dns_label.match(c["name"])
        mounts = [m["mountPath"] for m in c["volumeMounts"]]
        assert len(set(mounts)) == len(mounts) and all(m.startswith("/") for m in mounts)
        assert all(m["name"] in volumes for m in c["volumeMounts"])
    return config_map, job


def _manifest(cli, out: Path, prefix: Path, *extra: str) -> tuple[dict, dict]:
    r = cli("launch-script", *TRAIN, "--k8s", "--data", str(prefix), "-o", str(out), *extra)
    assert r.exit_code == 0, r.stderr
    return validate_manifest((out / "paddlejob.yaml").read_text())


def test_manifest_passes_the_crd_schema_and_resumes_on_restart(cli, tmp_path, prefix):
    config_map, job = _manifest(cli, tmp_path / "run", prefix)
    pod = job["spec"]["worker"]["template"]["spec"]
    assert pod["restartPolicy"] == "OnFailure" and pod["terminationGracePeriodSeconds"] >= 300
    assert "run-node /llmpt/run.yaml --resume" in pod["containers"][0]["command"][2]
    assert config_map["data"]["run.yaml"] == (tmp_path / "run" / "run.yaml").read_text()
    # without --pvc / --host-path: the claim at the run directory, the data's directory from the node
    by_mount = {m["mountPath"]: volumes for m in pod["containers"][0]["volumeMounts"]
                for volumes in [{v["name"]: v for v in pod["volumes"]}[m["name"]]]}  # fmt: skip
    assert by_mount[str(tmp_path / "run")]["persistentVolumeClaim"] == {"claimName": "llmpt-runs"}
    assert by_mount[str(tmp_path / "data")]["hostPath"] == {"path": str(tmp_path / "data"), "type": "Directory"}


def test_the_schema_check_can_fail(cli, tmp_path, prefix):
    import jsonschema

    _manifest(cli, tmp_path / "run", prefix)
    config_map, job = yaml.safe_load_all((tmp_path / "run" / "paddlejob.yaml").read_text())

    def pod(j):
        return j["spec"]["worker"]["template"]["spec"]

    breaks = (
        lambda j: pod(j).update(restartPolicyy="Never"),  # a misspelt field, dropped without --validate=strict
        lambda j: j["spec"]["worker"].update(replicas="two"),
        lambda j: pod(j)["volumes"][1].update(persistentVolumeClaim={"claim": "llmpt-runs"}),
        lambda j: pod(j)["containers"][0].pop("name"),
    )
    for broken in breaks:
        bad = json.loads(json.dumps(job))
        broken(bad)
        with pytest.raises(jsonschema.ValidationError):
            validate_manifest(yaml.safe_dump_all([config_map, bad]))


def test_declared_volumes_must_cover_the_data(cli, tmp_path, prefix):
    out = tmp_path / "run"
    r = cli("launch-script", *TRAIN, "--k8s", "--data", str(prefix), "-o", str(out), "--pvc", f"runs:{out}")
    assert r.exit_code == 2 and f"data.prefixes {tmp_path / 'data'} is on no declared volume" in r.stderr
    assert f"--host-path {tmp_path / 'data'}" in r.stderr and not out.exists()
    _, job = _manifest(cli, out, prefix, "--pvc", f"runs:{out}", "--host-path", f"{tmp_path / 'data'}")
    vols = job["spec"]["worker"]["template"]["spec"]["volumes"]
    assert {"name": "vol0", "persistentVolumeClaim": {"claimName": "runs"}} in vols
    assert {"name": "vol1", "hostPath": {"path": str(tmp_path / "data"), "type": "Directory"}} in vols
    # a claim mounted above both covers both
    _manifest(cli, tmp_path / "run2", prefix, "--pvc", f"shared:{tmp_path}", "--overwrite")


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--pvc", "Runs:/x"), "lower-case claim name"),
        (("--pvc", "runs"), "CLAIM:/MOUNT"),
        (("--pvc", "runs:rel"), "mount point must be an absolute path"),
        (("--host-path", "data:/data"), "must be an absolute path"),
        (("--pvc", "a:/m", "--pvc", "b:/m"), "two volumes are mounted at /m"),
    ],
)
def test_bad_volumes_are_refused(cli, tmp_path, prefix, args, says):
    r = cli("launch-script", *TRAIN, "--k8s", "--data", str(prefix), "-o", str(tmp_path / "run"), *args)
    assert r.exit_code == 2 and says in r.stderr, r.stderr
    assert not (tmp_path / "run").exists()


# ---- pickled weights from a place others can write ----------------------------------------------------------------


def test_pickle_warning_names_the_writable_path(tmp_path):
    d = tmp_path / "ckpt"
    d.mkdir()
    (d / "model.safetensors").write_bytes(b"x")
    d.chmod(0o777)
    assert pickle_warning("--resume", d) is None  # nothing pickled
    (d / "optimizer.pdopt").write_bytes(b"x")
    d.chmod(0o755)
    (d / "optimizer.pdopt").chmod(0o644)
    assert pickle_warning("--resume", d) is None  # only this user can write
    d.chmod(0o775)
    w = pickle_warning("--resume", d)
    assert w is not None and "\n" not in w
    assert w.startswith(f"--resume {d}: loads pickled files (optimizer.pdopt;") and "group-writable (mode 0775)" in w
    d.chmod(0o755)
    (d / "optimizer.pdopt").chmod(0o666)
    assert f"{d / 'optimizer.pdopt'} is world-writable (mode 0666)" in pickle_warning("--init-from", d)


def test_pickle_warning_for_another_owner(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("chown to another user needs root")
    d = tmp_path / "w"
    d.mkdir()
    (d / "model_state.pdparams").write_bytes(b"x")
    os.chown(d / "model_state.pdparams", 12345, 12345)
    assert "owned by uid 12345" in pickle_warning("--init-from", d)


# ---- the ports a node opens, checked before its launcher starts ----------------------------------------------------


def _tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*"))}


@pytest.fixture
def listening():
    """hold(PORT): a socket listening on 127.0.0.1:PORT for the test (a stranger's server)."""
    import socket

    held = []

    def hold(port: int) -> None:
        s = socket.socket()
        s.bind(("127.0.0.1", port))
        s.listen(1)
        held.append(s)

    yield hold
    for s in held:
        s.close()


def _free_base(span: int = 140) -> int:
    import socket

    for base in range(24000, 31000, 200):
        try:
            socks = []
            for p in range(base, base + span):
                s = socket.socket()
                s.bind(("", p))
                socks.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise AssertionError("no free port window")


@pytest.mark.parametrize(("node_rank", "busy", "says"), [
    ("0", 1, "(the ranks' store;"), ("0", 40, "(a rank group's store;"), ("1", 3, "(a rank group's store;"),
])  # fmt: skip
def test_run_node_refuses_a_busy_store_port_writing_nothing(cli, tmp_path, prefix, listening, node_rank, busy, says):
    out = tmp_path / "run"
    _script(cli, out, prefix)
    before = _tree(tmp_path)
    master = _free_base()
    listening(master + busy)
    r = cli("run-node", str(out / "run.yaml"), "--master", f"127.0.0.1:{master}", "--node-rank", node_rank)
    assert r.exit_code == 2, r.stderr
    line = r.stderr.strip().splitlines()[0]
    assert f"--master 127.0.0.1:{master}: port {master + busy} {says} this run uses " in line
    assert "already in use on this host" in line and "ss -ltnp" in r.stderr
    assert _tree(tmp_path) == before


def test_the_ports_are_pinned_for_the_launcher():
    from llmpt.launch.command import GROUP_PORTS, RunPorts

    ports = RunPorts(20000)
    assert ports.env() == {"PORT_RANGE": "20001:20001", "FLAGS_FIXED_PORT": str(20002 + GROUP_PORTS)}
    assert [p for p, _ in ports.opened_on(0)][:3] == [20000, 20001, 20002]
    assert [p for p, _ in ports.opened_on(1)] == list(range(20002, 20002 + GROUP_PORTS))


@pytest.mark.parametrize(
    ("master", "node_rank", "launcher_master", "host"),
    [
        ("localhost:29500", "0", "127.0.0.1:29500", "127.0.0.1"),  # a name: resolved; node 0 serves it as its own
        ("localhost:29500", "1", "127.0.0.1:29500", None),
        ("192.0.2.7:29500", "0", "192.0.2.7:29500", None),  # not this machine: nothing to serve here
    ],
)
def test_the_launcher_gets_the_master_as_an_ip(cli, tmp_path, prefix, master, node_rank, launcher_master, host):
    r = cli("train", *TRAIN, "--data", str(prefix), "-o", str(tmp_path / "run"), "--master", master,
            "--node-rank", node_rank, "--dry-run", "--json")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    cmd = json.loads(r.stdout)["command"]
    assert cmd[cmd.index("--master") + 1] == launcher_master
    assert (cmd[cmd.index("--host") + 1] if "--host" in cmd else None) == host
