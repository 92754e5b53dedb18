"""Output a user can act on: no warning about other libraries' internals, no "trainable params" where nothing trains."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from llmtuner.extras.logging import (
    quiet_trl_gradient_checkpointing_reads,
    quiet_unused_bitsandbytes,
    quiet_unused_deepspeed,
)
from llmtuner.hparams import FinetuningArguments, ModelArguments
from llmtuner.model import load_model, load_tokenizer

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.mark.parametrize("is_trainable", [True, False], ids=["train", "inference"])
def test_loading_logs_trainable_params_only_for_training_and_no_peft_future_warning(
        tiny_qwen2_dir, llmtuner_logs, is_trainable):
    model_args = ModelArguments(model_name_or_path=tiny_qwen2_dir)
    tokenizer = load_tokenizer(model_args)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_model(tokenizer, model_args, FinetuningArguments(finetuning_type="lora"), is_trainable)
    assert not [w for w in caught if "is_gradient_checkpointing" in str(w.message)]
    assert ("trainable params:" in llmtuner_logs.text) is is_trainable
    assert ("all params:" in llmtuner_logs.text)


@pytest.mark.parametrize(("argv", "shown"), [(["train", "cfg.yaml"], False),
                                             (["train", "cfg.yaml", "deepspeed=ds_z3.json"], True)])
def test_deepspeeds_cpu_banner_is_dropped_unless_deepspeed_is_asked_for(argv, shown, monkeypatch):
    deepspeed_logger = logging.getLogger("DeepSpeed")
    monkeypatch.setattr(deepspeed_logger, "filters", [])
    monkeypatch.delenv("LOCAL_SIZE", raising=False)
    quiet_unused_deepspeed(argv)
    banner = logging.LogRecord("DeepSpeed", logging.WARNING, __file__, 1, "Setting accelerator to CPU. If you have "
                               "GPU or other accelerator, we were unable to detect it.", None, None)
    other = logging.LogRecord("DeepSpeed", logging.WARNING, __file__, 1, "something else", None, None)
    assert bool(deepspeed_logger.filter(banner)) is shown
    assert bool(deepspeed_logger.filter(other))



def test_accelerates_accumulation_notice_of_deepspeed_runs_is_dropped_and_nothing_else(monkeypatch):
    import inspect

    from accelerate import Accelerator

    from llmtuner.cli import prepare_process
    from llmtuner.extras.logging import ACCELERATE_LOGGER

    # The notice as accelerate words it, with transformers' plugin of 1 step (its Trainer accumulates itself).
    source = inspect.getsource(Accelerator._prepare_deepspeed)
    assert ('f"Gradient accumulation steps mismatch: GradientAccumulationPlugin has '
            '{self.gradient_accumulation_steps}, "') in source
    accelerate_logger = logging.getLogger(ACCELERATE_LOGGER)
    monkeypatch.setattr(accelerate_logger, "filters", [])

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord(ACCELERATE_LOGGER, logging.WARNING, __file__, 1, message, None, None)

    notice = record("Gradient accumulation steps mismatch: GradientAccumulationPlugin has 1, DeepSpeed config has 8. "
                    "Using DeepSpeed's value.")
    prepare_process(uses_deepspeed=False)
    assert accelerate_logger.filter(notice)  # only DeepSpeed runs get the filter
    prepare_process(uses_deepspeed=True)
    assert not accelerate_logger.filter(notice)
    assert accelerate_logger.filter(record("Gradient accumulation steps mismatch: GradientAccumulationPlugin has 4, "
                                           "DeepSpeed config has 8. Using DeepSpeed's value."))
    assert accelerate_logger.filter(record("something else"))

def _bitsandbytes_kernel_warning(logger_name: str = "bitsandbytes.backends.cpu.ops") -> logging.LogRecord:
    return logging.LogRecord(logger_name, logging.WARNING, __file__, 1, "Failed to load CPU gemm_4bit_forward from "
                             "kernels-community: No module named 'kernels'.", None, None)


@pytest.mark.parametrize(("argv", "shown"), [(["train", "cfg.yaml"], False),
                                             (["train", "cfg.yaml", "quantization_bit=4"], True)])
def test_bitsandbytes_cpu_kernel_warning_is_dropped_unless_a_run_quantizes(argv, shown, monkeypatch):
    kernel_logger = logging.getLogger("bitsandbytes.backends.cpu.ops")
    monkeypatch.setattr(kernel_logger, "filters", [])
    quiet_unused_bitsandbytes(argv)
    other = logging.LogRecord(kernel_logger.name, logging.WARNING, __file__, 1, "something else", None, None)
    assert bool(kernel_logger.filter(_bitsandbytes_kernel_warning())) is shown
    assert bool(kernel_logger.filter(other))


def test_a_config_file_that_quantizes_keeps_the_bitsandbytes_warning(tmp_path, monkeypatch):
    kernel_logger = logging.getLogger("bitsandbytes.backends.cpu.ops")
    monkeypatch.setattr(kernel_logger, "filters", [])
    config = tmp_path / "qlora.yaml"
    config.write_text("quantization_bit: 4\n", encoding="utf-8")
    quiet_unused_bitsandbytes(["train", str(config)])
    assert kernel_logger.filter(_bitsandbytes_kernel_warning())


def test_importing_the_training_path_loads_neither_peft_nor_bitsandbytes():
    """peft imports bitsandbytes (which logs its CPU kernel warning), so the model package imports peft only when
    an adapter is made; the Trainer's own peft import is covered by the entry layer's filter (above)."""
    code = ("import sys, llmtuner.model.loader, llmtuner.model.adapter, llmtuner.model.classifier, "
            "llmtuner.train.tuner; print(sorted(m for m in ('peft', 'bitsandbytes') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]"
    assert "gemm_4bit" not in done.stderr


def test_trls_gradient_checkpointing_read_is_hidden_and_nothing_else(monkeypatch):
    monkeypatch.setattr(warnings, "filters", list(warnings.filters))
    quiet_trl_gradient_checkpointing_reads()
    with warnings.catch_warnings(record=True) as caught:
        warnings.warn("`is_gradient_checkpointing` is deprecated and will be removed in v6.", FutureWarning)
        warnings.warn("something else is deprecated", FutureWarning)
    assert [str(w.message) for w in caught] == ["something else is deprecated"]


def test_a_predict_only_run_prints_no_training_example_or_counts(tiny_qwen2_dir, tmp_path, capsys, llmtuner_logs):
    from llmtuner.data.dataset import get_dataset
    from llmtuner.hparams.parser import get_train_args
    from llmtuner.train.trainer_utils import load_tokenizer_and_template

    model_args, data_args, training_args, _, _ = get_train_args({
        "model_name_or_path": tiny_qwen2_dir, "stage": "sft", "dataset": "sft_demo_zh_en", "dataset_dir": str(DATA),
        "eval_dataset": "sft_demo_zh_en", "max_samples": 4, "template": "qwen", "do_train": False, "do_eval": True,
        "output_dir": str(tmp_path)})
    tokenizer, template = load_tokenizer_and_template(model_args, data_args)
    get_dataset(template, tokenizer, data_args, training_args, stage="sft")
    assert "First training example" not in capsys.readouterr().out
    assert "train:" not in llmtuner_logs.text and "eval: 4 samples" in llmtuner_logs.text


def test_no_loss_plot_says_why_when_logging_steps_exceed_the_steps_run(tmp_path, llmtuner_logs):
    from llmtuner.extras.plotting import plot_loss

    state = {"global_step": 3, "logging_steps": 10, "log_history": [{"step": 3, "train_loss": 1.0}]}
    (tmp_path / "trainer_state.json").write_text(json.dumps(state), encoding="utf-8")
    assert plot_loss(str(tmp_path)) == []
    assert "logging_steps=10" in llmtuner_logs.text and "3 step(s)" in llmtuner_logs.text
