"""Build llmpt's shipped tokenizer (llmpt/assets/tokenizer) from the shipped corpus, reproducibly.

A LLaMA-style sentencepiece BPE model (byte fallback, split digits) trained single-threaded on the KJV corpus,
saved through PaddleNLP's LlamaTokenizer so that `AutoTokenizer.from_pretrained(dir)` loads it offline.
Run: .venv/bin/python scripts/build_tokenizer.py [--out DIR]   (a test rebuilds it and compares bytes)
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "llmpt" / "assets" / "corpus" / "kjv.jsonl.gz"
DEFAULT_OUT = ROOT / "llmpt" / "assets" / "tokenizer"
VOCAB_SIZE = 2000  # small on purpose: the tiny CPU models spend most parameters on the embedding otherwise


def build(out_dir: Path) -> Path:
    import sentencepiece as spm
    from paddlenlp.transformers import LlamaTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        text_path = Path(tmp) / "corpus.txt"
        with gzip.open(CORPUS, "rt", encoding="utf-8") as f, text_path.open("w", encoding="utf-8") as out:
            for line in f:
                out.write(json.loads(line)["text"] + "\n")
        prefix = Path(tmp) / "sp"
        spm.SentencePieceTrainer.train(
            input=str(text_path),
            model_prefix=str(prefix),
            model_type="bpe",
            vocab_size=VOCAB_SIZE,
            character_coverage=1.0,
            byte_fallback=True,
            split_digits=True,
            unk_id=0,
            bos_id=1,
            eos_id=2,
            pad_id=-1,
            # determinism: one thread, the whole corpus in file order
            num_threads=1,
            input_sentence_size=0,
            shuffle_input_sentence=False,
            max_sentence_length=65536,
            minloglevel=2,
        )
        model_path = Path(str(prefix) + ".model")
        _strip_build_paths(model_path)
        tok = LlamaTokenizer(vocab_file=str(model_path))
        tmp_out = Path(tmp) / "tokenizer"
        tok.save_pretrained(str(tmp_out))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        shutil.copytree(tmp_out, out_dir)
    return out_dir


def _strip_build_paths(model_path: Path) -> None:
    # the trainer spec stored in the model records the temporary input path and prefix; fix them so that
    # two builds in different folders give the same bytes
    from sentencepiece import sentencepiece_model_pb2 as pb

    proto = pb.ModelProto()
    proto.ParseFromString(model_path.read_bytes())
    del proto.trainer_spec.input[:]
    proto.trainer_spec.input.append("kjv.txt")
    proto.trainer_spec.model_prefix = "sentencepiece.bpe"
    model_path.write_bytes(proto.SerializeToString())


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    print(build(ap.parse_args().out))
