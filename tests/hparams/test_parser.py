"""The argument parser: reading files and command lines, types, unknown keys, cross-argument rules, run_args.yaml."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from llmtuner.extras import env
from llmtuner.extras.errors import ConfigError, DependencyError
from llmtuner.hparams import parser, rules
from llmtuner.hparams.parser import get_infer_args, get_train_args, read_args, save_run_args


@pytest.fixture()
def base(tmp_path) -> dict:
    """The smallest valid sft config; output_dir does not exist yet."""
    return {
        "model_name_or_path": "/models/tiny",
        "stage": "sft",
        "dataset": "demo",
        "template": "qwen",
        "output_dir": str(tmp_path / "out"),
    }


def write_yaml(path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def config_error(args) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        get_train_args(args)
    return info.value


# ---- read_args ----

def test_read_args_yaml_then_key_value_and_flag_overrides(tmp_path):
    cfg = write_yaml(tmp_path / "train.yaml", "stage: sft\nlora_rank: 8\ncutoff_len: 512  # a comment\n")
    argv = [cfg, "lora_rank=4", "--learning_rate", "1e-4", "--plot_loss", "--cutoff_len=128", "dataset=a,b"]
    assert read_args(argv) == {
        "stage": "sft", "lora_rank": 4, "cutoff_len": 128, "learning_rate": "1e-4", "plot_loss": True,
        "dataset": "a,b",
    }


def test_read_args_plain_flags_alone_dashes_become_underscores():
    argv = ["--stage", "pt", "--model-name-or-path", "/m", "--do_train", "--val_size", "0.1", "--max_steps", "-1"]
    assert read_args(argv) == {"stage": "pt", "model_name_or_path": "/m", "do_train": True, "val_size": 0.1,
                               "max_steps": -1}


def test_read_args_drops_the_local_rank_that_launchers_add(tmp_path):
    cfg = write_yaml(tmp_path / "c.yml", "stage: sft\n")
    # deepspeed puts --local_rank=N before the script's own arguments
    assert read_args(["--local_rank=3", cfg, "--local-rank", "1", "seed=7"]) == {"stage": "sft", "seed": 7}


def test_read_args_json_config(tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text('{"stage": "pt", "lora_rank": 16}', encoding="utf-8")
    assert read_args([str(cfg), "stage=sft"]) == {"stage": "sft", "lora_rank": 16}


def test_read_args_from_a_dict_returns_a_copy():
    given = {"stage": "sft"}
    result = read_args(given)
    result["stage"] = "pt"
    assert given == {"stage": "sft"}


@pytest.mark.parametrize(
    "text, value",
    [("true", True), ("False", False), ("3", 3), ("0.5", 0.5), ("a,b", "a,b"), ("null", None), ("", None),
     ("[q_proj, v_proj]", ["q_proj", "v_proj"]), ("You are: helpful", "You are: helpful"), ("#1 rule", "#1 rule"),
     ("2024-01-02", "2024-01-02"), ("x=y", "x=y")],
)
def test_command_line_values_are_yaml_scalars(text, value):
    assert read_args([f"key={text}"]) == {"key": value}


def test_missing_config_file_is_named():
    with pytest.raises(ConfigError) as info:
        read_args(["no/such/train.yaml", "lora_rank=4"])
    assert info.value.message == "Config file no/such/train.yaml does not exist."
    assert "current folder" in info.value.hint


def test_yaml_syntax_error_names_the_line(tmp_path):
    cfg = write_yaml(tmp_path / "bad.yaml", "stage: sft\nlora_rank: 8\ntemplate: [qwen\n")
    with pytest.raises(ConfigError) as info:
        read_args([cfg])
    assert info.value.message.startswith(f"Config file {cfg} is not valid YAML:")
    assert "line 4" in info.value.message or "line 3" in info.value.message


def test_json_syntax_error_names_the_line(tmp_path):
    cfg = tmp_path / "bad.json"
    cfg.write_text('{\n  "stage": "sft",\n  "lora_rank": 8,\n}', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        read_args([str(cfg)])
    assert "at line 4, column 1" in info.value.message


def test_config_that_is_not_a_mapping(tmp_path):
    cfg = write_yaml(tmp_path / "list.yaml", "- stage\n- sft\n")
    with pytest.raises(ConfigError, match="holds a list, not a mapping"):
        read_args([cfg])


def test_stray_positional_argument_is_refused(tmp_path):
    with pytest.raises(ConfigError) as info:
        read_args(["stage=sft", "train.yaml"])
    assert info.value.message == "Unexpected argument 'train.yaml'."
    assert "config file (.yaml/.yml/.json) must come first" in info.value.hint


# ---- get_train_args: types, defaults, unknown keys ----

def test_train_args_from_yaml_with_overrides(tmp_path, base):
    cfg = write_yaml(tmp_path / "train.yaml", yaml.safe_dump(base) + "learning_rate: 1e-4\nlora_rank: 8\n")
    model_args, data_args, training_args, finetuning_args, generating_args = get_train_args(
        [cfg, "lora_rank=4", "dataset=a,b", "--num_train_epochs", "2", "lr_scheduler_type=cosine"]
    )
    assert model_args.model_name_or_path == "/models/tiny"
    assert data_args.dataset == ["a", "b"] and data_args.template == "qwen"
    assert finetuning_args.lora_rank == 4 and finetuning_args.lora_alpha == 8
    assert training_args.learning_rate == 1e-4  # "1e-4" is a string to PyYAML
    assert training_args.num_train_epochs == 2
    assert training_args.lr_scheduler_type.value == "cosine"
    assert generating_args.max_new_tokens == 1024


def test_run_defaults_fill_only_unset_keys(base, monkeypatch):
    monkeypatch.setattr(rules, "has_cuda", lambda: False)
    _, _, training_args, _, _ = get_train_args(base)
    assert training_args.do_train is True
    assert training_args.report_to == []  # "none"
    assert training_args.remove_unused_columns is False
    assert training_args.use_cpu is True

    assert training_args.activation_checkpointing is False  # CPU runs: small models, the faster path

    monkeypatch.setattr(rules, "has_cuda", lambda: True)
    _, _, training_args, _, _ = get_train_args(base)
    assert training_args.use_cpu is False
    assert training_args.activation_checkpointing is True  # GPU runs: activations of a 7B model outgrow the GPU
    for name in ("activation_checkpointing", "gradient_checkpointing"):  # the new name and its deprecated alias
        _, _, training_args, _, _ = get_train_args({**base, name: False})
        assert training_args.activation_checkpointing is False


def test_values_the_user_set_are_kept(base, monkeypatch):
    monkeypatch.setattr(rules, "has_cuda", lambda: False)
    args = {**base, "do_eval": True, "do_train": False, "use_cpu": False, "eval_dataset": "demo"}
    _, _, training_args, _, _ = get_train_args(args)
    assert (training_args.do_train, training_args.do_eval, training_args.use_cpu) == (False, True, False)


def test_unknown_key_lists_the_closest_names(base):
    error = config_error({**base, "lora_rnak": 4, "learnin_rate": 1e-4})
    assert error.message == (
        "Unknown arguments: lora_rnak (did you mean lora_rank or local_rank?), "
        "learnin_rate (did you mean learning_rate?)."
    )
    assert "ModelArguments, DataArguments, Seq2SeqTrainingArguments" in error.hint


def test_unknown_key_without_a_close_match(base):
    assert config_error({**base, "zzzz": 1}).message == "Unknown argument: zzzz."


def test_unknown_key_suggests_names_that_contain_it(base):
    error = config_error({**base, "epochs": 3})
    assert error.message == "Unknown argument: epochs (did you mean num_train_epochs?)."


@pytest.mark.parametrize(
    "key, given, expected",
    [("lora_rank", "8", 8), ("lora_rank", 8.0, 8), ("lora_dropout", "0.1", 0.1), ("lora_dropout", 0, 0),
     ("val_size", "200", 200), ("plot_loss", "true", True), ("plot_loss", "no", False), ("cutoff_len", "+64", 64),
     ("default_system", 42, "42"),
     ("dataset_dir", Path("data"), "data")],
)
def test_string_values_get_the_field_type(base, key, given, expected):
    parsed = get_train_args({**base, key: given})
    value = next(getattr(obj, key) for obj in parsed if hasattr(obj, key))
    assert value == expected and type(value) is type(expected)


def test_key_value_override_of_an_int_field(base):
    _, _, _, finetuning_args, _ = get_train_args([f"{k}={v}" for k, v in base.items()] + ["lora_rank=16"])
    assert finetuning_args.lora_rank == 16


@pytest.mark.parametrize(
    "key, value, message",
    [("lora_rank", "abc", "lora_rank='abc' has the wrong type: lora_rank expects an integer (int)."),
     ("lora_rank", 8.5, "lora_rank=8.5 has the wrong type: lora_rank expects an integer (int)."),
     ("lora_rank", True, "lora_rank=True has the wrong type: lora_rank expects an integer (int)."),
     ("learning_rate", "fast", "learning_rate='fast' has the wrong type: learning_rate expects a number (float)."),
     ("do_train", "maybe", "do_train='maybe' has the wrong type: do_train expects true or false (bool)."),
     ("template", True, "template=True has the wrong type: template expects text (str).")],
)
def test_wrong_types_name_the_field_and_type(base, key, value, message):
    error = config_error({**base, key: value})
    assert error.message == message
    assert error.hint.startswith(f"Set {key} to ")


@pytest.mark.parametrize(
    "key, value, message",
    [("finetuning_type", "qlora", "finetuning_type='qlora' is not a valid value."),
     ("cutoff_len", 0, "cutoff_len=0 is out of range."),
     ("num_train_epochs", -1, "num_train_epochs=-1 is out of range."),
     ("learning_rate", -1e-4, "learning_rate=-0.0001 is out of range."),
     ("max_steps", -3, "max_steps=-3 is out of range."),
     ("per_device_train_batch_size", 0, "per_device_train_batch_size=0 is out of range."),
     ("gradient_accumulation_steps", 0, "gradient_accumulation_steps=0 is out of range."),
     ("val_size", 1.5, "val_size=1.5 is neither a fraction below 1 nor a whole number of samples.")],
)
def test_bad_values_name_the_field(base, key, value, message):
    assert config_error({**base, key: value}).message == message


def test_transformers_rejections_name_the_key(base):
    error = config_error({**base, "eval_strategy": "sometimes"})
    assert error.message.startswith("Invalid arguments (eval_strategy='sometimes'):")
    assert "sometimes is not a valid IntervalStrategy" in error.message


# ---- cross-argument rules ----

def test_template_is_required_for_sft(base):
    error = config_error({**base, "template": None})
    assert error.message == "stage sft needs a chat template, but template is not set."
    assert "template: auto" in error.hint
    _, data_args, _, finetuning_args, _ = get_train_args({**base, "template": None, "stage": "pt"})
    assert (finetuning_args.stage, data_args.template) == ("pt", None)


@pytest.mark.parametrize(
    "drop, message",
    [("output_dir", "output_dir is not set."), ("dataset", "Training needs a dataset, but dataset is not set."),
     ("model_name_or_path", "model_name_or_path is not set.")],
)
def test_required_arguments(base, drop, message):
    base.pop(drop)
    assert config_error(base).message == message


def test_nothing_to_run(base):
    error = config_error({**base, "do_train": False})
    assert error.message == "do_train, do_eval and do_predict are all false: there is nothing to run."


def test_quantization_needs_lora(base):
    error = config_error({**base, "finetuning_type": "full", "quantization_bit": 4})
    assert error.message == "quantization_bit=4 needs finetuning_type lora (QLoRA), not finetuning_type=full."


def test_predict_with_generate_needs_sft(base):
    error = config_error({**base, "stage": "pt", "predict_with_generate": True})
    assert error.message == "predict_with_generate needs stage sft, not stage=pt."


def test_remove_unused_columns_true_is_refused(base):
    assert config_error({**base, "remove_unused_columns": True}).message == (
        "remove_unused_columns=True is not supported."
    )


def test_output_dir_holding_a_run_is_refused_without_overwrite(base, tmp_path):
    out = tmp_path / "out"
    (out / "checkpoint-10").mkdir(parents=True)
    (out / "checkpoint-10" / "trainer_state.json").write_text('{"global_step": 10}')  # a complete checkpoint
    (out / "adapter_config.json").write_text("{}")
    error = config_error(base)
    assert error.message == f"output_dir={out} already holds files (adapter_config.json, checkpoint-10)."
    assert "overwrite_output_dir: true" in error.hint and "resume_from_checkpoint" in error.hint

    _, _, training_args, finetuning_args, _ = get_train_args({**base, "overwrite_output_dir": True})
    assert finetuning_args.overwrite_output_dir is True and training_args.output_dir == str(out)
    checkpoint = str(out / "checkpoint-10")
    _, _, training_args, _, _ = get_train_args({**base, "resume_from_checkpoint": checkpoint})
    assert training_args.resume_from_checkpoint == checkpoint


def test_missing_checkpoint_to_resume(base, tmp_path):
    missing = tmp_path / "out" / "checkpoint-5"
    error = config_error({**base, "resume_from_checkpoint": str(missing)})
    assert error.message == f"resume_from_checkpoint={missing} does not exist."


def test_output_dir_that_is_a_file(base, tmp_path):
    (tmp_path / "out").write_text("x")
    assert config_error(base).message == f"output_dir={tmp_path / 'out'} is a file, not a folder."


def test_validation_writes_nothing(base, tmp_path):
    get_train_args(base)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "extra, module, needed_for, pip_name",
    [({"attn_implementation": "flash_attention_2"}, "flash_attn", "attn_implementation: flash_attention_2",
      "flash-attn"),
     ({"quantization_bit": 4}, "bitsandbytes", "quantization_bit: 4", "bitsandbytes"),
     ({"deepspeed": str(Path(__file__).resolve().parents[2] / "configs" / "deepspeed" / "ds_z2.json")}, "deepspeed",
      "the deepspeed option", "deepspeed"),
     ({"report_to": "wandb"}, "wandb", "report_to: wandb", "wandb"),
     ({"report_to": "none,tensorboard"}, "tensorboard", "report_to: tensorboard", "tensorboard")],
)
def test_missing_optional_packages_name_the_pip_package(base, monkeypatch, extra, module, needed_for, pip_name):
    monkeypatch.setattr(env, "is_package_available", lambda name: name != module)
    with pytest.raises(DependencyError) as info:
        get_train_args({**base, **extra})
    assert info.value.message == f"`{module}` is needed for {needed_for}."
    assert info.value.hint == f"Install it with: pip install {pip_name}"


def test_missing_deepspeed_config_file(base, monkeypatch):
    monkeypatch.setattr(env, "is_package_available", lambda name: True)
    assert config_error({**base, "deepspeed": "nope.json"}).message == "deepspeed=nope.json does not exist."


def test_mixed_precision_on_cpu_only_warns(base, monkeypatch):
    warnings = []
    monkeypatch.setattr(parser, "has_cuda", lambda: False)
    monkeypatch.setattr(parser.logger, "warning", warnings.append)
    _, _, training_args, _, _ = get_train_args({**base, "bf16": True})
    assert training_args.bf16 is True and training_args.use_cpu is True
    assert warnings == ["bf16/fp16 requested but no CUDA GPU was found: mixed precision on CPU is slow."]


# ---- run_args.yaml ----

def test_run_args_yaml_round_trips(base, tmp_path):
    args = {**base, "lora_rank": "4", "learning_rate": "1e-4", "logging_steps": 3, "lora_target": "q_proj,v_proj",
            "default_system": "你是一个有用的助手。", "lr_scheduler_type": "cosine"}
    parsed = get_train_args(args)
    path = save_run_args(str(tmp_path / "saved"), read_args(args), parsed)
    assert path == tmp_path / "saved" / "run_args.yaml"
    text = path.read_text(encoding="utf-8")
    assert "lora_rank: 4\n" in text and "learning_rate: 0.0001\n" in text and "你是一个有用的助手。" in text
    assert "finetuning_type: lora\n" in text and "do_train: true\n" in text  # main values, though not set
    assert "adam_beta1" not in text and "use_cpu" not in text
    keys = list(yaml.safe_load(text))
    assert keys.index("model_name_or_path") < keys.index("template") < keys.index("lora_rank") < keys.index("seed")
    reparsed = get_train_args([str(path)])
    for before, after in zip(parsed, reparsed):
        assert dataclasses.asdict(before) == dataclasses.asdict(after)


def test_run_args_written_on_the_main_process_only(base, tmp_path, monkeypatch):
    parsed = get_train_args(base)
    monkeypatch.setenv("RANK", "1")
    path = save_run_args(str(tmp_path / "saved"), base, parsed)
    assert path == tmp_path / "saved" / "run_args.yaml" and not path.exists()


# ---- get_infer_args ----

def test_infer_args():
    model_args, data_args, finetuning_args, generating_args = get_infer_args(
        ["--model_name_or_path", "/m", "--adapter_name_or_path", "/a1,/a2", "template=qwen", "temperature=0.5"]
    )
    assert model_args.adapter_name_or_path == ["/a1", "/a2"] and data_args.template == "qwen"
    assert generating_args.temperature == 0.5 and finetuning_args.finetuning_type == "lora"


def test_infer_args_refuse_unknown_and_training_keys():
    with pytest.raises(ConfigError) as info:
        get_infer_args({"model_name_or_path": "/m", "temprature": 0.5, "output_dir": "x"})
    assert info.value.message == (
        "Unknown arguments: temprature (did you mean temperature or template?), "
        "output_dir (did you mean overwrite_output_dir?)."
    )
    with pytest.raises(ConfigError, match="model_name_or_path is not set."):
        get_infer_args({"template": "qwen"})


def test_yaml_one_one_boolean_words_stay_text_on_the_command_line():
    from llmtuner.hparams.parser import read_args

    assert read_args(["save_strategy=no", "do_train=true", "bf16=False"]) == {
        "save_strategy": "no", "do_train": True, "bf16": False,
    }


# ---- deprecated names and where a key came from ----

def test_old_flag_names_are_accepted_with_a_warning(monkeypatch):
    from llmtuner.hparams.convert import resolve_aliases

    warnings = []
    monkeypatch.setattr("llmtuner.extras.logging.logging.Logger.warning", lambda self, message: warnings.append(message))
    assert resolve_aliases({"export_overwrite": True}) == {"overwrite_export_dir": True}
    assert warnings == ["export_overwrite is deprecated: it is now called overwrite_export_dir (same meaning)."]
    with pytest.raises(ConfigError, match="Both export_overwrite and overwrite_export_dir are set."):
        resolve_aliases({"export_overwrite": True, "overwrite_export_dir": False})


def test_an_unknown_key_in_a_yaml_file_names_the_file_and_line(tmp_path):
    config = tmp_path / "cfg.yaml"
    config.write_text("model_name_or_path: m\n# the learning rate\nlerning_rate: 1.0e-4\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        get_train_args([str(config), "lora_rnak=4"])
    assert info.value.message == (f"Unknown arguments: lerning_rate (did you mean learning_rate?) (set in {config}, "
                                  "line 3), lora_rnak (did you mean lora_rank or local_rank?) (set on the command line).")
