"""The planner: calibration on the seed's 11 rows, the physics of each knob, the first-knob search, the CLI."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from llmpt.planner.devices import match_gpu_name, resolve_device
from llmpt.planner.estimate import Layout, estimate, flops_per_token, plan_estimate, renamed
from llmpt.planner.seed import predict, row_layout, seed_table
from llmpt.planner.shapes import param_groups
from llmpt.resolve import RunRequest, resolve_plan

from .test_models import _seed_md

A100 = resolve_device("A100-80G")
ROWS = seed_table()[1]
LLAMA7B = next(r for r in ROWS if r.model == "facebook/llama-7b")
BAICHUAN13B = next(r for r in ROWS if r.model == "baichuan-inc/Baichuan2-13B-Base")


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.model)
def test_each_seed_row_within_10_percent(row):
    e = predict(row)
    assert abs(e.memory_mb_per_card / row.memory_mb - 1) < 0.10, (e.memory_mb_per_card, row.memory_mb)
    assert abs(e.tokens_per_card_per_sec / row.tokens_per_card_per_sec - 1) < 0.10
    assert e.fits  # every row ran on an 80 GB card


def test_the_two_fitted_constants_are_the_seed_tables_minimax_fit():
    """The planner's only fitted numbers (bench/plan_vs_seed.py refits them, in sample and leave-one-out): the GPU
    runtime term and the A100's matmul efficiency, each the minimax relative-error fit over the 11 rows."""
    from llmpt.planner.estimate import RUNTIME_MB_GPU
    from llmpt.planner.seed import fit_matmul_efficiency, fit_runtime_mb

    layouts = [row_layout(r) for r in ROWS]
    counted = [estimate(lay, A100).memory_mb_per_card - RUNTIME_MB_GPU for lay in layouts]
    runtime = fit_runtime_mb(counted, [r.memory_mb for r in ROWS])
    efficiency = fit_matmul_efficiency(layouts, [r.tokens_per_card_per_sec for r in ROWS], A100)
    assert abs(runtime - RUNTIME_MB_GPU) < 50 and abs(efficiency - A100.expected_hfu) < 0.0005
    for name in ("A100-40G", "A800-80G"):  # the same chip carries the same fitted value
        assert resolve_device(name).expected_hfu == A100.expected_hfu


def test_seed_table_is_the_seed():
    meta, rows = seed_table()
    assert (meta["machine"], meta["gpus"], meta["seq_len"], len(rows)) == ("A100-80G", 8, 4096, 11)
    assert sum(r.tokens_per_card_per_sec for r in rows) == pytest.approx(31386.01, abs=0.001)
    assert sum(r.memory_mb for r in rows) == 663483
    text = _seed_md()
    if text is None:
        return  # the sums above were taken from ../shared/SEED.md §4
    seed = [ln.split("|")[1:6] for ln in text.splitlines() if ln.startswith("| ") and "| 4096 |" in ln]
    assert [(m.strip(), st.strip(), float(t), float(mem)) for m, _, st, t, mem in seed] == [
        (r.model, r.strategy, r.tokens_per_card_per_sec, r.memory_mb) for r in rows
    ]


def variant(row, degrees=None, **changes):
    """The row's layout (its precision, kernels and batch) with other degrees / stage / recompute."""
    lay = row_layout(row)
    deg = replace(lay.degrees, **(degrees or {}))
    return replace(lay, degrees=deg, strategy=renamed(lay.strategy, deg, **changes))


def test_longer_sequences_cost_linear_activations_and_attention_flops():
    base, long = predict(LLAMA7B), predict(LLAMA7B, seq_len=8192)
    # flash attention keeps no s x s scores: activations and logits grow with the token count alone
    assert long.memory_mb["activations"] / base.memory_mb["activations"] == pytest.approx(2.0, rel=0.01)
    assert long.memory_mb["logits_and_loss"] / base.memory_mb["logits_and_loss"] == pytest.approx(2.0, rel=0.01)
    assert long.memory_mb["weights"] == base.memory_mb["weights"]
    # 12*L*s*h attention FLOPs per token double; 6N stays: 46.1 -> 52.5 GFLOPs, ~12% slower per token
    assert long.model_flops_per_token / base.model_flops_per_token == pytest.approx(1.14, abs=0.01)
    assert 0.85 < long.tokens_per_card_per_sec / base.tokens_per_card_per_sec < 0.92


def test_micro_batch_scales_activations_not_state():
    base, big = predict(LLAMA7B), predict(LLAMA7B, micro_batch=4, accumulation=4)
    assert big.memory_mb["activations"] / base.memory_mb["activations"] == pytest.approx(2.0, rel=0.01)
    for k in ("weights", "gradients", "master_weights", "optimizer_moments"):
        assert big.memory_mb[k] == base.memory_mb[k]
    assert 1.0 <= big.tokens_per_card_per_sec / base.tokens_per_card_per_sec < 1.03  # fuller matmuls, a little
    small = predict(LLAMA7B, micro_batch=1, accumulation=16)
    assert small.memory_mb_per_card < base.memory_mb_per_card - 11000  # half of ~23 GB of activations


def test_sharding_stages_divide_what_they_say():
    s1, s2, s3 = (estimate(variant(BAICHUAN13B, stage=k), A100) for k in (1, 2, 3))
    n = s1.params_per_card
    assert s1.memory_mb["gradients"] * 2**20 == pytest.approx(2 * n)  # bf16 gradients, full on stage 1
    assert s2.memory_mb["gradients"] == pytest.approx(s1.memory_mb["gradients"] / 8)
    for k in ("master_weights", "optimizer_moments"):  # stage 1 already shards the optimizer state
        assert (
            s1.memory_mb[k]
            == s2.memory_mb[k]
            == s3.memory_mb[k]
            == pytest.approx(n * (4 if "master" in k else 8) / 8 / 2**20)
        )
    g = param_groups(row_layout(BAICHUAN13B).spec, 4096, from_scratch=False)
    layer = (g.layer_matmul + g.layer_other) * 2 / 2**20  # bf16 MB of one decoder layer
    assert s3.memory_mb["weights"] == pytest.approx(s2.memory_mb["weights"] / 8 + 2 * layer, rel=1e-6)
    assert s1.memory_mb_per_card > s2.memory_mb_per_card > s3.memory_mb_per_card
    # stage 3 gathers weights every micro batch: slower, by a few percent on NVLink
    assert 0.85 < s3.tokens_per_card_per_sec / s2.tokens_per_card_per_sec < 1.0


def test_recompute_trades_activations_for_a_forward():
    off = row_layout(LLAMA7B)
    full = replace(
        off,
        strategy=off.strategy.model_copy(
            update={"recompute": off.strategy.recompute.model_copy(update={"granularity": "full"})}
        ),
    )
    a, b = estimate(off, A100), estimate(full, A100)
    assert b.memory_mb["activations"] < 0.15 * a.memory_mb["activations"]
    model, hardware = flops_per_token(full)
    assert model == a.model_flops_per_token and hardware / model == pytest.approx(4 / 3, rel=0.01)
    assert 0.72 < b.tokens_per_card_per_sec / a.tokens_per_card_per_sec < 0.78
    assert b.mfu < a.mfu and b.hfu == pytest.approx(a.hfu, rel=0.03)


def test_flash_attention_removes_the_score_matrices():
    lay = row_layout(LLAMA7B)
    no_fa = replace(
        lay,
        strategy=lay.strategy.model_copy(
            update={"kernels": lay.strategy.kernels.model_copy(update={"flash_attention": False})}
        ),
    )
    a, b = estimate(lay, A100), estimate(no_fa, A100)
    # softmax output [mbs, heads/tp, s, s] in bf16 per layer: 2*16*4096*4096*2 bytes * 32 layers = 32 GiB more
    assert (b.memory_mb["activations"] - a.memory_mb["activations"]) == pytest.approx(32 * 1024, rel=0.01)


def test_tensor_parallel_and_sequence_parallel_divide_what_they_say():
    tp2 = estimate(row_layout(LLAMA7B), A100)
    tp4 = estimate(variant(LLAMA7B, {"tp": 4, "sharding": 2}, tp=4, sharding=2), A100)
    assert tp4.memory_mb["weights"] / tp2.memory_mb["weights"] == pytest.approx(0.5, rel=0.01)
    sp = estimate(variant(LLAMA7B, {"tp": 4, "sharding": 2}, tp=4, sharding=2, sequence_parallel=True), A100)
    # sequence parallel splits the h-wide tensors tp leaves whole (norm and matmul inputs): 8h of 4h + 11008*8/4
    per_token_layer = (
        8 * 4096 / 4 + 3 * 4096 * 2 / 4 + 4096 * 2 / 4 + 8 * 11008 / 4,
        8 * 4096 + 3 * 4096 * 2 / 4 + 4096 * 2 / 4 + 8 * 11008 / 4,
    )
    assert sp.memory_mb["activations"] / tp4.memory_mb["activations"] == pytest.approx(
        per_token_layer[0] / per_token_layer[1], rel=0.01
    )


def test_pipeline_first_stage_holds_pp_micro_batches():
    row = next(r for r in ROWS if r.model == "facebook/llama-13b")  # 40 layers, 1 x 16 micro batches
    flat = estimate(variant(row), A100)
    pp4 = estimate(variant(row, {"pp": 4, "sharding": 1}, pp=4, sharding=1, stage=1), A100)
    assert pp4.params_per_card < 0.3 * pp4.params_total
    # the first of 4 stages keeps 10 layers for each of the 4 micro batches in flight: the same as all 40 layers once
    assert pp4.memory_mb["activations"] == pytest.approx(flat.memory_mb["activations"], rel=0.01)
    pp2 = estimate(variant(row, {"pp": 2, "sharding": 2}, pp=2, sharding=2), A100)
    assert pp2.memory_mb["activations"] == pytest.approx(flat.memory_mb["activations"], rel=0.01)
    # the 1F1B bubble: (pp-1)/accumulation of the forward-backward (matmuls and memory-bound kernels) on top, plus
    # the p2p of 16 micro batches x 2 directions x [1, 4096, 5120] bf16 over NVLink at 3/4 of 300 GB/s
    parts = pp4.step_time_parts
    p2p = 16 * 2 * 4096 * 5120 * 2 / (300e9 * 0.75)
    assert parts["pipeline_bubble"] - p2p == pytest.approx(3 / 16 * (parts["matmul"] + parts["memory_bound"]), rel=0.01)


def test_first_knob_finds_the_seeds_own_choice_for_13b():
    # the tp2sd4_stage2 preset (micro batch 2) runs a 13B model out of memory; PaddleNLP's 13B file used 1 x 16
    lay = row_layout(next(r for r in ROWS if r.model == "facebook/llama-13b"), micro_batch=2, accumulation=8)
    e = plan_estimate(lay, A100)
    assert e.fits is False and e.memory_mb_per_card > 78848
    assert e.knob["change"] == "micro batch 1 x accumulation 16"
    assert e.knob["strategy"] == "tp2sd4_stage2"
    assert e.knob["set"] == ["strategy.batch.micro_batch_size=1", "strategy.batch.grad_accum=16"]
    assert e.knob["memory_mb_per_card"] < 78848


def test_first_knob_on_a_smaller_card_and_none_when_nothing_fits():
    e = plan_estimate(row_layout(LLAMA7B), resolve_device("A100-40G"))
    assert e.knob["change"] == "recompute full" and e.knob["strategy"] == "tp2sd4_stage2_rc"
    e = plan_estimate(row_layout(BAICHUAN13B), resolve_device("RTX-4090"))
    assert e.fits is False and e.knob is None


def test_cpu_estimate_is_memory_only_against_ram():
    p = resolve_plan(RunRequest(model="llama-tiny", strategy="dp2", gpus="2", device="cpu", seq_len=128))
    e = p.estimate
    assert e.device is None and e.tokens_per_card_per_sec is None and e.mfu is None
    assert e.memory_mb["master_weights"] == 0  # fp32 on CPU: no master copy
    assert e.memory_mb["weights"] * 2**20 == e.params_per_card * 4 == 332352 * 4
    assert e.memory_mb["optimizer_moments"] == 2 * e.memory_mb["weights"]
    assert e.fits is True


@pytest.mark.parametrize(
    "line, name",
    [
        ("NVIDIA A100-SXM4-80GB, 81920", "A100-80G"),
        ("NVIDIA A100-SXM4-40GB, 40960", "A100-40G"),
        ("NVIDIA H100 80GB HBM3, 81559", "H100-80G"),
        ("NVIDIA GeForce RTX 4090, 24564", "RTX-4090"),
        ("NVIDIA A10, 23028", "A10"),
        ("Tesla V100-SXM2-32GB, 32768", "V100-32G"),
        ("NVIDIA T4, 15360", None),
    ],
)
def test_nvidia_smi_names_map_to_the_table(line, name):
    d = match_gpu_name(line)
    assert (d.name if d else None) == name


def test_plan_json_has_the_estimate(cli):
    r = cli(
        "plan",
        "qwen-7b",
        "--strategy",
        "tp2sd4_stage2",
        "--gpus",
        "8",
        "--seq-len",
        "4096",
        "--device-type",
        "A100-80G",
        "--json",
    )
    assert r.exit_code == 0, r.output
    est = json.loads(r.stdout)["estimate"]
    assert est["device"] == "A100-80G" and est["fits"] is True
    assert 55000 < est["memory_mb_per_card"] < 70000 and 3000 < est["tokens_per_card_per_sec"] < 4000
    assert 0.45 < est["mfu"] < 0.6
    assert set(est["memory_mb"]) == {
        "weights",
        "gradients",
        "master_weights",
        "optimizer_moments",
        "activations",
        "logits_and_loss",
        "rotary_tables",
        "comm_buffers",
        "runtime",
    }


def test_plan_table_says_fits_or_the_knob(cli):
    r = cli("plan", "llama-7b", "--strategy", "tp2sd4_stage2", "--device-type", "a100-40g")
    assert r.exit_code == 0, r.output
    assert "per-card estimate (A100-40G)" in r.stdout
    assert "does not fit: first knob: recompute full -> --strategy tp2sd4_stage2_rc" in " ".join(r.stdout.split())
    r = cli("plan", "llama-7b", "--strategy", "tp2sd4_stage2")
    assert "note: estimate for A100-80G (no --device-type given and no GPU detected here)" in r.stdout
    assert "fits" in r.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--device-type", "B300"], "--device-type B300: unknown device; known: A100-80G"),
        (["--device-type", "a100", "--device", "cpu"], "--device-type a100 with --device cpu"),
        (["--set", "train.learning_rate=1"], "--set train.…: llmpt plan takes strategy.* overrides only"),
        (["--set", "strategy.batch.micro_batch_size=0"], "micro_batch_size"),
    ],
)
def test_plan_refuses_bad_planner_input(cli, args, message):
    r = cli("plan", "llama-7b", "--strategy", "tp2sd4_stage2", *args)
    assert r.exit_code == 2
    assert message in r.stderr and "Traceback" not in r.output


def test_train_refuses_a_run_that_does_not_fit_unless_forced(cli, tmp_path):
    args = [
        "train",
        "llama-13b",
        "--strategy",
        "tp2sd4_stage2",
        "--device",
        "gpu",
        "--device-type",
        "A100-80G",
        "--data",
        "x",
        "-o",
        str(tmp_path / "run"),
        "--dry-run",
    ]
    r = cli(*args)
    assert r.exit_code == 2, r.output
    err = " ".join(r.stderr.split())
    # 83054 MB of tensors + 160 MB of rotary tables (40 layers x cos, sin of 4096 x 128 fp32); 80 GB less the CUDA
    # context and the allocator's 3.1% of the card (estimate.usable_mb)
    assert "facebook/llama-13b with tp2sd4_stage2 does not fit: predicted 83214 MB per card > 78848 MB usable" in err
    assert "first knob: micro batch 1 x accumulation 16" in err and "--force" in err
    assert not (tmp_path / "run").exists()
    r = cli(*args, "--force")  # past the memory check, on to the next one
    assert r.exit_code == 2 and "--data x: x.idx is missing" in r.stderr


@pytest.mark.parametrize("optimizer, per_param", [("adamw", 8), ("adamw_mini", 4), ("sgd", 0)])
def test_optimizer_state_follows_train_optimizer(optimizer, per_param):
    """AdamW keeps two fp32 moments per parameter, AdamW Mini one (its second moment is one value per tensor:
    measured on a llama-tiny dp1 CPU run, 1853852 bytes held = 4 x 463424 parameters + 39 tensors x 4), llmpt's
    SGD none; sharding stage 1 divides them."""
    p = resolve_plan(RunRequest(model="llama-tiny", strategy="sd2_stage1", gpus="2", device="cpu", seq_len=128))
    lay = Layout(p.model, p.strategy, p.expansion.degrees, 128, 2, optimizer=optimizer)
    e = plan_estimate(lay, None)
    assert e.memory_mb["optimizer_moments"] * 2**20 == pytest.approx(e.params_per_card * per_param / 2)


def test_offload_takes_the_optimizer_state_off_the_card_and_costs_its_host_update():
    """Offload (stage 2): no master weights or moments on the card; the step pays the shard's gradients down and
    weights up over PCIe and the host's AdamW pass over it (stated assumptions, no seed row offloads)."""
    from dataclasses import replace

    from llmpt.planner.estimate import OFFLOAD_HOST_BYTES, OFFLOAD_HOST_GBS, OFFLOAD_PCIE_GBS, renamed

    lay = row_layout(LLAMA7B, strategy="sd8_stage2")
    off = replace(lay, strategy=renamed(lay.strategy, lay.degrees, offload=True))
    a100 = resolve_device("A100-80G")
    e, o = estimate(lay, a100), estimate(off, a100)
    assert o.memory_mb["master_weights"] == o.memory_mb["optimizer_moments"] == 0 < e.memory_mb["optimizer_moments"]
    shard = e.params_per_card / 8
    grad = 4 if lay.strategy.precision.master_grad else 2
    expected = shard * (grad + 2) / (OFFLOAD_PCIE_GBS * 1e9) + shard * OFFLOAD_HOST_BYTES / (OFFLOAD_HOST_GBS * 1e9)
    assert o.step_time_parts["offload"] == pytest.approx(expected, rel=1e-9) and e.step_time_parts["offload"] == 0
    # the card no longer runs the update: per parameter of its shard, AdamW's moments and master weight read and
    # written (16 + 8), the bf16 gradient read and the bf16 weight written (2 + 2) leave HBM
    saved = shard * (16 + 8 + 2 + 2) / (2039e9 * 0.8)
    assert e.step_time_parts["memory_bound"] - o.step_time_parts["memory_bound"] == pytest.approx(saved, rel=1e-9)
    assert o.tokens_per_card_per_sec < e.tokens_per_card_per_sec
    assert any("offload" in n and "not calibrated" in n for n in o.notes)


def test_rotary_tables_are_counted_per_layer_at_the_models_positions():
    """PaddleNLP's llama, qwen2 and mistral attention layers each build a cos and a sin table of
    max_position_embeddings x head_dim (checked in tests/integration/test_new_families.py): Llama-3.1's 131072
    positions cost 4 GiB on the 8B's card whatever the sequence length; Llama-2's 4096, 128 MiB."""
    from llmpt.models.registry import resolve_model
    from llmpt.strategies.presets import resolve_strategy

    def tables(model: str, strategy: str = "tp2sd4_stage2") -> float:
        s = resolve_strategy(strategy)
        lay = Layout(resolve_model(model), s, s.parallel.dims.smallest(strategy), 4096, 8)
        return estimate(lay, resolve_device("A100-80G")).memory_mb["rotary_tables"]

    assert tables("llama3.1-8b") == 32 * 2 * 131072 * 128 * 4 / 2**20 == 4096
    assert tables("llama2-7b") == 128 and tables("llama3-8b") == 256
    assert tables("mistral-7b") == 32 * 2 * 32768 * 128 * 2 / 2**20  # cast to bf16, the compute dtype
    assert tables("llama3.1-405b", "tp8pp2") == 63 * 2 * 131072 * 128 * 4 / 2**20  # the stage's 63 layers
    assert tables("baichuan-13b") == 0 and tables("qwen-7b") == 0  # ALiBi; qwen v1 grows one cache on demand


# ---- the physical terms the seed table cannot pin down, one by one ----


def _on(model: str, strategy: str, gpus: int = 8, seq_len: int = 4096, **batch) -> Layout:
    from llmpt.models.registry import resolve_model
    from llmpt.strategies.presets import resolve_strategy

    s = resolve_strategy(strategy)
    if batch:
        s = s.model_copy(update={"batch": s.batch.model_copy(update=batch)})
    return Layout(resolve_model(model), s, s.parallel.dims.smallest(strategy), seq_len, gpus)


def test_a100_40g_and_80g_differ_only_in_capacity_and_hbm_bandwidth():
    """Same chip, same peak and NVLink: the layout's memory is identical, the usable memory is the card's less a
    relative allocator share and a fixed context, and only the memory-bound kernels run slower on 1555 GB/s HBM2
    than on 2039 GB/s HBM2e (the datasheets)."""
    from llmpt.planner.estimate import ALLOCATOR_SHARE, CUDA_CONTEXT_MB, usable_mb

    lay = row_layout(LLAMA7B)
    big, small = estimate(lay, A100), estimate(lay, resolve_device("A100-40G"))
    assert big.memory_mb == small.memory_mb
    assert big.capacity_mb == 81920 - 3072 == usable_mb(A100)
    assert small.capacity_mb == pytest.approx(40960 * (1 - ALLOCATOR_SHARE) - CUDA_CONTEXT_MB) == 39168
    assert usable_mb(resolve_device("RTX-4090")) == pytest.approx(24564 * (1 - 2560 / 81920) - 512)
    for part in ("matmul", "pipeline_bubble", "tensor_parallel_comm", "data_parallel_comm", "offload"):
        assert small.step_time_parts[part] == big.step_time_parts[part]
    ratio = small.step_time_parts["memory_bound"] / big.step_time_parts["memory_bound"]
    assert ratio == pytest.approx(2039 / 1555, rel=1e-12)
    assert small.tokens_per_card_per_sec < big.tokens_per_card_per_sec


def test_fp16_costs_the_loss_scaler_pass_and_no_memory():
    """fp16 and bf16 keep the same tensors (2-byte weights and activations, fp32 master weights and moments); fp16's
    GradScaler adds check_finite_and_unscale, a read and a write of every gradient of the card's optimizer shard."""
    from llmpt.planner.estimate import HBM_EFFICIENCY

    bf16 = row_layout(LLAMA7B)
    fp16 = replace(bf16, strategy=bf16.strategy.model_copy(
        update={"precision": bf16.strategy.precision.model_copy(update={"dtype": "fp16"})}))  # fmt: skip
    a, b = estimate(bf16, A100), estimate(fp16, A100)
    assert a.memory_mb == b.memory_mb
    shard = a.params_per_card / 4  # sharding stage 2 over 4 ranks
    scaler = shard * 2 * 2 / (2039e9 * HBM_EFFICIENCY)  # bf16 gradients (no master_grad): 2 bytes read, 2 written
    assert b.step_time_s - a.step_time_s == pytest.approx(scaler, rel=1e-9)


def test_recompute_granularities_order_memory_and_time():
    """Without flash attention (so core_attn saves the s x s scores): each coarser granularity keeps less and
    repeats more. Full repeats every layer's forward (the LM head excepted): +1/3 of the layers' FLOPs."""
    lay = row_layout(LLAMA7B)
    lay = replace(lay, strategy=lay.strategy.model_copy(
        update={"kernels": lay.strategy.kernels.model_copy(update={"flash_attention": False})}))  # fmt: skip
    est = {g: estimate(replace(lay, strategy=renamed(lay.strategy, lay.degrees, granularity=g)), A100)
           for g in ("off", "core_attn", "full_attn", "full")}  # fmt: skip
    acts = [est[g].memory_mb["activations"] for g in est]
    hw = [est[g].hardware_flops_per_token for g in est]
    speed = [est[g].tokens_per_card_per_sec for g in est]
    assert acts == sorted(acts, reverse=True) and len(set(acts)) == 4
    assert hw == sorted(hw) and len(set(hw)) == 4
    assert speed == sorted(speed, reverse=True)
    model = est["off"].model_flops_per_token
    head = 3 * 2 * 32000 * 4096
    assert est["full"].hardware_flops_per_token - model == pytest.approx((model - head) / 3, rel=1e-12)
    # core_attn drops the softmax output (bf16, [2, 16, 4096, 4096] per layer: 1 GiB x 32 layers) and repeats QK^T, AV
    assert acts[0] - acts[1] == pytest.approx(32 * 1024, rel=1e-9)
    assert hw[1] - hw[0] == pytest.approx(4 * 4096 * 4096 * 32, rel=1e-12)


def test_pipeline_first_stage_holds_the_micro_batches_last_the_logits_and_head():
    """1F1B on pp4 (llama2-13b, 40 layers): the first stage keeps 4 micro batches of its 10 layers' activations and the
    embedding; the last keeps one micro batch but the LM head and the logits with the cross-entropy's fp32 buffers."""
    from llmpt.planner.estimate import logits_bytes, stage_memory

    lay = _on("llama2-13b", "tp2pp4", micro_batch_size=1, grad_accum=16)
    (first, first_n), (last, last_n) = stage_memory(lay)
    assert first["activations"] == pytest.approx(4 * last["activations"], rel=1e-12)
    assert first["logits_and_loss"] == 0 and last["logits_and_loss"] == logits_bytes(lay) > 0
    g = param_groups(lay.spec, 4096)
    assert first_n - last_n == g.embed // 2 - g.head // 2 - g.final  # embedding vs head (+ final norm) on tp2
    # both stages receive one activation and one gradient of [1, 4096, 5120] bf16 from their neighbours
    assert first["comm_buffers"] == last["comm_buffers"] == 2 * 4096 * 5120 * 2
    e = estimate(lay, A100)
    assert e.memory_mb_per_card == pytest.approx(max(sum(first.values()), sum(last.values())) / 2**20 + e.memory_mb[
        "runtime"])  # fmt: skip


def test_gpt_block_is_korthikanti_34sbh_and_llama_block_its_own():
    """Per layer and token, bytes kept for backward. GPT-3 (LayerNorm, 4h GELU MLP, dropout, no flash attention):
    Korthikanti et al. 2022 eq. 1, sbh(34 + 5as/h), plus the norms' fp32 mean and rstd. LLaMA (RMSNorm, SwiGLU,
    flash attention, no dropout): two norm inputs and the q/k/v/out/MLP inputs, q, k, v, the gate, up and
    their product and SiLU output (4f), flash's fp32 log-sum-exp per head, the norms' fp32 rstd."""
    from llmpt.planner.estimate import layer_activation_bytes

    gpt = _on("gpt3-6.7b", "dp8", seq_len=2048, micro_batch_size=1)
    gpt = replace(gpt, dropout=0.1, strategy=gpt.strategy.model_copy(
        update={"kernels": gpt.strategy.kernels.model_copy(update={"flash_attention": False})}))  # fmt: skip
    h, a, s = 4096, 32, 2048
    kept, _ = layer_activation_bytes(gpt, 1)
    assert kept == 34 * h + 5 * a * s + 2 * 8
    llama = _on("llama2-7b", "dp8", micro_batch_size=1)
    kept, _ = layer_activation_bytes(llama, 1)
    f = 11008
    assert kept == (2 * h + h + 3 * h + h + h + 4 * f) * 2 + 32 * 4 + 2 * 4


def test_vocabulary_sets_the_logits_memory_and_the_head_flops():
    """The last stage's logits: [tokens, vocab/tp] in bf16 + its fp32 copy, the saved fp32 softmax and the fp32
    gradient (14 bytes a logit); the LM head's 2 x vocab x hidden FLOPs per token forward, 3x with backward."""
    from llmpt.planner.estimate import logits_bytes

    small = row_layout(LLAMA7B)  # vocab 32000
    big = replace(small, spec=small.spec.model_copy(update={"vocab_size": 128000}))
    tokens = 2 * 4096
    assert logits_bytes(big) - logits_bytes(small) == tokens * (128000 - 32000) / 2 * 14
    a, b = estimate(small, A100), estimate(big, A100)
    assert b.model_flops_per_token - a.model_flops_per_token == 3 * 2 * (128000 - 32000) * 4096  # a lookup has none
    assert b.step_time_parts["memory_bound"] > a.step_time_parts["memory_bound"]


def test_data_parallel_beside_tensor_parallel_copies_the_gradients_at_the_step_end():
    """Paddle's hybrid optimizer all-reduces dp gradients through fused_allreduce_gradients, which concatenates all of
    them into buckets alive at once: a second copy of the gradients once the activations are freed. Counted only
    where it exceeds them; sharding and pure data parallel add none."""
    tp_dp = _on("llama2-7b", "dp4tp2", micro_batch_size=1, grad_accum=8)
    e = estimate(tp_dp, A100)
    assert tp_dp.strategy.precision.master_grad  # the preset keeps fp32 gradients
    grads = e.params_per_card * 4
    kept = (e.memory_mb["activations"] + e.memory_mb["logits_and_loss"]) * 2**20
    assert e.memory_mb["comm_buffers"] * 2**20 == pytest.approx(grads - kept)
    assert grads > kept  # one micro batch of 4096 tokens keeps less than the 13.5 GB of fp32 gradients
    assert estimate(row_layout(LLAMA7B), A100).memory_mb["comm_buffers"] == 0


# ---- mixture of experts (issue 19 point 4) ----


def test_moe_counts_total_and_active_parameters_and_computes_on_the_active():
    """Mixtral-8x7B: 46,702,792,704 parameters (its checkpoint's model.safetensors.index.json total_size / 2), of
    which a token runs through its 2 of 8 experts per layer; the model FLOPs are 2 per active matmul weight (the
    router's included; the embedding lookup and the norms have none) forward, x3 with backward, plus attention."""
    lay = _on("mixtral-8x7b", "sd8_stage2", micro_batch_size=1, grad_accum=8)
    g = param_groups(lay.spec, 4096)
    h, L, v = 4096, 32, 32000
    per_expert = 3 * h * 14336
    assert g.total == 46_702_792_704  # from scratch the same: 32000 is already a multiple of the vocabulary padding
    assert g.total - g.active == L * 6 * per_expert
    e = estimate(lay, A100)
    assert (e.params_total, e.params_active) == (g.total, g.active)
    matmul = 2 * (g.active - v * h - L * 2 * h - h)
    attention = 4 * 4096 * 4096 * L
    assert e.model_flops_per_token == 3 * (matmul + attention)


def test_moe_experts_are_split_by_tp_in_mixtral_but_whole_on_every_tp_rank_in_deepseek():
    """PaddleNLP 3.0.0b4: MixtralMLP builds its experts from Column/RowParallelLinear under tp; DeepseekV2MLP with
    is_moe=True builds plain Linear, so tp divides DeepSeek's attention, shared expert and head but not its routed
    experts (and their FLOPs run whole on every tp rank)."""
    from llmpt.planner.estimate import tp_replicated_flops_per_token

    for model, split in (("mixtral-8x7b", True), ("deepseek-v2-lite", False)):
        one, two = (estimate(_on(model, s, micro_batch_size=1, grad_accum=8), A100) for s in ("dp8", "tp2"))
        g = param_groups(_on(model, "dp8").spec, 4096)
        routed = g.moe_layers * g.experts
        tp_divided = (
            g.embed + g.head + g.layers * g.layer_matmul + g.dense_layers * g.dense_ffn + g.moe_layers * g.moe_matmul
        )
        assert one.params_per_card == g.total
        assert one.params_per_card - two.params_per_card == (tp_divided + (routed if split else 0)) / 2
        lay2 = _on(model, "tp2", micro_batch_size=1, grad_accum=8)
        rep = tp_replicated_flops_per_token(lay2)
        assert (rep > 0) is not split
        tokens = 8 * 4096
        expected = tokens * ((two.hardware_flops_per_token - rep) / 2 + rep) / (312e12 * A100.expected_hfu)
        assert two.step_time_parts["matmul"] == pytest.approx(expected, rel=1e-12)


def test_deepseek_dispatch_einsums_grow_with_the_micro_batch_and_mla_attends_over_its_widths():
    """DeepSeek-V2-Lite (27 layers, the first dense; 64 experts, top-6; hidden 2048; 16 heads of 128 + 64 rotary
    query/key dims and 128 value dims). PaddleNLP's MoELayer dispatches and combines through two einsums over a
    dense [tokens, experts, capacity] mask: 2 x (tokens x top-k) x hidden FLOPs per token each, forward, so
    per-token work grows with the micro batch (hardware FLOPs, not the model's); MLA's QK^T runs over 192-wide
    heads, AV over 128-wide values."""
    from llmpt.planner.estimate import gshard_flops_per_token
    from llmpt.planner.shapes import forward_flops_per_token

    one = _on("deepseek-v2-lite", "sd8_stage2", micro_batch_size=1, grad_accum=8)
    one = replace(one, strategy=renamed(one.strategy, one.degrees, granularity="off"))
    two = replace(one, strategy=one.strategy.model_copy(
        update={"batch": one.strategy.batch.model_copy(update={"micro_batch_size": 2, "grad_accum": 4})}))  # fmt: skip
    assert gshard_flops_per_token(one) == 26 * 2 * 2 * 4096 * 6 * 2048
    assert gshard_flops_per_token(two) == 2 * gshard_flops_per_token(one)
    model, hw = flops_per_token(one)
    assert hw - model == 3 * gshard_flops_per_token(one)
    assert flops_per_token(two)[0] == model
    _, attention = forward_flops_per_token(one.spec, 4096)
    assert attention == 2 * 4096 * (16 * 192 + 16 * 128) * 27
    # the dispatch mask and combine weights, bf16, kept per MoE layer: 2 x tokens x (tokens x top-k) x 2 bytes
    a1, a2 = (estimate(x, A100).memory_mb["activations"] for x in (one, two))
    assert a2 > 2 * a1


def test_expert_parallel_divides_the_experts_and_pays_the_all_to_all():
    """DeepSeek-V2-Lite on dp8 vs dp8ep8 (MoELayer splits each layer's 64 experts over the 8 data-parallel ranks):
    7/8 of the routed experts leave each card, their gradients leave the dp all-reduce, and each of the 26 MoE
    layers pays an all-to-all of its tokens' top-6 copies, dispatch and combine, forward and backward:
    4 x tokens x 6 x hidden x 2 bytes x 7/8 over NVLink at 3/4 of 300 GB/s, per micro batch."""
    dp, ep = (_on("deepseek-v2-lite", s, micro_batch_size=1, grad_accum=4) for s in ("dp8", "dp8ep8"))
    assert (dp.degrees.ep, ep.degrees.ep) == (1, 8)
    g = param_groups(ep.spec, 4096)
    a, b = estimate(dp, A100), estimate(ep, A100)
    assert a.params_per_card - b.params_per_card == g.moe_layers * g.experts * 7 // 8
    assert a.step_time_parts["expert_parallel_comm"] == 0
    all_to_all = 4 * 4 * 4096 * 6 * 2048 * 2 * 7 / 8 * 26 / (300e9 * 0.75)
    assert b.step_time_parts["expert_parallel_comm"] == pytest.approx(all_to_all, rel=1e-12)
    grad = 4 if ep.strategy.precision.master_grad else 2
    shared = (b.params_per_card - g.moe_layers * g.experts // 8) * grad
    assert b.step_time_parts["data_parallel_comm"] == pytest.approx(2 * 7 / 8 * shared / (300e9 * 0.75), rel=1e-12)
    assert b.memory_mb_per_card < a.memory_mb_per_card
