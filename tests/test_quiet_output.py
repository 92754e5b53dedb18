"""Output a user can act on: no warning about other libraries' internals, no "trainable params" where nothing trains."""

from __future__ import annotations

import logging
import warnings

import pytest

from llmtuner.extras.logging import quiet_unused_deepspeed
from llmtuner.hparams import FinetuningArguments, ModelArguments
from llmtuner.model import load_model, load_tokenizer


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
