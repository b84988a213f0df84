"""Every change llmpt makes to PaddleNLP's code, as one table (FIXES), on every device: its checkpoint code, and the
mixture-of-experts modeling that the pinned Paddle (3.3.1) no longer runs as written.

llmpt saves unified checkpoints (one set of whole, un-split tensors however the run was laid out) so that `--resume`
can continue on another layout; PaddleNLP merges the tensor-parallel shards on save and re-splits them on load by each
family's split rules (`_get_tensor_parallel_mappings`). PaddleNLP 3.0.0b4 gets these wrong, on any device: a run
of one rank resuming a checkpoint that several ranks wrote reads only the first file, the gpt, bloom and chatglm
rules leave out the LM head, which is the word embedding itself (tied), split like it, and glm's reorders its
query_key_value with numpy, which neither the save nor a lazy safetensors load can take. Paddle 3.3.1 changed two
functions under PaddleNLP's MoE code (paddle.where of a condition alone, paddle.cumsum of integers); each call that
relied on the old answer gets it back in that module only. And the qwen2_moe and deepseek_v2 routers start
all equal (weights of constant 1.0 that no _init_weights reaches), so every token of a model trained from scratch
goes to the same experts; they get the initialisation their own modeling code names. Each Fix names one target,
what stands in for it and why; install() applies them in the rank before the Trainer is built.

Mechanisms (Fix.mechanism), each the narrowest that reaches every caller:
  * "global": a module-level name inside one PaddleNLP module only (that module's global) becomes a function that
    receives PaddleNLP's original first; nothing else sees a change. Fix.uses pins how often the module's source
    calls the name (each call was read and is right to answer so).
  * "classmethod": a classmethod of one class, replaced on that class (its subclasses inherit it); the replacement
    receives the original function, then the class.
  * "method": a plain method of one class, replaced on that class (its subclasses inherit it); the replacement
    receives the original function, then the instance.
  * "proxy": `module:paddle.where` -- a Paddle function one PaddleNLP module calls through its global `paddle`,
    answered differently in that module only: the global becomes a proxy (llmpt.train.targets.ModuleProxy) that
    answers that one attribute and forwards everything else. Fix.uses pins how often the module's source calls it.
Fix.expects_signature pins the original's parameters: install() checks every fix and refuses, naming it, when
PaddleNLP moved (tests/unit/test_checkpoint_fixes.py runs the same check).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from llmpt.train.targets import ModuleProxy, signature_problems
from llmpt.versions import PADDLENLP


class CheckpointFixError(RuntimeError):
    pass


@dataclass(frozen=True)
class Fix:
    """One name in one PaddleNLP module and what stands in for it."""

    target: str  # "module:global_name", "module:Class.method" or (proxy) "module:global_module.function"
    mechanism: Literal["global", "classmethod", "method", "proxy"]
    expects_signature: tuple[str, ...]  # the original's parameter names
    why: str
    replacement: Callable[..., Any]  # called as replacement(original, *args, **kwargs)
    uses: int | None = None  # "global"/"proxy": how often the module's source calls global_name( / module.function(

    @property
    def name(self) -> str:
        module, attr = self.target.split(":")
        return f"{module.rsplit('.', 1)[-1]}.{attr}"


def shards_of(checkpoint_file: str) -> list[str]:
    """Every file of the sharded safetensors set `checkpoint_file` belongs to, by the index next to it that lists it
    (model.safetensors.index.json, optimizer.safetensors.index.json, master_weights.safetensors.index.json); just
    the file when no index lists it."""
    path = Path(checkpoint_file)
    for index in sorted(path.parent.glob("*.index.json")):
        try:
            files = set(json.loads(index.read_text()).get("weight_map", {}).values())
        except (OSError, ValueError, AttributeError):
            continue
        if path.name in files:
            return [str(path.parent / f) for f in sorted(files)]
    return [str(path)]


def _load_every_shard(original, checkpoint_file, *args, **kwargs):
    """load_state_dict of the whole sharded set `checkpoint_file` opens (keys are disjoint across the files)."""
    state: dict[str, Any] = {}
    for shard in shards_of(str(checkpoint_file)):
        state.update(original(shard, *args, **kwargs))
    return state


def _with_tied_head(head: str, embedding: str = "word_embeddings.weight"):
    """A _get_tensor_parallel_mappings replacement that adds `head` (the LM head, which is the word embedding's own
    tensor) with the word embedding's split rule."""

    def mappings(original, cls, config, is_split=True):
        actions = original(cls, config, is_split=is_split)
        if embedding in actions:
            actions[head] = actions[embedding]
        return actions

    return mappings


def _glm_qkv_rules(original, cls, config, is_split=True):
    """GLM's rules, each action taking what PaddleNLP hands it: a split gets a lazy safetensors slice read whole
    first (the old-qkv reordering runs np.split on it, which a slice does not support), and a merge of Tensors gives
    a Tensor (the unified-checkpoint save sizes each merged weight with Tensor.numel())."""
    import numpy as np

    actions = original(cls, config, is_split=is_split)

    def split(action):
        def run(x):
            import paddle

            lazy = x is not None and not isinstance(x, (np.ndarray, paddle.Tensor, list, tuple))
            return action(x[:] if lazy else x)  # x[:]: how PaddleNLP reads a slice it does not split

        return run

    def merge(action):
        def run(x):
            import paddle

            out = action(x)
            tensors = [t for t in (x if isinstance(x, (list, tuple)) else [x]) if isinstance(t, paddle.Tensor)]
            if not tensors or not isinstance(out, np.ndarray):
                return out
            # numpy holds bfloat16 as uint16, which to_tensor reads back as bfloat16; the cast is a no-op then
            return paddle.to_tensor(out).astype(tensors[0].dtype)

        return run

    wrap = split if is_split else merge
    return {key: wrap(action) for key, action in actions.items()}


def _where_as_columns(original, condition, x=None, y=None, name=None, *, out=None):
    """paddle.where(condition) alone as Paddle answered it before 3.x: one [N, 1] index column per dimension
    (nonzero(as_tuple=True) took outs[:, i:i+1]); Paddle 3.3.1 gives [N] each. Three arguments: Paddle's own."""
    if x is None and y is None and out is None:
        return tuple(index.unsqueeze(-1) for index in original(condition))
    return original(condition, x, y, name=name, out=out)


def _cumsum_keeping_dtype(original, x, axis=None, dtype=None, name=None, *, out=None):
    """paddle.cumsum without a dtype keeps the input's (as before Paddle 3.x); 3.3.1 promotes int32 to int64."""
    return original(x, axis=axis, dtype=x.dtype if dtype is None else dtype, name=name, out=out)


def _cast_of_a_mask_is_constant(original, x, dtype):
    """paddle.cast of a bool tensor as a constant (stop_gradient), as Paddle 2.x made every bool tensor; Paddle
    3.3.1 keeps the graph through the bool and passes gradient back through the cast."""
    import paddle

    out = original(x, dtype)
    return out.detach() if x.dtype == paddle.bool else out


def _router_init(gate_class: str, how: str):
    """An _init_weights replacement that runs PaddleNLP's, then initialises the router weight of `gate_class`
    (a class in the same module): `how` "normal" = N(0, initializer_range), as the family's _init_weights treats
    every other Linear; "kaiming" = kaiming_uniform_(a=sqrt(5)) over fan_in = hidden, as Hugging Face's
    MoEGate.reset_parameters (deepseek_v2's disabled _init_weights has the line without the layout)."""

    def init(original, self, layer):
        import math
        import sys

        import paddle

        original(self, layer)
        if not isinstance(layer, getattr(sys.modules[original.__module__], gate_class)):  # the modeling module
            return
        with paddle.no_grad():
            if how == "normal":
                std = self.config.initializer_range
                layer.weight.set_value(paddle.normal(0.0, std, layer.weight.shape).astype(layer.weight.dtype))
            else:
                from paddlenlp.utils.initializer import kaiming_uniform_

                # reverse: Paddle's [hidden, experts] layout, so fan_in is hidden as in Hugging Face's [experts,
                # hidden] (the dead code's default takes fan_in = experts: bound 0.5 instead of 1/sqrt(hidden))
                kaiming_uniform_(layer.weight, a=math.sqrt(5), reverse=True)

    return init


_UC = "paddlenlp.trainer.unified_checkpoint"
_MAPPINGS_SIGNATURE = ("cls", "config", "is_split")

FIXES: tuple[Fix, ...] = (
    Fix(
        f"{_UC}.load_save_single_card:load_state_dict",
        "global",
        ("checkpoint_file", "tensor_parallel_split_mapping", "fliter_dict_keys", "device", "ckpt_quant_stage"),
        "load_single_card_checkpoint and load_single_card_optimizer (the unified-checkpoint load of a one-rank run)"
        " read only resolved_archive_file[0], the first of the files the index lists: resuming a pp2 checkpoint"
        " (model-00001-of-00002 + -00002-of-00002) on dp1 silently kept the second stage's layers at their initial"
        " weights (losses 4.5e-2 off). Its three calls (weights, optimizer moments, master weights) each get the"
        " first file; they now read every file that index lists.",
        _load_every_shard,
        uses=3,
    ),
    Fix(
        "paddlenlp.transformers.bloom.modeling:BloomPreTrainedModel._get_tensor_parallel_mappings",
        "classmethod",
        _MAPPINGS_SIGNATURE,
        "BloomForCausalLM's lm_head.decoder_weight is the word embedding's tensor (tied), vocabulary-split under tp,"
        " but the rules split only word_embeddings.weight: a tp2 unified checkpoint stored rank 0's half of the head"
        " (and of its AdamW moments) as if whole, so resuming it on dp1 failed and on tp2 itself silently went wrong"
        " (losses 1e-2 off at the first step). The head now takes the embedding's rule.",
        _with_tied_head("lm_head.decoder_weight"),
    ),
    Fix(
        "paddlenlp.transformers.gpt.modeling:GPTPretrainedModel._get_tensor_parallel_mappings",
        "classmethod",
        _MAPPINGS_SIGNATURE,
        "GPTForCausalLM's lm_head.weight is the word embedding's tensor (tied), vocabulary-split under tp, but the"
        " rules split only word_embeddings.weight: --init-from a whole checkpoint on tp2 failed (lm_head.weight"
        " [2048, 64] into [1024, 64]) and a tp2 unified checkpoint stored rank 0's half as if whole. The head now"
        " takes the embedding's rule.",
        _with_tied_head("lm_head.weight"),
    ),
    Fix(
        "paddlenlp.transformers.chatglm.modeling:ChatGLMPretrainedModel._get_tensor_parallel_mappings",
        "classmethod",
        _MAPPINGS_SIGNATURE,
        "ChatGLMForCausalLM's lm_head.decoder_weight is the word embedding's tensor (tied), vocabulary-split under"
        " tp, but the rules split only transformer.word_embeddings.weight: a tp2 unified checkpoint stored rank 0's"
        " half of the head's AdamW moments ([1024, 64] of [2048, 64]) as if whole, and the tp2 run resumed from it"
        " went wrong (losses 4.6e-3 off after the reload, llmpt rehearse chatglm-6b --strategy tp2). The head now"
        " takes the embedding's rule.",
        _with_tied_head("lm_head.decoder_weight", "transformer.word_embeddings.weight"),
    ),
    Fix(
        "paddlenlp.transformers.glm.modeling:GLMPretrainedModel._get_tensor_parallel_mappings",
        "classmethod",
        _MAPPINGS_SIGNATURE,
        "GLM's query_key_value rule (is_old_qkv) reorders the heads with numpy: merging the tp shards it hands back"
        " an ndarray where the unified-checkpoint save expects a Tensor (every glm tp2 save failed: 'numpy.ndarray'"
        " object has no attribute 'numel', unified_checkpoint_into_shards), and splitting a safetensors checkpoint it"
        " gets a lazy slice np.split cannot cut (every glm tp2 resume or --init-from of safetensors failed: AxisError"
        " in naive_merged_qkv_to_tensor_parallel_qkv). Merges give Tensors, splits read the slice whole first.",
        _glm_qkv_rules,
    ),
    Fix(
        "paddlenlp.transformers.mixtral.modeling:paddle.where",
        "proxy",
        ("condition", "x", "y", "name", "out"),
        "MixtralSparseMoeBlock.forward takes `idx, top_x = paddle.where(expert_mask[expert_id])` as [N, 1] columns"
        " (Paddle 2.x); Paddle 3.3.1 returns [N] each, so routing_weights[top_x, idx] is [N] and every mixtral"
        " forward failed: 'Broadcast dimension mismatch ... X = [27, 64] and Y = [27]' (tiny mixtral, one CPU"
        " process). Its one-argument call gets the [N, 1] columns back; its two three-argument calls are Paddle's.",
        _where_as_columns,
        uses=3,
    ),
    Fix(
        "paddlenlp.transformers.moe_gate:paddle.cumsum",
        "proxy",
        ("x", "axis", "dtype", "name", "out"),
        "PretrainedMoEGate._priority (qwen2_moe's and deepseek_v2's top-k gating) computes"
        " paddle.cumsum(expert_mask, axis=0) * expert_mask on an int32 mask; Paddle 3.3.1's cumsum returns int64"
        " for int32 input and every qwen2_moe forward failed: 'Type promotion only support calculations between"
        " floating-point numbers ... x: int64, y: int32' (tiny qwen2_moe, one CPU process). Without a dtype the"
        " sum keeps the input's, as the gate was written for (its other calls subtract a Python 1: unchanged).",
        _cumsum_keeping_dtype,
        uses=5,
    ),
    Fix(
        "paddlenlp.transformers.moe_layer:paddle.cast",
        "proxy",
        ("x", "dtype"),
        "MoELayer.forward dispatches tokens with paddle.cast(dispatch_mask, dtype), dispatch_mask being the gate's"
        " combine_weights.cast(bool): a constant selection in Paddle 2.x, but Paddle 3.3.1 keeps the graph through"
        " the bool cast (stop_gradient False; backward passes gradient through), so every router received the"
        " dispatch path's gradient too: measured on one qwen2_moe block, the router's gradient was 1.149 where the"
        " routing written out gives 0.0356, grew with the batch (2.285 at twice the tokens, 4.556 at four times)"
        " and every selected expert's score got +1 per unit of upstream gradient. The float mask of a bool is now a"
        " constant; the routing weights keep their gradient through combine_weights.",
        _cast_of_a_mask_is_constant,
        uses=1,
    ),
    Fix(
        "paddlenlp.transformers.qwen2_moe.modeling:Qwen2MoePretrainedModel._init_weights",
        "method",
        ("self", "layer"),
        "Qwen2MoeGate creates its router weight with Constant(1.0) and _init_weights initialises only Linear,"
        " Embedding and the parallel layers, so a model built from scratch scores every expert alike for every"
        " token: top-k's tie-break sent every token of qwen2-moe-tiny to experts 2 and 3 (experts 0 and 1 got zero"
        " gradient), the router's gradient norm was 49.7 against the experts' 0.007, and runs on different layouts"
        " went apart as float noise broke the ties differently. The router gets N(0, initializer_range), as"
        " _init_weights gives every Linear (Hugging Face's Qwen2-MoE router is such a Linear).",
        _router_init("Qwen2MoeGate", "normal"),
    ),
    Fix(
        "paddlenlp.transformers.deepseek_v2.modeling:DeepseekV2PretrainedModel._init_weights",
        "method",
        ("self", "layer"),
        "DeepseekV2PretrainedModel._init_weights returns at its first line (the rest, which initialises MoEGate with"
        " kaiming_uniform_, is dead code), and MoEGate creates its router weight with Constant(1.0): from scratch"
        " every token's experts are a tie (deepseek-v2-tiny: all four experts' scores equal at step 0). The router"
        " gets kaiming_uniform_(a=sqrt(5)) over fan_in = hidden (Hugging Face's MoEGate.reset_parameters); the"
        " other weights keep Paddle's default initialisation, as PaddleNLP leaves them.",
        _router_init("MoEGate", "kaiming"),
    ),
)

_INSTALLED = False


def _resolve(fix: Fix):
    """(owner: module, class or proxied module global, attribute name, PaddleNLP's original function). LookupError
    naming what is gone."""
    module_name, path = fix.target.split(":")
    try:
        owner = importlib.import_module(module_name)
    except ImportError as e:
        raise LookupError(f"module {module_name} is gone ({e})") from None
    *classes, attr = path.split(".")
    if fix.mechanism == "proxy":
        (head,) = classes
        proxied = owner.__dict__.get(head)
        if not isinstance(proxied, types.ModuleType):
            raise LookupError(f"{module_name} has no module global {head}")
        obj = getattr(proxied, attr, None)
        if not callable(obj):
            raise LookupError(f"{module_name}'s {head}.{attr} is gone")
        return proxied, attr, getattr(obj, "__llmpt_original__", obj)
    for name in classes:
        if not isinstance(getattr(owner, name, None), type):
            raise LookupError(f"{module_name}.{name} is gone")
        owner = getattr(owner, name)
    obj = owner.__dict__.get(attr)
    if obj is None:
        raise LookupError(f"{module_name}.{path} is gone")
    if fix.mechanism == "classmethod":
        if not isinstance(obj, classmethod):
            raise LookupError(f"{module_name}.{path} is not a classmethod")
        obj = obj.__func__
    elif fix.mechanism == "method" and not inspect.isfunction(obj):
        raise LookupError(f"{module_name}.{path} is not a plain method")
    return owner, attr, getattr(obj, "__llmpt_original__", obj)


def check_fix(fix: Fix) -> list[str]:
    """What no longer holds about this fix's target in the installed PaddleNLP; empty when the fix still fits."""
    try:
        owner, attr, original = _resolve(fix)
    except LookupError as e:
        return [str(e)]
    problems = signature_problems(original, fix.expects_signature, "fix")
    if fix.mechanism == "proxy":
        module_name, path = fix.target.split(":")
        source = inspect.getsource(importlib.import_module(module_name))
        calls = source.count(f"{path}(")
        if calls != fix.uses:
            problems.append(f"{module_name} calls {path}() {calls} times; the fix was read for {fix.uses}")
    elif fix.uses is not None:
        source = inspect.getsource(owner)
        calls = source.count(f"{attr}(") - source.count(f"_{attr}(") - source.count(f"def {attr}(")
        if calls != fix.uses:
            problems.append(f"{owner.__name__} calls {attr}() {calls} times; the fix was read for {fix.uses}")
    return problems


def install() -> None:
    """Apply every fix (idempotent). Raises CheckpointFixError on another PaddleNLP release or a moved target."""
    global _INSTALLED
    import paddlenlp

    if _INSTALLED:
        return
    if paddlenlp.__version__ != PADDLENLP:
        raise CheckpointFixError(
            f"checkpoint_fixes was written against paddlenlp=={PADDLENLP}; found {paddlenlp.__version__}. "
            "Its checkpoint code may differ; refusing to patch."
        )
    problems = [f"{f.name}: {msg}" for f in FIXES for msg in check_fix(f)]
    if problems:
        raise CheckpointFixError("checkpoint_fixes: PaddleNLP no longer matches these fixes: " + "; ".join(problems))
    for fix in FIXES:
        owner, attr, original = _resolve(fix)

        @functools.wraps(original)
        def fixed(*args, _fix=fix, _original=original, **kwargs):
            return _fix.replacement(_original, *args, **kwargs)

        fixed.__llmpt_original__ = original
        if fix.mechanism == "proxy":
            module_name, path = fix.target.split(":")
            module = importlib.import_module(module_name)
            head = path.split(".")[0]
            proxy = owner if isinstance(owner, ModuleProxy) else ModuleProxy(owner)
            object.__getattribute__(proxy, "_over")[attr] = fixed
            module.__dict__[head] = proxy  # that module's global only: nothing else sees a change
        else:
            setattr(owner, attr, classmethod(fixed) if fix.mechanism == "classmethod" else fixed)
    _INSTALLED = True
