"""Save a model's initial (untrained) weights as one unsplit save_pretrained() checkpoint.

Every strategy can start from it through `llmpt train --init-from DIR` (PaddleNLP splits it for tp/pp), which
is how the CPU equivalence tests and `llmpt rehearse` start different topologies from identical weights.

    python -m llmpt.train.init_weights MODEL OUT_DIR [--seed N] [--seq-len L] [--vocab-size V]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import paddle

from llmpt.models.registry import paddlenlp_config, resolve_model
from llmpt.train import checkpoint_fixes
from llmpt.train.inputs import model_class
from llmpt.train.model_config import config_class


def save_initial_weights(
    model: str,
    out_dir: Path,
    seed: int = 42,
    seq_len: int = 128,
    vocab_size: int | None = None,
    shape: dict | None = None,
):
    spec = resolve_model(model)
    if shape:
        spec = spec.model_copy(update=shape)  # a reshaped tiny model (llmpt rehearse)
    d = paddlenlp_config(spec, seq_len)
    if vocab_size:
        d["vocab_size"] = vocab_size
    d.pop("model_type")
    paddle.set_device("cpu")
    checkpoint_fixes.install()  # as a rank builds it (the MoE routers' initialisation, llmpt/train/checkpoint_fixes.py)
    paddle.seed(seed)
    config = config_class(paddlenlp_config(spec)["model_type"])(**d)
    config.seq_length = seq_len
    m = model_class(spec.family).from_config(config, dtype="float32")
    m.save_pretrained(str(out_dir))
    return out_dir


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--vocab-size", type=int, default=None)
    ap.add_argument("--shape", type=json.loads, default=None, help="JSON of registry dimension overrides")
    a = ap.parse_args()
    print(save_initial_weights(a.model, a.out_dir, a.seed, a.seq_len, a.vocab_size, a.shape))
