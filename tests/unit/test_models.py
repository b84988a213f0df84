"""Model registry and capability matrix: the seed's table cell by cell, every id and alias, refusals."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from llmpt.errors import ModelError
from llmpt.models.matrix import SYMBOL_STATUS, load_matrix, runnable_presets
from llmpt.models.registry import all_models, padded_vocab, paddlenlp_config, resolve_model

# ../shared/SEED.md §2, copied verbatim: the matrix must equal it cell by cell
SEED_MATRIX = """
| LLaMA-65B | ✅ | ✅ | ✅ | ✅ | ✅ | ✅ | ✅ | ✅ | ✅ | ✅ | ✅ | ✅ |
| LLaMA2-70B | ✅ | ✅ | ✅ | ✅ | ✅ | ✅ | ✅ | ✅ | ✅ | ✅ | ✅ | ✅ |
| BaiChuan-13B | ✅ | ✅ | ✅ | ✅ | ✅ | ✅ | ✅ | ✅ | ✅ | ✅ | ✅ | ✅ |
| GPT3 | ✅ | ✅ | ✅ | ✅ | ✅ | ✅ | ✅ | ✅ | ✅ | ✅ | ✅ | ✅ |
| Qwen-7B | ✅ | ✅ | ✅ | ⬜ | ✅ | ⬜ | ✅ | ✅ | ✅ | ✅ | ✅ | ✅ |
| Qwen-14B | ✅ | ✅ | ✅ | ⬜ | ✅ | ⬜ | ✅ | ✅ | ✅ | ✅ | ✅ | ✅ |
| OPT 66B | ✅ | ⬜ | ⬜ | ⬜ | ❌ | ⬜ | ⬜ | ⬜ | ⬜ | ⬜ | ⬜ | 🚧 |
| Bloom-176B | ✅ | ✅ | ⬜ | ⬜ | ❌ | ⬜ | ⬜ | ⬜ | ⬜ | ⬜ | ⬜ | 🚧 |
| ChatGLM-6B | ✅ | ✅ | ⬜ | ⬜ | ❌ | ⬜ | ⬜ | ⬜ | ⬜ | ⬜ | ⬜ | 🚧 |
| GLM 130B | ✅ | ✅ | ⬜ | ⬜ | ❌ | ⬜ | ⬜ | ⬜ | ⬜ | ⬜ | ⬜ | 🚧 |
"""
SEED_COLUMNS = ["DP", "TP", "PP", "SP", "FA", "S1 rc", "S1 dp", "S2 rc", "S2 dp", "S3 rc", "S3 dp", "SR"]

SEED_IDS = """facebook/llama-7b, facebook/llama-13b, facebook/llama-65b, meta-llama/Llama-2-7b,
  meta-llama/Llama-2-7b-chat, meta-llama/Llama-2-13b, meta-llama/Llama-2-13b-chat, meta-llama/Llama-2-70b,
  baichuan-inc/Baichuan-7B, baichuan-inc/Baichuan-13B-Base, baichuan-inc/Baichuan-13B-Chat,
  baichuan-inc/Baichuan2-7B-Base, baichuan-inc/Baichuan2-7B-Chat, baichuan-inc/Baichuan2-13B-Base,
  baichuan-inc/Baichuan2-13B-Chat, FlagAlpha/Llama2-Chinese-7b-Chat, FlagAlpha/Llama2-Chinese-13b-Chat,
  idea-ccnl/ziya-llama-13b-v1, linly-ai/chinese-llama-2-7b, linly-ai/chinese-llama-2-13b,
  THUDM/chatglm-6b-v1.1, THUDM/chatglm2-6b, bigscience/bloom-7b1, bigscience/bloomz-7b1, bigscience/bloomz-7b1-mt,
  qwen/qwen-7b, qwen/qwen-7b-chat, qwen/qwen-14b, qwen/qwen-14b-chat"""
SEED_ID_LIST = [s.strip() for s in SEED_IDS.replace("\n", " ").split(",")]


def _parse_table(text: str) -> dict[str, list[str]]:
    rows = {}
    for line in text.strip().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def _seed_md() -> str | None:
    for parent in Path(__file__).resolve().parents:
        p = parent.parent / "shared" / "SEED.md"
        if p.is_file():
            return p.read_text(encoding="utf-8")
    return None


# rows after the seed's: families of the last two years, their cells from what the pinned modeling implements
NEW_ROWS = {
    "Llama-3": "✅ ✅ ✅ ✅ ✅ ✅ ✅ ✅ ✅ ✅ ✅ ✅",
    "Qwen2": "✅ ✅ ✅ ✅ ✅ ✅ ✅ ✅ ✅ ✅ ✅ ✅",
    "Mistral-7B": "✅ ✅ ❌ ❌ ✅ ✅ ✅ ✅ ✅ ✅ ✅ ❌",
    "Mixtral": "✅ ✅ ❌ ❌ ✅ ✅ ✅ ✅ ✅ ✅ ✅ ✅",
    "Qwen2-MoE": "✅ ✅ ✅ ❌ ✅ ✅ ✅ ✅ ✅ ✅ ✅ ✅",
    "DeepSeek-V2": "✅ ✅ ✅ ❌ ✅ ✅ ✅ ✅ ✅ ✅ ✅ 🚧",
}


def test_matrix_equals_the_seed_table_cell_by_cell():
    m = load_matrix()
    assert [c.title for c in m.columns] == SEED_COLUMNS
    seed = _parse_table(SEED_MATRIX)
    assert [r.name for r in m.rows] == list(seed) + list(NEW_ROWS)
    for r in m.rows[: len(seed)]:
        for col, symbol in zip(m.columns, seed[r.name], strict=True):
            assert r.cells[col.key].status == SYMBOL_STATUS[symbol], (r.name, col.title)
            assert r.cells[col.key].source == "seed"
    for r in m.rows[len(seed) :]:
        for col, symbol in zip(m.columns, NEW_ROWS[r.name].split(), strict=True):
            assert r.cells[col.key].status == SYMBOL_STATUS[symbol], (r.name, col.title)
            assert r.cells[col.key].source.startswith("llmpt: PaddleNLP 3.0.0b4 ")


def test_new_rows_claim_exactly_what_their_modeling_serves():
    """A new row's ✅/❌ for tp, pp, sp, fa and sr is its family's modeling claim (pp = 1), never copied from a row."""
    from llmpt.models.matrix import modeling_cell

    m = load_matrix()
    for name in NEW_ROWS:
        row = m.row(name)
        for col in ("tp", "pp", "sp", "fa", "sr"):
            cell = modeling_cell(row, col)
            assert (cell["status"] == "supported") == (row.cells[col].status == "supported"), (name, col, cell)


def test_transcription_matches_shared_seed_when_present():
    text = _seed_md()
    if text is None:
        pytest.skip("../shared/SEED.md is not beside this checkout")
    lines = [ln for ln in text.splitlines() if ln.startswith("| ") and any(s in ln for s in SYMBOL_STATUS)]
    assert _parse_table("\n".join(lines)) == _parse_table(SEED_MATRIX)


def test_29_seed_ids_resolve_and_are_flagged():
    assert len(SEED_ID_LIST) == 29
    for i in SEED_ID_LIST:
        spec = resolve_model(i)
        assert spec.id == i and spec.seed_weight
    assert {m.id for m in all_models() if m.seed_weight} == set(SEED_ID_LIST)


@pytest.mark.parametrize(
    "name,expected",
    [
        ("qwen-7b", "qwen/qwen-7b"),
        ("llama2-7b", "meta-llama/Llama-2-7b"),
        ("baichuan2-13b", "baichuan-inc/Baichuan2-13B-Base"),
        ("chatglm2-6b", "THUDM/chatglm2-6b"),
        ("bloom-7b1", "bigscience/bloom-7b1"),
        ("Llama-2-7b", "meta-llama/Llama-2-7b"),
        ("META-LLAMA/LLAMA-2-7B", "meta-llama/Llama-2-7b"),
        # names that appear only in the capability matrix
        ("LLaMA-65B", "facebook/llama-65b"),
        ("LLaMA2-70B", "meta-llama/Llama-2-70b"),
        ("BaiChuan-13B", "baichuan-inc/Baichuan-13B-Base"),
        ("Qwen-14B", "qwen/qwen-14b"),
        ("OPT 66B", "facebook/opt-66b"),
        ("Bloom-176B", "bigscience/bloom"),
        ("ChatGLM-6B", "THUDM/chatglm-6b-v1.1"),
        ("GLM 130B", "THUDM/glm-130b"),
        ("gpt3-13b", "gpt3-13B-en"),
        ("gpt3-175B", "gpt3-175B"),
    ],
)
def test_aliases_and_matrix_names_resolve(name, expected):
    assert resolve_model(name).id == expected


def test_every_alias_resolves_to_its_model_and_every_model_has_a_matrix_row():
    rows = {r.name for r in load_matrix().rows}
    for m in all_models():
        assert m.matrix_row in rows
        for a in (m.id, *m.aliases):
            assert resolve_model(a).id == m.id


def test_each_family_has_a_tiny_variant():
    tiny = {m.family for m in all_models() if m.id.endswith("-tiny")}
    assert tiny == {
        "llama", "qwen", "gpt", "opt", "bloom", "chatglm", "chatglm2", "glm", "qwen2", "mistral",
        "mixtral", "qwen2_moe", "deepseek_v2",
    }  # fmt: skip
    rows = {m.matrix_row for m in all_models() if m.id.endswith("-tiny")}
    assert {"Llama-3", "Qwen2", "Mistral-7B", "Mixtral", "Qwen2-MoE", "DeepSeek-V2"} <= rows


def test_unknown_model_suggests():
    with pytest.raises(ModelError) as e:
        resolve_model("qwen-8b")
    assert e.value.message.startswith("unknown model 'qwen-8b'. Did you mean 'qwen/qwen-7b'")


def test_real_dimensions_of_well_known_models():
    l70 = resolve_model("llama2-70b")
    assert (l70.hidden_size, l70.num_hidden_layers, l70.num_attention_heads, l70.num_key_value_heads) == (
        8192,
        80,
        64,
        8,
    )
    q = resolve_model("qwen-7b")
    assert (q.hidden_size, q.intermediate_size, q.ffn_width, q.vocab_size) == (4096, 22016, 11008, 151936)
    assert paddlenlp_config(q)["kv_channels"] == 128
    b = resolve_model("baichuan2-13b")
    assert paddlenlp_config(b)["alibi"] is True and b.vocab_size == 125696


def test_vocab_is_padded_as_paddlenlp_run_pretrain_pads_it():
    assert padded_vocab(32000) == 32000
    assert padded_vocab(40076) == 40192
    linly = resolve_model("linly-ai/chinese-llama-2-7b")
    assert paddlenlp_config(linly)["vocab_size"] == 40192
    assert paddlenlp_config(linly, from_scratch=False)["vocab_size"] == 40076


def test_runnable_presets_follow_the_matrix():
    assert runnable_presets(resolve_model("opt-66b")) == ["dp1", "dp2", "dp4", "dp8"]
    assert "tp2sd4_stage2" in runnable_presets(resolve_model("qwen-7b"))
    assert "tp8_sp" not in runnable_presets(resolve_model("qwen-7b"))  # SP not listed for Qwen
    assert "tp4" not in runnable_presets(resolve_model("chatglm2-6b"))  # 2 kv heads


def test_matrix_json_is_stable(cli):
    """Regenerate after an intended change with LLMPT_UPDATE_GOLDEN=1 and review the diff (schema llmpt.matrix/1:
    keys are only ever added)."""
    r = cli("matrix", "--json")
    assert r.exit_code == 0
    golden = Path(__file__).parent / "golden" / "matrix.json"
    data = json.loads(r.stdout)
    assert data["schema"] == "llmpt.matrix/1"
    if os.environ.get("LLMPT_UPDATE_GOLDEN") == "1":
        golden.write_text(json.dumps(data, indent=2) + "\n")
    assert data == json.loads(golden.read_text())
