"""metrics.jsonl read as it grows: only complete new lines, each once; a replaced file starts over."""

import json

from llmpt.launch.summary import MetricsTail, read_metrics


def _line(step: int) -> bytes:
    return (json.dumps({"event": "step", "step": step, "t": step * 0.5}) + "\n").encode()


def test_reads_each_complete_line_once_and_waits_for_a_partial_one(tmp_path):
    path = tmp_path / "metrics.jsonl"
    tail = MetricsTail(path)
    assert tail.read() == []  # not written yet
    path.write_bytes(_line(1) + _line(2) + _line(3)[:7])
    assert [r["step"] for r in tail.read()] == [1, 2]
    with path.open("ab") as f:
        f.write(_line(3)[7:] + _line(4))
    assert [r["step"] for r in tail.read()] == [1, 2, 3, 4]
    assert [r["step"] for r in tail.read()] == [1, 2, 3, 4]  # nothing new: nothing added twice
    assert tail.read() == read_metrics(path)


def test_a_cut_line_is_skipped_like_read_metrics_does(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(_line(1) + _line(2)[:9] + _line(3))  # a run died mid-line; the resumed run appended
    tail = MetricsTail(path)
    assert [r["step"] for r in tail.read()] == [1] == [r["step"] for r in read_metrics(path)]


def test_a_replaced_shorter_file_starts_over(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(_line(1) + _line(2) + _line(3))
    tail = MetricsTail(path)
    assert len(tail.read()) == 3
    path.write_bytes(_line(7))
    assert [r["step"] for r in tail.read()] == [7]
