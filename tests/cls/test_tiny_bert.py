"""The tiny BERT builder: a bert-base-chinese-style WordPiece tokenizer trained offline and a random encoder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from llmtuner.extras.errors import ConfigError
from llmtuner.model.tiny import BERT_SPECIAL_TOKENS, build_bert_tokenizer, main, make_tiny_model


def test_chinese_characters_are_single_tokens_and_text_is_wrapped_in_cls_sep(tiny_bert_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    encoded = tokenizer("数据平台上怎么新建一张 Hive 表？")
    assert tokenizer.convert_ids_to_tokens(encoded["input_ids"]) == [
        "[CLS]", "数", "据", "平", "台", "上", "怎", "么", "新", "建", "一", "张", "hive", "表", "？", "[SEP]"
    ]
    assert encoded["token_type_ids"] == [0] * 16
    assert tokenizer.convert_ids_to_tokens(list(range(5))) == list(BERT_SPECIAL_TOKENS)
    assert (tokenizer.pad_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id) == (0, 2, 3)
    # A character the sample data never uses is unknown, as in any fixed vocabulary.
    assert tokenizer.convert_ids_to_tokens(tokenizer("龘")["input_ids"]) == ["[CLS]", "[UNK]", "[SEP]"]
    config = json.loads((Path(tiny_bert_dir) / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "BertTokenizer"


def test_reloaded_tokenizer_matches_the_built_one(tiny_bert_dir):
    built = build_bert_tokenizer()
    loaded = AutoTokenizer.from_pretrained(tiny_bert_dir)
    text = "请把 ods_pay_flow 的表负责人转给王芳。\nTranslate: The meeting is postponed."
    assert loaded(text)["input_ids"] == built(text)["input_ids"]
    # The vocabulary is counted, not sampled: a rebuild gives the same ids (a rebuilt model fits old adapters).
    assert loaded.get_vocab() == built.get_vocab() == build_bert_tokenizer().get_vocab()
    assert len(built) == 3000


def test_model_loads_as_a_classifier_with_only_a_new_head(tiny_bert_dir):
    model, info = AutoModelForSequenceClassification.from_pretrained(
        tiny_bert_dir, num_labels=3, output_loading_info=True
    )
    assert info["missing_keys"] == {"classifier.weight", "classifier.bias"}  # the pooler is in the checkpoint
    assert model.config.hidden_size == 64 and model.config.num_hidden_layers == 2


def test_same_seed_gives_identical_weights_and_cli_builds_it(tmp_path, tiny_bert_dir, capsys):
    assert main(["--arch", "bert", "--out", str(tmp_path / "again")]) == 0
    assert "wrote tiny bert model" in capsys.readouterr().out
    first, second = load_file(Path(tiny_bert_dir) / "model.safetensors"), load_file(tmp_path / "again" / "model.safetensors")
    assert first.keys() == second.keys() and all((first[key] == second[key]).all() for key in first)
    with pytest.raises(ConfigError, match="not empty"):
        make_tiny_model("bert", str(tmp_path / "again"))
    with pytest.raises(ConfigError, match="unknown BertConfig field"):
        make_tiny_model("bert", str(tmp_path / "other"), hidden_sise=32)
