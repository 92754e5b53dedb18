"""Preference data through our data path: exact tokens and masks, the printed first pair, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmtuner.extras.constants import IGNORE_INDEX
from llmtuner.extras.errors import DatasetError

from .conftest import PAIRS, pref_args


def _tokenised(stage: str, dataset: str, data_dir: Path, tokenizer, tmp_path: Path, cutoff_len: int = 1024):
    from transformers import Seq2SeqTrainingArguments

    from llmtuner.data.dataset import get_dataset
    from llmtuner.data.templates import get_template
    from llmtuner.hparams import DataArguments

    data_args = DataArguments(dataset=dataset, dataset_dir=str(data_dir), template="qwen", cutoff_len=cutoff_len)
    training_args = Seq2SeqTrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none",
                                             do_train=True)  # a training run: its first example is shown
    template = get_template("qwen", tokenizer)
    return template, get_dataset(template, tokenizer, data_args, training_args, stage=stage).train_dataset


def test_pair_ids_and_masks_match_the_template_rendering(pref_data_dir, tiny_qwen2_dir, tmp_path, capsys):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen2_dir)
    template, rows = _tokenised("dpo", "pairs", pref_data_dir, tokenizer, tmp_path)
    question, good, bad = PAIRS[0]
    row = rows[0]
    for answer, ids in ((good, row["chosen_ids"]), (bad, row["rejected_ids"])):
        messages = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        # The official Qwen2.5 rendering of the whole conversation is exactly prompt + answer.
        assert row["prompt_ids"] + ids == tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False)
        # The prompt is what generation sees; the answer is the SFT-trained span (reply + <|im_end|> + newline).
        assert row["prompt_ids"] == tokenizer.apply_chat_template(messages[:1], add_generation_prompt=True,
                                                                  tokenize=True, return_dict=False)
        sft_pairs = template.encode_multiturn(tokenizer, messages)
        assert (row["prompt_ids"], ids) == tuple(sft_pairs[0])
    assert tokenizer.decode(row["chosen_ids"]) == f"{good}<|im_end|>\n"
    assert tokenizer.decode(row["rejected_ids"]) == f"{bad}<|im_end|>\n"

    # TRL's collator trains exactly the answer tokens: our SFT label mask.
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    batch = DataCollatorForPreference(pad_token_id=tokenizer.pad_token_id)([row])
    from llmtuner.data.preprocess.preference import sequence_and_labels

    for position, answer in ((0, row["chosen_ids"]), (1, row["rejected_ids"])):
        ids, labels = sequence_and_labels(row["prompt_ids"], answer)
        length = len(ids)
        assert batch["input_ids"][position, :length].tolist() == ids
        trained = [token != IGNORE_INDEX for token in labels]
        assert batch["completion_mask"][position, :length].bool().tolist() == trained

    printed = capsys.readouterr().out
    assert f"[chosen] [MASKED: <|im_start|>system" in printed and f"]{good}<|im_end|>" in printed
    assert f"]{bad}<|im_end|>" in printed


def test_sharegpt_pairs_share_the_conversation(pref_data_dir, tiny_qwen2_dir, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen2_dir)
    _, rows = _tokenised("dpo", "pairs_sharegpt", pref_data_dir, tokenizer, tmp_path)
    question, good, _ = PAIRS[0]
    messages = [{"role": "user", "content": "你好"},
                {"role": "assistant", "content": "你好，请问有什么可以帮您？"},
                {"role": "user", "content": question}, {"role": "assistant", "content": good}]
    assert rows[0]["prompt_ids"] + rows[0]["chosen_ids"] == tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=False)


def test_truncation_never_cuts_a_whole_answer(pref_data_dir, tiny_qwen2_dir, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen2_dir)
    _, rows = _tokenised("dpo", "pairs", pref_data_dir, tokenizer, tmp_path, cutoff_len=12)
    for row in rows:
        assert row["chosen_ids"] and row["rejected_ids"]
        assert len(row["prompt_ids"]) + max(len(row["chosen_ids"]), len(row["rejected_ids"])) <= 12


def test_kto_rows_carry_the_tag_and_pairs_unpair(pref_data_dir, tiny_qwen2_dir, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen2_dir)
    _, tagged = _tokenised("kto", "tagged", pref_data_dir, tokenizer, tmp_path)
    _, unpaired = _tokenised("kto", "pairs", pref_data_dir, tokenizer, tmp_path / "b")
    assert tagged["label"] == [True, False] * len(PAIRS) == unpaired["label"]
    assert tagged["completion_ids"] == unpaired["completion_ids"]
    assert tokenizer.decode(tagged[1]["completion_ids"]) == f"{PAIRS[0][2]}<|im_end|>\n"


@pytest.mark.parametrize("stage, dataset, message", [
    ("sft", "pairs", "pairwise preference data"),
    ("dpo", "sft_rows", 'not marked "ranking": true'),
    ("rm", "sft_rows", 'not marked "ranking": true'),
    ("dpo", "no_rejected", "the rejected column 'rejected' is not in"),
    ("kto", "tag_strings", "not true/false"),
])
def test_bad_preference_data_fails_before_the_model_loads(pref_data_dir, tmp_path, stage, dataset, message,
                                                          monkeypatch, tiny_qwen2_dir):
    from llmtuner.train.tuner import run_exp

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("transformers.AutoModelForCausalLM.from_pretrained", no_model)
    output_dir = tmp_path / "out"
    args = pref_args(tiny_qwen2_dir, pref_data_dir, output_dir, stage=stage, dataset=dataset)
    with pytest.raises(DatasetError) as caught:
        run_exp(args)
    assert message in caught.value.message, caught.value.message
    assert dataset in caught.value.message
    assert caught.value.hint
    assert not output_dir.exists()


def test_ranking_must_be_boolean_and_chosen_needs_ranking(tmp_path):
    from llmtuner.data.registry import get_dataset_specs

    (tmp_path / "a.json").write_text("[]", encoding="utf-8")
    registry = {"bad_flag": {"file_name": "a.json", "ranking": "yes"},
                "no_flag": {"file_name": "a.json", "columns": {"chosen": "chosen"}}}
    (tmp_path / "dataset_info.json").write_text(json.dumps(registry), encoding="utf-8")
    with pytest.raises(DatasetError, match="must be true or false"):
        get_dataset_specs(["bad_flag"], str(tmp_path))
    with pytest.raises(DatasetError, match='needs "ranking": true'):
        get_dataset_specs(["no_flag"], str(tmp_path))


@pytest.mark.parametrize("setting", [{"group_by_length": True}, {"train_sampling_strategy": "group_by_length"}])
def test_kto_refuses_a_batch_order_it_would_have_to_replace(setting, tmp_path):
    from llmtuner.extras.errors import ConfigError
    from llmtuner.hparams.parser import check_train_args_early

    args = {"model_name_or_path": str(tmp_path), "dataset": "medical_kto_demo", "template": "qwen", "stage": "kto",
            "per_device_train_batch_size": 2, "output_dir": str(tmp_path / "out"), **setting}
    with pytest.raises(ConfigError, match="stage kto draws its batches in order"):
        check_train_args_early(args)
    assert not (tmp_path / "out").exists()
