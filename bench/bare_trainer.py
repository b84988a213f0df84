"""A bare PaddleNLP Trainer pretraining script (the baseline of bench/train_overhead.py).

Reads the same run.yaml llmpt writes, but uses only PaddleNLP: its config class, AutoModelForCausalLM, its
causal pretraining dataset, its Trainer with its default scheduler arguments. Writes step-end timestamps
to <out>/bare_steps.jsonl from rank 0. Launched through paddle.distributed.launch like llmpt's ranks.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import paddle
import yaml
from paddlenlp.data.causal_dataset import build_train_valid_test_datasets
from paddlenlp.trainer import PdArgumentParser, Trainer, TrainerCallback, TrainingArguments, set_seed
from paddlenlp.transformers import AutoModelForCausalLM, LlamaConfig


class Steps(TrainerCallback):
    def __init__(self, path: Path) -> None:
        self.path = path

    def on_train_begin(self, args, state, control, **kwargs):
        if paddle.distributed.get_rank() == 0:
            self.path.write_text(json.dumps({"event": "begin", "step": 0, "t": time.time()}) + "\n")

    def on_step_end(self, args, state, control, **kwargs):
        if paddle.distributed.get_rank() == 0:
            with self.path.open("a") as f:
                f.write(json.dumps({"event": "step", "step": state.global_step, "t": time.time()}) + "\n")


def collate(samples):
    tokens = paddle.to_tensor([s["text"] for s in samples], dtype="int64")
    return {"input_ids": tokens[:, :-1], "labels": tokens[:, 1:]}


def main(run_yaml: str, out_dir: str) -> None:
    run = yaml.safe_load(Path(run_yaml).read_text())
    keep = {f.name for f in TrainingArguments.__dataclass_fields__.values()}
    targs = {k: v for k, v in run["training_args"].items() if k in keep}
    targs.update(output_dir=out_dir, save_steps=10**9, save_strategy="no", lr_scheduler_type="cosine")
    (args,) = PdArgumentParser(TrainingArguments).parse_dict(targs)
    paddle.set_device(args.device)
    set_seed(args.seed)
    cfg = {k: v for k, v in run["model"]["config"].items() if k != "model_type"}
    config = LlamaConfig(**cfg)
    config.seq_length = run["data"]["seq_len"]
    model = AutoModelForCausalLM.from_config(config, dtype="float32")
    n = args.per_device_train_batch_size * args.dataset_world_size * args.max_steps * args.gradient_accumulation_steps
    train, _, _ = build_train_valid_test_datasets(
        data_prefix=run["data"]["prefixes"],
        data_impl="mmap",
        splits_string="949,50,1",
        train_val_test_num_samples=[n, 0, 0],
        seq_length=run["data"]["seq_len"],
        seed=args.seed,
        skip_warmup=True,
        data_cache_path=str(Path(out_dir) / "data_cache"),
    )
    Trainer(
        model=model,
        args=args,
        train_dataset=train,
        data_collator=collate,
        callbacks=[Steps(Path(out_dir) / "bare_steps.jsonl")],
    ).train()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
