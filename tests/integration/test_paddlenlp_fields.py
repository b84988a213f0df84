"""The facts about the pinned PaddleNLP that the CLI holds without importing it: the TrainingArguments names and types
behind `training_args.<name>` (llmpt/strategies/paddlenlp_fields.py), the document split of its dataset builder
(run_config.split_documents), and that a passthrough value reaches the rank's argument parser as given."""

from __future__ import annotations

import pytest

pytest.importorskip("paddlenlp")
pytestmark = pytest.mark.paddle


def test_the_shipped_field_list_is_the_installed_paddlenlp():
    from llmpt.train.list_training_args import TARGET, render

    assert TARGET.read_text() == render(), "PaddleNLP changed: run python -m llmpt.train.list_training_args"


@pytest.mark.parametrize("split", ["949,50,1", "98,2,0", "1,1,1", "0.9,0.05,0.05", "8,2,0", "1,0,0", "5,3,2"])
def test_split_documents_is_paddlenlps_split(split):
    from paddlenlp.data.causal_dataset import get_train_valid_test_split_

    from llmpt.run_config import split_documents

    for size in (1, 2, 7, 10, 59, 100, 1189, 12345):
        index = get_train_valid_test_split_(split, size)
        assert split_documents(split, size) == [(index[i], index[i + 1]) for i in range(3)], (split, size)


def test_a_passthrough_value_reaches_the_ranks_parser(tmp_path):
    from paddlenlp.trainer import PdArgumentParser

    from llmpt.run_config import TrainSettings
    from llmpt.strategies.expand import expand, run_training_args
    from llmpt.strategies.schema import Strategy
    from llmpt.train.args import ModelArguments, PretrainArguments

    s = Strategy(name="dp1")  # fp32, one rank: what a CPU process can parse
    extra = {"adam_epsilon": 1e-6, "logging_first_step": True, "decay_steps": 50}
    train = TrainSettings(max_steps=100, optimizer="adamw_mini")  # optim's one owner
    ta = run_training_args(expand(s, 1), s, train, str(tmp_path), "cpu", extra)
    args, _ = PdArgumentParser((PretrainArguments, ModelArguments)).parse_dict(ta)
    assert (args.adam_epsilon, args.logging_first_step, args.decay_steps) == (1e-6, True, 50)
    assert str(getattr(args.optim, "value", args.optim)) == "adamw_mini"
