"""Contexts of the doctor for small configs on the session's tiny models (no model weights load: the row checks
read the tokenizer and the data only)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

from llmtuner.train.doctor.report import DoctorContext
from llmtuner.train.doctor.runner import build_context

REPO_ROOT = Path(__file__).resolve().parents[2]


def sft_args(model_dir: str, output_dir: Path, **overrides: Any) -> dict[str, Any]:
    """The default job's settings (configs/sft_lora_tiny.yaml) on a tiny model, as a dict."""
    return {"model_name_or_path": model_dir, "stage": "sft", "finetuning_type": "lora", "template": "qwen",
            "dataset": "sft_demo_zh_en", "dataset_dir": str(REPO_ROOT / "data"), "cutoff_len": 512,
            "output_dir": str(output_dir), **overrides}


@pytest.fixture
def doctor_context(tiny_qwen2_dir: str, tmp_path: Path) -> Callable[..., DoctorContext]:
    """``doctor_context(rows=8, **overrides)``: the context of the default job on the tiny Qwen2 model."""

    def build(rows: int = 8, model_dir: str = tiny_qwen2_dir, **overrides: Any) -> DoctorContext:
        context, _ = build_context(sft_args(model_dir, tmp_path / "run", **overrides), rows=rows)
        return context

    return build
