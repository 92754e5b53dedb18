"""The tiny BERT builder: a bert-base-chinese-style WordPiece tokenizer trained offline and a random encoder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from llmtuner.extras.errors import ConfigError, DependencyError
from llmtuner.model import tiny_tokenizer
from llmtuner.model.tiny import BERT_SPECIAL_TOKENS, build_bert_tokenizer, main, make_tiny_model
from llmtuner.model.tiny_tokenizer import BERT_CORPUS_FILES, count_bert_vocab, shipped_bert_vocab

from .conftest import REPO_DATA


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


def test_shipped_vocabulary_is_the_one_counted_from_the_sample_data():
    # The installed package carries the vocabulary (package data), not data/; it must stay what data/ gives.
    counted = count_bert_vocab([str(REPO_DATA / name) for name in BERT_CORPUS_FILES])
    assert shipped_bert_vocab() == counted, (
        "data/ changed: recount the shipped vocabulary with python scripts/make_tiny_model.py --refresh-bert-vocab"
    )


def test_corpus_option_counts_a_vocabulary_from_the_given_files(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("工单 审批\nlakehouse lakehouse\n", encoding="utf-8")
    assert main(["--arch", "bert", "--corpus", str(corpus), "--out", str(tmp_path / "own")]) == 0
    vocab = AutoTokenizer.from_pretrained(tmp_path / "own").get_vocab()
    # Characters by how many words use them (ties by text), their ## forms, then the whole words.
    assert sorted(vocab, key=vocab.get) == [*BERT_SPECIAL_TOKENS, *"aehklosu", *"单审工批",
                                            *(f"##{char}" for char in "aehkosu"), "lakehouse"]
    capsys.readouterr()
    assert main(["--arch", "bert", "--corpus", str(tmp_path / "absent.txt"), "--out", str(tmp_path / "x")]) == 2
    assert "--corpus FILE" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # the Qwen models have a fixed tokenizer
        main(["--arch", "qwen2", "--corpus", str(corpus), "--out", str(tmp_path / "y")])
    assert "--corpus applies to --arch bert only" in capsys.readouterr().err


def test_missing_vocabulary_file_names_a_fix_the_cli_takes(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(tiny_tokenizer, "BERT_VOCAB_RESOURCE", ("vocab", "absent.txt"))
    with pytest.raises(DependencyError, match="missing from the installed llmtuner"):
        build_bert_tokenizer()
    assert main(["--arch", "bert", "--out", str(tmp_path / "bert")]) == 2
    hint = capsys.readouterr().err.split("hint: ")[1]
    assert "pip install ." in hint and "make-tiny-model --arch bert --corpus FILE" in hint
    assert not (tmp_path / "bert").exists()
