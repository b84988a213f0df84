"""prepare-data's encoding worker without paddle: the cleaning, the added-token split, the streamed index, how
many worker processes a run starts, and the adversarial probe set."""

from __future__ import annotations

import re

import numpy as np
import pytest

from llmpt.data.adversarial import adversarial_documents
from llmpt.data.encode import AddedTokenRule, Encoder, EncoderSpec, _clean
from llmpt.data.inputs import CHUNK_BYTES, InputFile
from llmpt.data.mmap import index_bytes, write_index
from llmpt.data.prepare import effective_workers
from llmpt.data.tokenizer import SHIPPED_TOKENIZER

PADDLENLP_REPEATS = r"(.)\1{100,}"  # create_pretraining_data.py: no re.S, so '.' never matches '\n'


@pytest.mark.parametrize("ch", ["\n", "\r", " ", "a", "é", "🙂"])
@pytest.mark.parametrize("n", [99, 100, 101, 102, 300])
def test_clean_is_paddlenlps_collapse_then_strip(ch, n):
    text = f"start {ch * n} end{ch * n}"
    assert _clean(text) == re.sub(PADDLENLP_REPEATS, r"\1", text).strip()


def test_runs_of_newlines_are_kept():
    assert _clean("a" + "\n" * 300 + "b") == "a" + "\n" * 300 + "b"
    assert _clean("a" + "\r" * 300 + "b") == "a\rb"


def _sp_encoder(rules) -> Encoder:
    pytest.importorskip("sentencepiece")
    spec = EncoderSpec(
        tokenizer_dir=str(SHIPPED_TOKENIZER),
        tokenizer_class="LlamaTokenizer",
        family="sentencepiece",
        backend="sentencepiece",
        eos_id=2,
        append_eos=True,
        text_key="text",
        dtype="uint16",
        model_path=str(SHIPPED_TOKENIZER / "sentencepiece.bpe.model"),
        added_tokens=rules,
    )
    return Encoder(spec)


def test_added_token_split_strips_whitespace_as_each_token_says():
    enc = _sp_encoder((AddedTokenRule("</s>", 2, True, True), AddedTokenRule("<x>", 9, False, False)))
    assert enc._pieces("a  </s>  b") == ["a", 2, "b"]
    assert enc._pieces("a  <x>  b") == ["a  ", 9, "  b"]
    assert enc._pieces("</s></s>  </s>") == [2, 2, 2]  # a stripped-empty piece is dropped
    assert enc._pieces("<x></s>") == [9, 2]


def test_added_token_split_prefers_the_longest_token_at_a_position():
    enc = _sp_encoder((AddedTokenRule("<a>", 5, False, False), AddedTokenRule("<a><b>", 6, False, False)))
    assert enc._pieces("x<a><b>y<a>") == ["x", 6, "y", 5]


def test_encode_keeps_empty_texts_and_pieces_in_place():
    enc = _sp_encoder((AddedTokenRule("</s>", 2, True, True),))
    flat, lengths = enc.encode(["", "hello </s> world", "hello"])
    assert lengths[0] == 0 and lengths.sum() == len(flat)
    second = flat[lengths[0] : lengths[0] + lengths[1]].tolist()
    assert 2 in second and second[: second.index(2)] == flat[lengths[0] + lengths[1] :].tolist()


def test_streamed_index_equals_the_in_memory_one(tmp_path):
    for sizes in ([], [5], [3, 1, 7, 65000] * 997):
        s = np.asarray(sizes, np.int32)
        (tmp_path / "s").write_bytes(s.tobytes())
        for dtype in (np.dtype(np.uint16), np.dtype(np.int32)):
            write_index(tmp_path / "i", tmp_path / "s", dtype, block=13)
            assert (tmp_path / "i").read_bytes() == index_bytes(s, np.arange(len(s) + 1), dtype)


def test_small_inputs_are_encoded_in_process(tmp_path):
    small, big, gz = tmp_path / "s.jsonl", tmp_path / "b.jsonl", tmp_path / "g.jsonl.gz"
    small.write_bytes(b"x" * (CHUNK_BYTES * 2))
    big.write_bytes(b"x" * (CHUNK_BYTES * 10))
    gz.write_bytes(b"x" * CHUNK_BYTES)  # gzip'd: counted as 4 MB of text
    assert effective_workers([InputFile(small, "jsonl")], 4) == 1
    assert effective_workers([InputFile(big, "jsonl")], 4) == 4
    assert effective_workers([InputFile(big, "jsonl")], 64) == 10
    assert effective_workers([InputFile(gz, "jsonl")], 2) == 2


def test_the_probe_set_covers_the_issues_cases():
    docs = adversarial_documents(("<|fim_prefix|>",), large=True)
    joined = "".join(d for d in docs if len(d) < 100_000)
    for needle in (
        "<|endoftext|>",
        "</s>",
        "<|im_start|>",
        "<|fim_prefix|>",
        "\r\n",
        "\t",
        "\u00a0",
        "\u200b",
        "\u0301",
    ):
        assert needle in joined, needle
    assert any(d == "\n" * 101 for d in docs) and any(d == "a" * 100 for d in docs)
    assert "" in docs and " " in docs and max(map(len, docs)) >= 1_000_000
    assert any("中文" in d for d in docs) and any("🙂" in d for d in docs)


def test_sentencepiece_word_by_word_gives_sentencepieces_ids(tmp_path):
    from llmpt.data import encode

    pytest.importorskip("sentencepiece")
    spec = _sp_encoder(()).spec
    words, whole = encode._SentencePieceWords(spec), encode._SentencePiece(spec)
    docs = [_clean(d) for d in adversarial_documents(large=True)] + ["the the the", "  the\u3000the  "]
    for _ in range(2):  # a cold and a warm cache
        a, b = words.encode(docs), whole.encode(docs)
        assert a[0].tolist() == b[0].tolist() and a[1].tolist() == b[1].tolist()
    assert len(words._cache) > 100


def test_sentencepiece_word_by_word_refuses_a_piece_across_words(tmp_path):
    from sentencepiece import sentencepiece_model_pb2 as pb

    from llmpt.data import encode

    spec = _sp_encoder(()).spec
    proto = pb.ModelProto()
    proto.ParseFromString(open(spec.model_path, "rb").read())
    proto.pieces[-1].piece = "a\u2581b"
    (tmp_path / "m.model").write_bytes(proto.SerializeToString())
    with pytest.raises(ValueError, match="spans U\\+2581 word boundaries"):
        encode._SentencePieceWords(EncoderSpec(**{**spec.__dict__, "model_path": str(tmp_path / "m.model")}))


def test_jsonl_chunks_are_whole_lines_with_their_line_numbers(tmp_path):
    from llmpt.data.inputs import discover_inputs, iter_chunks

    lines = [f'{{"text": "document {i} {"x" * (i % 37)}"}}\n' for i in range(500)]
    p = tmp_path / "c.jsonl"
    p.write_text("".join(lines) + '{"text": "no final newline"}')
    chunks = list(iter_chunks(discover_inputs([str(p)]), chunk_bytes=333))
    assert b"".join(c.data for c in chunks) == p.read_bytes()
    for c in chunks:
        first = c.data.split(b"\n")[0].decode()
        assert first == lines[c.first_line - 1].rstrip("\n") if c.first_line <= 500 else "no final newline" in first
    assert len(chunks) > 20 and all(c.data.endswith(b"\n") for c in chunks[:-1])


def test_a_jsonl_line_past_the_limit_is_named_with_its_size(tmp_path, monkeypatch):
    from llmpt.data import inputs

    monkeypatch.setattr(inputs, "MAX_LINE_BYTES", 1000)
    p = tmp_path / "c.jsonl"
    p.write_text('{"text": "ok"}\n' * 3 + '{"text": "' + "y" * 5000 + '"}\n{"text": "after"}\n')
    with pytest.raises(inputs.DataError, match=r"c.jsonl:4: one line of 0 MB"):
        list(inputs.iter_chunks(inputs.discover_inputs([str(p)]), chunk_bytes=64))
