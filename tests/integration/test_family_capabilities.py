"""Every claim of llmpt/models/families.yaml against the installed PaddleNLP: each probe's source text (the
modeling's code, comments stripped), the pipeline classes that exist or not, and — for the recompute claims — what a
tiny model really recomputes in a forward pass on CPU. One process, no launches."""

from __future__ import annotations

import importlib
import inspect
import io
import textwrap
import tokenize

import pytest

from llmpt.models.matrix import CAPABILITY_KEYS, load_families
from llmpt.models.registry import paddlenlp_config, resolve_model

pytest.importorskip("paddlenlp.transformers")

pytestmark = pytest.mark.paddle


def _resolve(ref: str):
    """`llama.modeling:LlamaAttention.__init__` (or a module) under paddlenlp.transformers; AttributeError /
    ImportError when it does not exist."""
    module, _, qualname = ref.partition(":")
    obj = importlib.import_module(f"paddlenlp.transformers.{module}")
    for part in qualname.split(".") if qualname else ():
        obj = getattr(obj, part)
    return obj.fget if isinstance(obj, property) else obj


def _code(ref: str) -> str:
    """The object's source without comments: a switch named only in a comment ("TODO: fuse_attention_ffn") is
    not read."""
    lines = textwrap.dedent(inspect.getsource(_resolve(ref))).splitlines()
    for tok in tokenize.generate_tokens(io.StringIO("\n".join(lines)).readline):
        if tok.type == tokenize.COMMENT:  # a comment runs to the end of its line
            row, col = tok.start
            lines[row - 1] = lines[row - 1][:col]
    return "\n".join(lines)


def _normalised(text: str) -> str:
    return " ".join(text.split())


def _claims():
    fam = load_families()
    out = []
    for family, claims in fam.families.items():
        for cap, claim in claims.items():
            out.append((family, None, cap, claim, False))
            if claim.pipeline is not None:
                out.append((family, None, cap, claim.pipeline, True))
        for variant, vclaims in fam.variants.get(family, {}).items():
            for cap, claim in vclaims.items():
                out.append((family, variant, cap, claim, False))
    return out


CLAIMS = _claims()


def _id(c) -> str:
    family, variant, cap, _, pipe = c
    return f"{family}{'+' + variant if variant else ''}-{cap}{'-pp' if pipe else ''}"


def test_every_family_has_a_claim_for_every_capability():
    fam = load_families()
    from typing import get_args

    from llmpt.models.registry import Family

    assert set(fam.families) == set(get_args(Family))
    for family, claims in fam.families.items():
        assert set(claims) == set(CAPABILITY_KEYS), family


@pytest.mark.parametrize("claim", CLAIMS, ids=[_id(c) for c in CLAIMS])
def test_claim_matches_the_modeling_source(claim):
    family, _variant, cap, c, _pipe = claim
    modules = load_families().modules[family]
    assert c.probe, f"{family}.{cap}: a claim needs a probe"
    if c.status in ("supported", "always"):
        assert any(p.get("has") for p in c.probe), f"{family}.{cap}: a '{c.status}' claim must show where"
    for p in c.probe:
        for ref in p.get("missing", ()):
            with pytest.raises((ImportError, AttributeError)):
                _resolve(ref)
        refs = [p["in"]] if "in" in p else modules
        if not (p.get("has") or p.get("lacks")):
            continue
        code = _normalised("\n".join(_code(r) for r in refs))
        for text in p.get("has", ()):
            assert _normalised(text) in code, f"{family}.{cap}: {text!r} not in {refs}"
        for text in p.get("lacks", ()):
            assert _normalised(text) not in code, f"{family}.{cap}: {text!r} found in {refs}"


# --- recompute, by behaviour: what a tiny model hands to `recompute` in one training step, and whether it finishes

TINY = {
    "llama": "llama-tiny",
    "qwen": "qwen-tiny",
    "gpt": "gpt-tiny",
    "opt": "opt-tiny",
    "bloom": "bloom-tiny",
    "chatglm2": "chatglm2-tiny",
    "qwen2": "qwen2-tiny",
    "mistral": "mistral-tiny",
    "mixtral": "mixtral-tiny",
    "qwen2_moe": "qwen2-moe-tiny",
    "deepseek_v2": "deepseek-v2-tiny",
}
GRANULARITIES = ("full", "full_attn", "core_attn")


def _step(family: str, granularity: str, reentrant: bool, monkeypatch) -> tuple[list[str], str | None]:
    """(what `recompute` was called on, the error of forward + backward or None) for one step of the family's
    tiny model with recompute on (pp = 1, no cache: with use_cache chatglm2's failure is a segfault, see below)."""
    import numpy as np
    import paddle
    from paddlenlp.transformers import AutoModelForCausalLM

    from llmpt.train import checkpoint_fixes
    from llmpt.train.model_config import config_class

    checkpoint_fixes.install()  # as the rank does: the MoE modeling needs its Paddle 3.3.1 fixes
    spec = resolve_model(TINY[family])
    cfg = paddlenlp_config(spec, seq_len=16)
    config = config_class(cfg["model_type"])(**{k: v for k, v in cfg.items() if k != "model_type"})
    config.seq_length = 16
    config.use_cache = False
    config.recompute = True
    config.recompute_granularity = granularity
    config.recompute_use_reentrant = reentrant
    config.use_flash_attention = False
    paddle.seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.train()
    calls: list[str] = []
    module = importlib.import_module(type(model).__module__)
    with monkeypatch.context() as mp:
        for name in ("recompute", "rr_recompute"):
            real = getattr(module, name, None)
            if real is None:
                continue

            def spy(fn, *args, _real=real, **kwargs):
                target = getattr(fn, "__self__", None) or fn
                calls.append(getattr(target, "__qualname__", None) or type(target).__name__)
                return _real(fn, *args, **kwargs)

            mp.setattr(module, name, spy)
        model.recompute_enable()
        ids = paddle.to_tensor(np.random.RandomState(0).randint(0, spec.vocab_size, (1, 17)), dtype="int64")
        try:
            out = model(input_ids=ids[:, :-1], labels=ids[:, 1:])
            (out[0] if isinstance(out, tuple) else out.loss).backward()
        except Exception as e:  # noqa: BLE001 - the failure is the finding
            return calls, f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
    return calls, None


@pytest.mark.parametrize("family", sorted(TINY))
def test_recompute_claims_match_what_a_tiny_model_does(family, monkeypatch):
    """Where a granularity is claimed (and what it requires is set) a step finishes, recomputes something, and
    something other than "full" does; elsewhere the step fails, recomputes nothing, or recomputes exactly what
    "full" does (the modeling ignores the granularity)."""
    claims = load_families().families[family]
    for reentrant in (False, True):
        runs = {g: _step(family, g, reentrant, monkeypatch) for g in GRANULARITIES}
        for g, (calls, error) in runs.items():
            claim = claims[f"recompute_{g}"]
            runs_ok = claim.serves and not [
                p for p, want in claim.requires if p == "recompute.use_reentrant" and want != reentrant
            ]
            where = (family, g, f"use_reentrant={reentrant}", calls[:2], error)
            if runs_ok:
                assert error is None and calls, where
                assert g == "full" or calls != runs["full"][0], where
            else:
                assert error is not None or not calls or calls == runs["full"][0], where


def test_gpt_full_granularity_recomputes_nothing_without_pipeline(monkeypatch):
    assert _step("gpt", "full", False, monkeypatch) == ([], None)


def test_gpt_full_attn_needs_the_reentrant_outer_recompute(monkeypatch):
    calls, error = _step("gpt", "full_attn", False, monkeypatch)
    assert error is not None and "saved_tensors_hooks" in error
    assert _step("gpt", "full_attn", True, monkeypatch)[1] is None


def test_bloom_recomputes_whole_blocks_whatever_the_granularity(monkeypatch):
    runs = {g: _step("bloom", g, False, monkeypatch) for g in GRANULARITIES}
    assert runs["full"][0] and runs["full"] == runs["full_attn"] == runs["core_attn"]


def test_chatglm2_attention_block_recompute_crashes_the_step_with_its_cache():
    """As a run builds it (use_cache on), chatglm2's full_attn recompute takes the process down in backward."""
    import subprocess
    import sys

    code = (
        "import numpy as np, paddle\n"
        "from paddlenlp.transformers import AutoModelForCausalLM\n"
        "from llmpt.models.registry import paddlenlp_config, resolve_model\n"
        "from llmpt.train.model_config import config_class\n"
        "spec = resolve_model('chatglm2-tiny'); cfg = paddlenlp_config(spec, seq_len=16)\n"
        "config = config_class(cfg['model_type'])(**{k: v for k, v in cfg.items() if k != 'model_type'})\n"
        "config.seq_length = 16; config.recompute = True; config.recompute_granularity = 'full_attn'\n"
        "model = AutoModelForCausalLM.from_config(config); model.train(); model.recompute_enable()\n"
        "ids = paddle.to_tensor(np.random.RandomState(0).randint(0, spec.vocab_size, (1, 17)), dtype='int64')\n"
        "out = model(input_ids=ids[:, :-1], labels=ids[:, 1:]); (out[0] if isinstance(out, tuple) else out.loss).backward()\n"
        "print('finished')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "finished" not in r.stdout
