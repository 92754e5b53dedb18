"""The torch-free early checks agree with the full ones, and the TrainingArguments facts they read from source
are those of the real dataclass."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from llmtuner.extras.errors import LlmtunerError
from llmtuner.hparams.parser import check_train_args_early, get_train_args
from llmtuner.hparams.training_fields import NO_DEFAULT, training_fields


def test_source_fields_match_the_real_seq2seq_training_arguments():
    from transformers import Seq2SeqTrainingArguments

    real = {field.name: field for field in dataclasses.fields(Seq2SeqTrainingArguments) if field.init}
    hints = typing.get_type_hints(Seq2SeqTrainingArguments)
    read = training_fields()
    assert read.keys() == real.keys()
    literal = {name: field for name, field in read.items() if field.default is not NO_DEFAULT}
    assert len(literal) > 100  # almost every default is a literal; the few others are left to get_train_args
    for name, field in literal.items():
        assert field.default == real[name].default, name
    for name, field in read.items():
        if field.plain_type is not None:
            options = [option for option in typing.get_args(hints[name]) if option is not type(None)]
            assert (options or [hints[name]]) == [field.plain_type], name
    assert read["learning_rate"].plain_type is float and read["output_dir"].default is None


@pytest.fixture()
def valid(tiny_qwen2_dir, tmp_path) -> dict:
    return {"model_name_or_path": tiny_qwen2_dir, "dataset": "sft_demo_zh_en", "template": "qwen",
            "output_dir": str(tmp_path / "out"), "lora_rank": "4", "max_steps": "3"}


@pytest.mark.parametrize("overrides", [
    {"lora_rnak": 4},
    {"num_train_epoch": 2},
    {"learning_rate": "fast"},
    {"max_steps": 2.5},
    {"do_train": "maybe"},
    {"stage": "ppo"},
    {"dataset": None},
    {"template": None},
    {"output_dir": None},
    {"remove_unused_columns": True},
    {"quantization_bit": 4, "finetuning_type": "freeze"},
    {"resume_from_checkpoint": "/no/such/checkpoint-3"},
    {"deepspeed": "no_such_ds.json"},
], ids=lambda overrides: ",".join(overrides))
def test_early_and_full_checks_give_the_same_error(valid, overrides):
    args = {**valid, **overrides}
    with pytest.raises(LlmtunerError) as early:
        check_train_args_early(args)
    with pytest.raises(LlmtunerError) as full:
        get_train_args(args)
    assert (early.value.message, early.value.hint) == (full.value.message, full.value.hint)


def test_a_valid_config_passes_both_with_the_same_values(valid):
    model, data, finetuning, generating = check_train_args_early(valid)
    full_model, full_data, training, full_finetuning, full_generating = get_train_args(valid)
    assert (model, data, finetuning, generating) == (full_model, full_data, full_finetuning, full_generating)
    assert finetuning.lora_rank == 4 and training.max_steps == 3


def test_resume_auto_with_overwrite_is_accepted_for_a_folder_that_holds_files(valid, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "run_args.yaml").write_text("stage: sft\n")
    with pytest.raises(LlmtunerError, match="already holds files"):
        check_train_args_early(valid)
    with pytest.raises(LlmtunerError, match="found no complete checkpoint"):
        check_train_args_early({**valid, "resume_from_checkpoint": "auto"})
    check_train_args_early({**valid, "resume_from_checkpoint": "auto", "overwrite_output_dir": True})
