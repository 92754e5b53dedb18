"""Fixtures of the evaluation tests: the shared benchmark files, a LoRA adapter on the tiny model and its merge."""

from __future__ import annotations

from pathlib import Path

import pytest

from ..e2e.conftest import run_cmd  # noqa: F401  (the e2e fixture that runs entry points offline)


@pytest.fixture(scope="session")
def benchmarks_dir(shared_dir: Path) -> Path:
    """../shared/benchmarks: MMLU, C-Eval, CMMLU and GSM8K in their original layouts (read-only)."""
    return shared_dir / "benchmarks"


@pytest.fixture(scope="session")
def lora_adapter_dir(tiny_qwen2_dir: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter for the tiny Qwen2 with random, non-zero A and B, so it changes the model's scores."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_qwen2_dir)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj", "down_proj"],
                        init_lora_weights=False)  # False: B is random too, not zeros
    out = tmp_path_factory.mktemp("eval-adapter")
    get_peft_model(model, config).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def merged_model_dir(tiny_qwen2_dir: str, lora_adapter_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Qwen2 with ``lora_adapter_dir`` merged into its weights (a standalone model folder)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_qwen2_dir)
    merged = PeftModel.from_pretrained(model, str(lora_adapter_dir)).merge_and_unload()
    out = tmp_path_factory.mktemp("eval-merged")
    merged.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_qwen2_dir).save_pretrained(out)
    return out
