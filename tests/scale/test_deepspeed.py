"""DeepSpeed on CPU with two processes: ZeRO-2 LoRA through run_sft.sh (deepspeed launcher), ZeRO-3 full tuning
through torchrun, and resuming that run from its ZeRO checkpoint through accelerate launch.

DeepSpeed 0.19.8 picks its CPU accelerator and gloo by itself; the parser sets use_cpu so that the Trainer counts
both processes. The configs without an "optimizer" section use the Trainer's torch AdamW, so no DeepSpeed op
needs compiling here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from llmtuner.extras.cpu_runtime import cpu_threads

from .conftest import PYTHON, TRAIN_ARGS, as_flags, free_port, launcher, losses, read_log, run_command

pytestmark = pytest.mark.slow  # DeepSpeed trainings in subprocesses

MAX_STEPS = 4


def test_zero2_lora_two_processes_via_run_sft_sh(tiny_qwen2_dir, tmp_path, repo_root):
    out = tmp_path / "zero2"
    config = tmp_path / "cfg.yaml"
    config.write_text(f"model_name_or_path: {tiny_qwen2_dir}\nfinetuning_type: lora\nplot_loss: true\n",
                      encoding="utf-8")
    overrides = {**TRAIN_ARGS, "output_dir": out, "max_steps": MAX_STEPS, "per_device_train_batch_size": 2,
                 "learning_rate": 1e-2}
    port = free_port()
    result = run_command(
        ["bash", "run_sft.sh", str(config), *(f"{key}={value}" for key, value in overrides.items())],
        cwd=repo_root,
        env={"NPROC": "2", "MASTER_PORT": str(port), "PYTHON": PYTHON,
             "PATH": f"{Path(PYTHON).parent}{os.pathsep}{os.environ.get('PATH', '')}",
             "HF_DATASETS_CACHE": str(tmp_path / "datasets-cache")},  # fresh, so rank 0 really tokenises
    )
    # The launcher picked deepspeed with the top-level ZeRO-2 config for 2 processes.
    assert (f"+ deepspeed --num_gpus 2 --master_port {port} src/train_bash.py {config} "
            "deepspeed=deepspeed_config.json") in result.stdout
    assert "dist_world_size=2" in result.stdout + result.stderr
    # Each of the 2 processes on this machine gets its share of the cores (the deepspeed launcher sets none).
    threads = max(1, cpu_threads() // 2)
    assert f"{threads} CPU thread(s) for each of the 2 local processes" in result.stderr

    adapter = load_file(out / "adapter_model.safetensors")
    assert any("lora_B" in key for key in adapter) and all(t.abs().sum() > 0 for t in adapter.values())
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 8
    # Global batch = 2 processes x 2 samples: 16 samples are 4 steps, one epoch.
    assert read_log(out)[-1]["epoch"] == 1.0
    assert sorted(losses(out)) == list(range(1, MAX_STEPS + 1))

    # Rank 0 alone prints, logs, plots and writes the config; rank 1 reads rank 0's tokenised cache (a second
    # "Tokenising" bar would mean it tokenised again).
    combined = result.stdout + result.stderr
    assert result.stdout.count("First training example") == 1
    assert result.stdout.count(f"Saved LoRA adapter to {out}") == 1
    assert combined.count("Tokenising (sft):   0%") == 1
    assert combined.count(f"0/{MAX_STEPS} [") == 1, "one training progress bar"
    assert combined.count("Loading weights:   0%") == 1, "one weight-loading bar"
    assert len(read_log(out)) == MAX_STEPS + 1, "one log line per step (+ the summary), not one per process"
    for name in ("run_args.yaml", "training_loss.png", "all_results.json"):
        assert (out / name).is_file(), name


ZERO3_ARGS = {**TRAIN_ARGS, "finetuning_type": "full", "deepspeed": "configs/deepspeed/ds_z3.json",
              "max_steps": MAX_STEPS, "save_steps": 2, "per_device_train_batch_size": 2, "learning_rate": 1e-3,
              "lr_scheduler_type": "linear"}


@pytest.fixture(scope="module")
def zero3_run(tiny_qwen2_dir, tmp_path_factory, repo_root) -> Path:
    """ZeRO-3 full tuning, 2 processes under torchrun, checkpoints at steps 2 and 4."""
    out = tmp_path_factory.mktemp("zero3") / "run"
    result = run_command([launcher("torchrun"), "--nproc_per_node", "2", "--master_port", str(free_port()),
                          "src/train_bash.py",
                          *as_flags({**ZERO3_ARGS, "model_name_or_path": tiny_qwen2_dir, "output_dir": out})],
                         cwd=repo_root)
    (out / "launch.log").write_text(result.stderr, encoding="utf-8")
    return out


def test_zero3_saves_the_gathered_weights(zero3_run, tiny_qwen2_dir):
    """model.safetensors holds the full trained weights, equal to what DeepSpeed held in its ZeRO-3 shards."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    saved = load_file(zero3_run / "model.safetensors")
    base = load_file(Path(tiny_qwen2_dir) / "model.safetensors")
    # DeepSpeed's own tool rebuilds the fp32 weights from the per-rank partitions of the last checkpoint.
    held = get_fp32_state_dict_from_zero_checkpoint(str(zero3_run / f"checkpoint-{MAX_STEPS}"))
    assert set(saved) == set(base)
    for name, tensor in saved.items():
        assert tensor.shape == base[name].shape, name  # not the empty per-rank stubs
        assert torch.equal(tensor, held[name]), name
        assert not torch.equal(tensor, base[name]), f"{name} was not trained"
    assert len(losses(zero3_run)) == MAX_STEPS
    # Each process holds empty stubs: sizes must come from DeepSpeed's ds_shape / ds_numel, or the embeddings look
    # empty (and get "resized") and the parameter count is wrong.
    log = (zero3_run / "launch.log").read_text(encoding="utf-8")
    assert "Resized the token embeddings" not in log
    total = sum(tensor.numel() for tensor in base.values())
    assert f"trainable params: {total:,} || all params: {total:,}" in log


def test_resume_from_a_zero3_checkpoint(zero3_run, tiny_qwen2_dir, tmp_path, repo_root):
    """Continuing from checkpoint-2 (accelerate launch, 2 processes) repeats steps 3-4 and the final weights."""
    out = tmp_path / "resumed"
    run_command([launcher("accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--main_process_port",
                  str(free_port()), "src/train_bash.py",
                  *as_flags({**ZERO3_ARGS, "model_name_or_path": tiny_qwen2_dir, "output_dir": out,
                             "resume_from_checkpoint": zero3_run / "checkpoint-2"})], cwd=repo_root)
    first, resumed = losses(zero3_run), losses(out)
    assert sorted(resumed) == [3, 4]
    for step in (3, 4):
        assert resumed[step] == pytest.approx(first[step], rel=1e-5), step
    expected = load_file(zero3_run / "model.safetensors")
    got = load_file(out / "model.safetensors")
    for name, tensor in expected.items():
        torch.testing.assert_close(got[name], tensor, atol=1e-6, rtol=1e-5)
