"""The Train tab's config building: form -> YAML -> the same parsed arguments the CLI gets; errors by group."""

from __future__ import annotations

import dataclasses
import json

import pytest

from llmtuner.extras.errors import ConfigError
from llmtuner.hparams.parser import get_train_args, read_args
from llmtuner.webui import config as cfg
from llmtuner.webui.runs import read_loss


def _form(model_dir: str, output_dir: str, **changes) -> dict:
    return {**cfg.DEFAULT_FORM, "model_name_or_path": model_dir, "dataset": ["sft_demo_zh_en"],
            "output_dir": output_dir, **changes}


def _parsed(args) -> tuple:
    model, data, training, finetuning, generating = get_train_args(args)
    training_dict = {key: value for key, value in training.to_dict().items() if key != "logging_dir"}
    return (dataclasses.asdict(model), dataclasses.asdict(data), training_dict, dataclasses.asdict(finetuning),
            dataclasses.asdict(generating))


def test_form_yaml_parses_like_the_cli(tmp_path, tiny_qwen2_dir, repo_root, monkeypatch):
    monkeypatch.chdir(repo_root)
    form = _form(tiny_qwen2_dir, str(tmp_path / "out"), learning_rate=3e-4, max_steps=5.0, lora_rank=4.0,
                 lora_alpha=8.0, max_samples=16.0, per_device_train_batch_size=2.0)
    config = cfg.build_train_config(form)
    yaml_file = tmp_path / "train.yaml"
    yaml_file.write_text(cfg.config_yaml(config), encoding="utf-8")
    # what `llmtuner train train.yaml` reads and parses
    model, data, training, finetuning, _ = get_train_args(read_args([str(yaml_file)]))
    assert model.model_name_or_path == tiny_qwen2_dir
    assert data.dataset == ["sft_demo_zh_en"] and data.max_samples == 16 and data.template == "auto"
    assert training.learning_rate == 3e-4 and training.max_steps == 5 and training.per_device_train_batch_size == 2
    assert finetuning.stage == "sft" and finetuning.lora_rank == 4 and finetuning.lora_alpha == 8
    assert cfg.train_command(yaml_file)[-2:] == ["train", str(yaml_file)]


def test_preset_round_trip_gives_the_same_arguments(repo_root, monkeypatch, tmp_path):
    """A config loaded into the form and written back parses to exactly what the original file parses to."""
    monkeypatch.chdir(repo_root)
    original = read_args([str(repo_root / "configs" / "sft_lora_tiny.yaml")])
    original["model_name_or_path"] = str(tmp_path)  # parsing needs no model files; the path only has to match
    original["output_dir"] = str(tmp_path / "out")
    rebuilt = cfg.build_train_config(cfg.form_from_config(original))
    assert rebuilt == {**original, **{key: value for key, value in rebuilt.items() if key not in original}}
    assert _parsed(rebuilt) == _parsed(original)


def test_lora_settings_left_out_for_full_tuning(tmp_path):
    config = cfg.build_train_config(_form("m", str(tmp_path), finetuning_type="full"))
    assert not set(cfg.LORA_KEYS) & set(config)
    assert config["finetuning_type"] == "full"


def test_resume_and_overwrite_are_the_cli_keys(tmp_path):
    config = cfg.build_train_config(_form("m", str(tmp_path), resume=True, overwrite_output_dir=True))
    assert config["resume_from_checkpoint"] == "auto" and config["overwrite_output_dir"] is True
    plain = cfg.build_train_config(_form("m", str(tmp_path)))
    assert "resume_from_checkpoint" not in plain and "overwrite_output_dir" not in plain


def test_extra_settings_merge_and_conflicts(tmp_path):
    config = cfg.build_train_config(_form("m", str(tmp_path), extra="packing: true\nbf16: false\n"))
    assert config["packing"] is True and config["bf16"] is False
    with pytest.raises(ConfigError, match="learning_rate"):
        cfg.build_train_config(_form("m", str(tmp_path), extra="learning_rate: 0.1"))
    with pytest.raises(ConfigError, match="YAML"):
        cfg.build_train_config(_form("m", str(tmp_path), extra="a: [unclosed"))


def test_errors_are_the_cli_errors_next_to_their_field(tmp_path, tiny_qwen2_dir, repo_root, monkeypatch):
    monkeypatch.chdir(repo_root)
    good = _form(tiny_qwen2_dir, str(tmp_path / "new"), max_steps=5)
    assert cfg.check_train_config(cfg.build_train_config(good)) is None

    group, error = cfg.check_train_config(cfg.build_train_config({**good, "model_name_or_path": str(tmp_path)}))
    assert group == "model" and "config.json" in error.message

    group, error = cfg.check_train_config(cfg.build_train_config({**good, "dataset": ["sft_demo_zh_enn"]}))
    assert group == "data" and "sft_demo_zh_enn" in error.message

    group, error = cfg.check_train_config(cfg.build_train_config({**good, "template": "qwenn"}))
    assert group == "model" and "qwenn" in error.message

    group, error = cfg.check_train_config(cfg.build_train_config({**good, "lora_rank": -1}))
    assert group == "method" and "lora_rank" in error.message

    used = tmp_path / "used"
    used.mkdir()
    (used / "adapter_model.safetensors").write_text("x")
    config = cfg.build_train_config({**good, "output_dir": str(used)})
    group, error = cfg.check_train_config(config)
    assert group == "output" and "already holds files" in error.message
    with pytest.raises(ConfigError) as from_cli:  # the CLI's parser says the very same thing
        get_train_args(config)
    assert from_cli.value.message == error.message
    assert cfg.check_train_config({**config, "overwrite_output_dir": True}) is None


def test_stages_come_from_the_finetuning_arguments():
    from llmtuner.hparams.finetuning_args import STAGES

    stages = cfg.available_stages()
    assert {"pt", "sft", "cls"} <= set(stages) and set(stages) <= set(STAGES)


def test_model_folder_check_and_template_suggestion(tiny_qwen2_dir, tmp_path):
    assert cfg.check_model_folder(tiny_qwen2_dir)[0]
    ok, message = cfg.check_model_folder(str(tmp_path))
    assert not ok and "config.json" in message
    assert cfg.suggest_template(tiny_qwen2_dir) == "auto"  # its tokenizer ships a chat template
    assert cfg.suggest_template(str(tmp_path)) is None


def test_datasets_and_presets_listed(repo_root):
    assert "sft_demo_zh_en" in cfg.list_datasets(repo_root / "data")
    assert cfg.list_datasets(repo_root / "nowhere") == []
    presets = cfg.list_presets(repo_root / "configs" / "presets")
    assert "medical" in presets
    form = cfg.form_from_config(cfg.load_preset(repo_root / "configs" / "presets", "medical"))
    assert form["dataset"] == ["medical_sharegpt", "medical_alpaca"] and "mix_strategy" in form["extra"]


def test_loss_rows_from_the_trainer_log(tmp_path):
    lines = [{"current_steps": 1, "loss": 2.5}, {"current_steps": 2, "loss": 2.0, "eval_loss": 2.2}]
    text = "\n".join(json.dumps(line) for line in lines) + '\n{"current_steps": 3, "lo'
    (tmp_path / "trainer_log.jsonl").write_text(text)
    assert read_loss(tmp_path) == [{"step": 1, "loss": 2.5, "kind": "train"}, {"step": 2, "loss": 2.0, "kind": "train"},
                                   {"step": 2, "loss": 2.2, "kind": "eval"}]
    assert read_loss(tmp_path / "missing") == []
