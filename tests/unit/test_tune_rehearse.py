"""`llmpt tune --rehearse` rehearses exactly the pick: its strategy and its --set list (the rehearsal itself runs for
real in tests/integration/test_rehearse.py; here only what tune hands it)."""

from __future__ import annotations

import json

import llmpt.rehearse
from llmpt.rehearse import Rehearsal, Stage


def test_tune_rehearses_the_first_candidate_with_its_settings(cli, monkeypatch):
    asked = []

    def fake(model, strategy, output_dir=None, keep=False, set_items=()):
        asked.append((model, strategy, set_items))
        return Rehearsal(model, strategy, 2, [Stage("ranks up", True, "2/2 rank logs")], list(set_items))

    monkeypatch.setattr(llmpt.rehearse, "rehearse", fake)
    r = cli("tune", "llama-7b", "--gpus", "2", "--rehearse", "--json")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    first = doc["candidates"][0]
    assert asked == [("facebook/llama-7b", first["strategy"], tuple(first["set"]))]
    assert any(x.startswith("strategy.batch.micro_batch_size=") for x in first["set"])
    assert doc["rehearsal"]["set"] == first["set"] and doc["rehearsal"]["passed"]
