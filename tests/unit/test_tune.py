"""`llmpt tune` (llmpt/planner/tune.py): every candidate replays through `llmpt plan` to the same estimate, the
pick is at least as fast as the seed's own layout on the seed's machine, and nothing-fits answers with the fewest
devices. The planner's numbers themselves: tests/unit/test_planner.py."""

from __future__ import annotations

import json

import pytest

from llmpt.planner.seed import seed_table
from llmpt.resolve import RunRequest, resolve_plan


def tune(cli, *args: str) -> dict:
    r = cli("tune", *args, "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def replayed(doc: dict, c: dict):
    gpus = doc["gpus"] // doc["nnodes"]
    return resolve_plan(
        RunRequest(
            model=doc["model"], strategy=c["strategy"], gpus=str(gpus), nnodes=doc["nnodes"], seq_len=doc["seq_len"],
            device="gpu", device_type=doc["device_type"], local=False, set_items=tuple(c["set"]),
            master="first-node:36017" if doc["nnodes"] > 1 else None,
        )
    )  # fmt: skip


@pytest.mark.parametrize(
    "args",
    [("llama2-7b", "--gpus", "8"), ("qwen-14b", "--gpus", "8", "--nnodes", "2"), ("llama2-13b", "--gpus", "8",
     "--device-type", "A100-40G", "--seq-len", "2048", "--global-batch", "1048576"),
     ("deepseek-v2-lite", "--gpus", "8")],
    ids=["llama2-7b-8", "qwen-14b-16", "llama2-13b-a100-40g", "deepseek-v2-lite-8-moe"],
)  # fmt: skip
def test_every_candidate_replays_through_plan_to_the_same_estimate(cli, args):
    doc = tune(cli, *args, "--top", "6")
    assert doc["schema"] == "llmpt.tune/1" and 2 <= len(doc["candidates"]) <= 6, doc
    speeds = [c["tokens_per_card_per_sec"] for c in doc["candidates"]]
    assert speeds == sorted(speeds, reverse=True)
    for c in doc["candidates"]:
        p = replayed(doc, c)
        e = p.estimate
        assert p.strategy.name == c["strategy"] and c["fits"] and e.fits, c
        assert round(e.tokens_per_card_per_sec, 2) == c["tokens_per_card_per_sec"], (c, e.tokens_per_card_per_sec)
        assert round(e.memory_mb_per_card, 1) == c["memory_mb_per_card"], (c, e.memory_mb_per_card)
        b = p.strategy.batch
        assert (
            b.micro_batch_size * b.grad_accum * p.expansion.degrees.data_degree * doc["seq_len"]
            == (doc["global_batch_tokens"])
        )


@pytest.mark.parametrize("row", seed_table()[1], ids=lambda r: f"{r.model}-{r.strategy}")
def test_the_pick_is_at_least_as_fast_as_the_seed_layout(cli, row):
    meta, _ = seed_table()
    sets = (f"strategy.batch.micro_batch_size={row.micro_batch}", f"strategy.batch.grad_accum={row.accumulation}")
    seed = resolve_plan(
        RunRequest(model=row.model, strategy=row.strategy, gpus=str(meta["gpus"]), seq_len=meta["seq_len"],
                   device="gpu", device_type=meta["machine"], local=False, set_items=sets)
    )  # fmt: skip
    tokens = row.micro_batch * row.accumulation * seed.expansion.degrees.data_degree * meta["seq_len"]
    doc = tune(cli, row.model, "--gpus", str(meta["gpus"]), "--device-type", meta["machine"], "--seq-len",
               str(meta["seq_len"]), "--global-batch", str(tokens), "--top", "1")  # fmt: skip
    (best,) = doc["candidates"]
    if seed.estimate.fits:
        assert best["tokens_per_card_per_sec"] >= round(seed.estimate.tokens_per_card_per_sec, 2), (best, row)


def test_nothing_fits_names_the_fewest_devices(cli):
    doc = tune(cli, "llama2-70b", "--gpus", "1", "--device-type", "RTX-4090")
    assert doc["candidates"] == [] and doc["min_gpus"] is not None and doc["min_gpus"] > 1


def test_a_global_batch_that_is_not_whole_sequences_is_refused(cli):
    r = cli("tune", "llama2-7b", "--gpus", "8", "--global-batch", "1000")
    assert r.exit_code == 2 and "--global-batch 1000: not a whole number of 4096-token sequences" in r.output


def test_a_global_batch_no_layout_can_split_is_refused_with_one_that_can(cli):
    """6 devices: every layout has 3 or 6 data-parallel replicas, and 64 sequences divide by neither; the refusal
    names a global batch that divides (66 sequences), and that one is answered."""
    r = cli("tune", "llama2-7b", "--gpus", "6")
    assert r.exit_code == 2 and "every layout has 3, 6 data-parallel replicas" in r.output, r.output
    doc = tune(cli, "llama2-7b", "--gpus", "6", "--global-batch", str(66 * 4096), "--top", "1")
    assert doc["candidates"] and doc["candidates"][0]["fits"]


def test_an_moe_model_is_tuned_with_its_experts_over_the_dp_ranks(cli):
    """DeepSeek-V2-Lite's MoE layer splits its 64 experts over the data-parallel ranks: every candidate with dp > 1
    names ep = dp, and each holds 1/ep of the routed experts (the replayed plan's parameter count)."""
    from llmpt.planner.shapes import param_groups

    doc = tune(cli, "deepseek-v2-lite", "--gpus", "8", "--top", "6")
    with_dp = 0
    for c in doc["candidates"]:
        p = replayed(doc, c)
        d = p.expansion.degrees
        assert d.ep == (d.dp if d.dp > 1 else 1), c["strategy"]
        # ep beside tp, pp or sharding is refused with gradient clipping on (the default): not offered
        assert d.ep == 1 or d.tp == d.pp == d.sharding == 1, c["strategy"]
        with_dp += d.dp > 1
        if d.dp > 1 and d.tp == d.pp == d.sharding == 1:
            g = param_groups(p.model, doc["seq_len"])
            assert p.estimate.params_per_card == g.total - g.moe_layers * g.experts * (d.ep - 1) // d.ep
    assert with_dp > 0
