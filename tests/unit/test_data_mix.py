"""Weighted mixing of --data prefixes: WEIGHT:PREFIX normalised, bare prefixes by their token counts, the mix and the
epochs each corpus will see recorded in run.yaml, a warning when a corpus repeats too often, refusals in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from llmpt.data.mmap import index_bytes


def _prefix(d, name: str, docs: list[int]) -> str:
    ids = (np.arange(sum(docs), dtype=np.uint16) % 900) + 1
    (d / f"{name}.bin").write_bytes(ids.tobytes())
    (d / f"{name}.idx").write_bytes(
        index_bytes(np.array(docs, np.int32), np.arange(len(docs) + 1), np.dtype(np.uint16))
    )
    return str(d / name)


@pytest.fixture
def two(tmp_path):
    return _prefix(tmp_path, "big", [300] * 30), _prefix(tmp_path, "small", [300] * 10)


def _dry(cli, *args):
    r = cli("train", "llama-tiny", "--strategy", "dp1", "--device", "cpu", "--dry-run", "--json", *args)
    return r, (json.loads(r.stdout)["run_config"] if r.exit_code == 0 else None)


def test_bare_prefixes_weigh_by_their_tokens(cli, two):
    big, small = two
    r, cfg = _dry(cli, "--data", big, "--data", small)
    assert r.exit_code == 0, r.stderr
    assert cfg["data"]["weights"] == pytest.approx([0.75, 0.25])
    # both are seen equally often: weight follows size
    assert cfg["data"]["epochs"][0] == pytest.approx(cfg["data"]["epochs"][1])
    assert any(n.startswith(f"data {big}: 9000 tokens, weight 0.750") for n in cfg["notes"])


def test_given_weights_are_normalised_and_set_the_epochs(cli, two):
    big, small = two
    r, cfg = _dry(cli, "--data", f"2:{big}", "--data", f"2:{small}", "--max-steps", "10")
    assert r.exit_code == 0, r.stderr
    assert cfg["data"]["weights"] == pytest.approx([0.5, 0.5])
    e_big, e_small = cfg["data"]["epochs"]
    assert e_small == pytest.approx(3 * e_big, rel=1e-3)  # a third of the tokens, the same share
    b = cfg["strategy"]["batch"]
    run_tokens = 10 * b["micro_batch_size"] * b["grad_accum"] * 1 * 128  # steps x batch x data ranks x seq len
    assert e_big == pytest.approx(run_tokens * 0.5 / (9000 * 949 / 1000), rel=1e-3)  # the train split's share


def test_a_corpus_seen_too_often_is_warned_about(cli, two):
    from llmpt.run_config import DataSection

    big, small = two
    _, cfg = _dry(cli, "--data", f"0.1:{big}", "--data", f"0.9:{small}", "--max-steps", "100")
    lines = DataSection.model_validate(cfg["data"]).repeat_warnings()  # printed by train as the run starts
    assert len(lines) == 1 and lines[0].startswith(f"data {small}: the run will see it")
    _, cfg = _dry(cli, "--data", f"0.1:{big}", "--data", f"0.9:{small}", "--max-steps", "100",
                  "--set", "data.repeat_warning=1000")  # fmt: skip
    assert DataSection.model_validate(cfg["data"]).repeat_warnings() == []


@pytest.mark.parametrize(
    "items, fragment",
    [
        (("0.5:{big}", "{small}"), "give every prefix a weight or none"),
        (("0:{big}", "1:{small}"), "the weight must be a number > 0"),
        (("-2:{big}", "1:{small}"), "the weight must be a number > 0"),
    ],
)
def test_refusals(cli, two, items, fragment):
    big, small = two
    args = [x for item in items for x in ("--data", item.format(big=big, small=small))]
    r, _ = _dry(cli, *args)
    assert r.exit_code == 2 and fragment in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_the_blend_is_what_paddlenlp_builds_from():
    from llmpt.run_config import DataSection

    d = DataSection(prefixes=["a", "b"], seq_len=8, tokenizer_dir="t", weights=[0.25, 0.75])
    assert d.blend() == [0.25, "a", 0.75, "b"]
    assert DataSection(prefixes=["a"], seq_len=8, tokenizer_dir="t", weights=[1.0]).blend() == ["a"]
