"""Data parallelism is exact: 2 processes (torchrun, gloo on CPU) with batch B train like 1 process with batch 2B."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from .conftest import TRAIN_ARGS, as_flags, free_port, launcher, losses, run_command

pytestmark = pytest.mark.slow  # multi-process training (torchrun, gloo)

DATA_DIR = Path(__file__).resolve().parents[2] / "data"
RUN_ARGS = {**TRAIN_ARGS, "finetuning_type": "lora", "max_steps": 4, "learning_rate": 1e-2,
            "lr_scheduler_type": "constant", "dataset_dir": str(DATA_DIR)}


def test_two_processes_match_one_process_with_double_batch(tiny_qwen2_dir, tmp_path, repo_root):
    from llmtuner.train.tuner import run_exp

    two = tmp_path / "ddp2"
    run_command([launcher("torchrun"), "--nproc_per_node", "2", "--master_port", str(free_port()),
                 "src/train_bash.py",
                 *as_flags({**RUN_ARGS, "model_name_or_path": tiny_qwen2_dir, "output_dir": two,
                            "per_device_train_batch_size": 2})], cwd=repo_root)
    one = tmp_path / "single"
    run_exp({**RUN_ARGS, "model_name_or_path": tiny_qwen2_dir, "output_dir": str(one),
             "per_device_train_batch_size": 4})

    two_losses, one_losses = losses(two), losses(one)
    assert sorted(two_losses) == sorted(one_losses) == [1, 2, 3, 4]
    # Same seed, same sample order, loss averaged over all trained tokens of the global batch in both runs.
    for step, loss in one_losses.items():
        assert two_losses[step] == pytest.approx(loss, rel=1e-5), (step, two_losses, one_losses)
    assert len(set(one_losses.values())) == 4, "each step saw other samples"
    # Adam divides by the gradient's running RMS, so a weight whose gradient is ~0 moves by up to lr either way on
    # float-summation noise; 1e-3 is 1/40 of the largest possible move (4 steps x lr 1e-2).
    two_adapter = load_file(two / "adapter_model.safetensors")
    for name, tensor in load_file(one / "adapter_model.safetensors").items():
        torch.testing.assert_close(two_adapter[name], tensor, atol=1e-3, rtol=0)
