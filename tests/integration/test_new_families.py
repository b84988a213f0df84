"""Llama-3, Qwen2 and Mistral for real on CPU ranks (paddle.distributed.launch, PaddleNLP's Trainer, gloo).

Qwen2 and Mistral are families of their own (PaddleNLP's qwen2 and mistral modeling): each tiny model trains dp2, and
one hybrid layout its modeling serves (qwen2: tensor parallel with sequence parallel; mistral, which has neither
pipeline nor sequence parallel: tensor parallel) equals the dp2 run step by step — both from one saved
initialisation, the same data in the same order, the same global batch of 8 sequences, fp32, dropout off. Llama-3.1
runs PaddleNLP's llama modeling (proven cell by cell in test_cpu_equivalence.py); its tiny model trains dp2 with
GQA, rope_theta 500000 and its llama3 rope scaling, which must reach the model a rank builds.

The mixture-of-experts families the same way. Mixtral keeps every expert on every rank: dp2 against tp2. Qwen2-MoE
and DeepSeek-V2 split each layer's experts over the data-parallel ranks (PaddleNLP's MoELayer), so their dp2 is
dp2ep2: each rank holds half the experts, tokens go to them by all-to-all (llmpt/train/cpu_backend.py on gloo), and
the run equals one process (dp1) step by step, and tp2, which keeps every expert on every rank.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.conftest import losses

pytest.importorskip("paddlenlp")
pytestmark = [pytest.mark.paddle, pytest.mark.slow]

STEPS = 6
COMMON = ("--set", "train.report_to=none", "--set", "train.warmup_steps=2", "--set", "train.learning_rate=3e-3")
DP2 = ("dp2", 4, 1)  # strategy, micro batch, accumulation: 4 x 1 x dp2 = 8 sequences a step
# the data-parallel run of each model: dp2, or dp2ep2 where the MoE layer splits the experts over dp
DATA = {"qwen2-moe-tiny": ("dp2ep2", 4, 1), "deepseek-v2-tiny": ("dp2ep2", 4, 1)}
# 4 x 2 x dp1 = 8. deepseek-v2-tiny at 8 x 1: its load-balancing loss reaches the gradient through
# AddAuxiliaryLoss, whose backward adds the whole aux gradient at every micro batch whatever the accumulation (the
# Trainer scales only the language-model loss by 1/accumulation), so only layouts with the same accumulation agree
# (its aux loss is a mean over sequences: two ranks' 4 equal one micro batch's 8).
HYBRID = {
    "qwen2-tiny": ("tp2_sp", 4, 2),
    "mistral-tiny": ("tp2", 4, 2),
    "mixtral-tiny": ("tp2", 4, 2),
    "qwen2-moe-tiny": ("tp2", 4, 2),
    "deepseek-v2-tiny": ("tp2", 8, 1),
}


def _train(llmpt, out: Path, model: str, layout: tuple[str, int, int], *args) -> dict:
    strategy, micro, accum = layout
    return llmpt.json(
        "train", model, "--strategy", strategy, "--device", "cpu", "--max-steps", STEPS, "--json", "-o", out,
        "--set", f"strategy.batch.micro_batch_size={micro}", "--set", f"strategy.batch.grad_accum={accum}",
        *COMMON, *args, timeout=900,
    )  # fmt: skip


@pytest.fixture(scope="module")
def runs(llmpt, tmp_path_factory):
    """model -> {strategy: summary} of its dp2 and hybrid runs from one saved initialisation, run on first use."""
    done: dict[str, dict[str, dict]] = {}

    def get(model: str) -> dict[str, dict]:
        if model not in done:
            root = tmp_path_factory.mktemp(model)
            init = root / "init"
            # in this process (paddle is imported here anyway): a subprocess would import it again for each family
            from llmpt.train.init_weights import save_initial_weights

            save_initial_weights(model, init, vocab_size=2048)
            done[model] = {
                layout[0]: _train(llmpt, root / layout[0], model, layout, "--init-from", init)
                for layout in (DATA.get(model, DP2), HYBRID[model])
            }
        return done[model]

    return get


@pytest.mark.parametrize("model", list(HYBRID))
def test_new_family_trains_dp2_and_a_hybrid_layout_equals_it(runs, model):
    by = runs(model)
    dp2, hybrid = losses(by[DATA.get(model, DP2)[0]]), losses(by[HYBRID[model][0]])
    assert len(dp2) == STEPS and dp2[-1] < dp2[0] - 0.05, dp2  # it learns
    worst = max(abs(a - b) / abs(a) for a, b in zip(dp2, hybrid, strict=True))
    print(f"{model}: dp2 {dp2[0]:.4f} -> {dp2[-1]:.4f}; {HYBRID[model][0]} max relative difference {worst:.1e}")
    assert len(hybrid) == STEPS and worst <= 1e-4, (dp2, hybrid)


@pytest.fixture(scope="module")
def llama31_dp2(llmpt, tmp_path_factory) -> Path:
    """llama3-tiny (Llama-3.1's shape rules: GQA, rope_theta 500000, llama3 scaling from 64 original positions)
    trained from scratch on dp2 at 128 tokens, past its scaling's original positions."""
    out = tmp_path_factory.mktemp("llama3") / "dp2"
    summary = _train(llmpt, out, "llama3-tiny", DP2, "--seq-len", "128")
    ls = losses(summary)
    assert len(ls) == STEPS and ls[-1] < ls[0] - 0.05, ls
    return out


def test_llama31_trains_dp2_with_its_rope_scaling_in_the_model_the_ranks_build(llama31_dp2):
    import numpy as np
    import paddle
    from paddlenlp.transformers import AutoModelForCausalLM

    from llmpt.run_config import load_run_yaml
    from llmpt.train.model_config import build_config

    cfg = load_run_yaml(llama31_dp2 / "run.yaml")
    assert cfg.model.config["rope_scaling"]["rope_type"] == "llama3" and cfg.model.config["rope_theta"] == 500000.0
    saved = json.loads((llama31_dp2 / "config.json").read_text())  # what the ranks built and saved
    assert saved["rope_scaling"] == cfg.model.config["rope_scaling"] and saved["num_key_value_heads"] == 2

    def logits(scaled: bool):
        config = build_config(cfg)  # as the rank entry point builds it
        if not scaled:
            config.rope_scaling = None
        config.seq_length = 128
        paddle.seed(0)
        model = AutoModelForCausalLM.from_config(config)
        model.eval()
        ids = paddle.to_tensor(np.random.RandomState(0).randint(1, 1000, (1, 128)), dtype="int64")
        with paddle.no_grad():
            out = model(input_ids=ids)
        attention = model.llama.layers[0].self_attn
        return type(attention.rotary_emb).__name__, (out[0] if isinstance(out, tuple) else out.logits).numpy()

    (kind, a), (plain, b) = logits(True), logits(False)
    assert (kind, plain) == ("Llama3RotaryEmbedding", "LlamaRotaryEmbedding")
    assert float(np.abs(a - b).max()) > 1e-4  # the scaling changes the model, not only its config


@pytest.mark.parametrize("model", ["llama3-tiny", "qwen2-tiny", "mistral-tiny"])
def test_each_attention_layer_holds_the_rotary_tables_the_planner_counts(model):
    """llmpt/planner/shapes.py rotary_table_bytes: one cos and one sin table per layer, max_position_embeddings
    rows of head_dim, built whatever the sequence length (one process, no launch)."""
    import numpy as np
    from paddlenlp.transformers import AutoModelForCausalLM

    from llmpt.models.registry import paddlenlp_config, resolve_model
    from llmpt.planner.shapes import rotary_table_bytes
    from llmpt.train.model_config import config_class

    spec = resolve_model(model)
    d = paddlenlp_config(spec, 64)
    config = config_class(d["model_type"])(**{k: v for k, v in d.items() if k != "model_type"})
    config.seq_length = 64
    base = getattr(AutoModelForCausalLM.from_config(config), d["model_type"])
    tables = [
        t
        for layer in base.layers
        for t in (layer.self_attn.rotary_emb.cos_cached, layer.self_attn.rotary_emb.sin_cached)
    ]
    assert len({id(t) for t in tables}) == 2 * spec.num_hidden_layers  # every layer its own
    held = sum(int(np.prod(t.shape)) * 4 for t in tables)  # float32 here (fp32 default dtype)
    assert held == spec.num_hidden_layers * rotary_table_bytes(spec, 64, True, 4)
    assert tables[0].shape[-1] == spec.head_dim and d["max_position_embeddings"] in tables[0].shape
