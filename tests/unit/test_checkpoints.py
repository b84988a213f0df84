"""Which checkpoint --resume takes: the newest one whose completion marker matches its files."""

from __future__ import annotations

from llmpt.launch.checkpoints import MARKER, is_complete, last_complete, mark_complete


def _ckpt(root, step, files=None):
    d = root / f"checkpoint-{step}"
    d.mkdir(parents=True)
    for name, size in (files or {"model_state.pdparams": 64, "optimizer.pdopt": 128, "trainer_state.json": 8}).items():
        (d / name).write_bytes(b"x" * size)
    return d


def test_newest_marked_checkpoint_wins(tmp_path):
    for step in (4, 8, 12):
        mark_complete(_ckpt(tmp_path, step), step)
    assert last_complete(tmp_path).name == "checkpoint-12"


def test_unmarked_truncated_or_grown_checkpoints_are_passed_over(tmp_path):
    mark_complete(_ckpt(tmp_path, 4), 4)
    _ckpt(tmp_path, 8)  # killed before the marker
    c12 = _ckpt(tmp_path, 12)
    mark_complete(c12, 12)
    (c12 / "optimizer.pdopt").write_bytes(b"x" * 64)  # cut short after marking (disk trouble)
    assert not is_complete(c12)
    assert last_complete(tmp_path).name == "checkpoint-4"
    c16 = _ckpt(tmp_path, 16)
    mark_complete(c16, 16)
    (c16 / "extra.bin").write_bytes(b"y")
    assert last_complete(tmp_path).name == "checkpoint-4"


def test_garbage_marker_and_no_checkpoints(tmp_path):
    assert last_complete(tmp_path) is None and last_complete(tmp_path / "missing") is None
    c = _ckpt(tmp_path, 4)
    (c / MARKER).write_text("{not json")
    assert last_complete(tmp_path) is None
