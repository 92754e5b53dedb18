"""Every preset in configs/presets trains a couple of steps on the tiny model through the real entry points, and
the launchers list the presets when given an unknown name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from llmtuner.eval.forgetting import run_forgetting
from llmtuner.cli import run_config as run_exp  # the entry layer routes a preset with a curriculum: block

REPO = Path(__file__).resolve().parents[2]
PRESETS = REPO / "configs" / "presets"
# Small and fast: the presets' own settings otherwise (LoRA shapes, data, templates, curriculum, quantization).
QUICK = ["max_steps=2", "per_device_train_batch_size=1", "gradient_accumulation_steps=1", "cutoff_len=128",
         "logging_steps=1", "per_device_eval_batch_size=4", "report_to=none"]


def _run_preset(name: str, model: str, out: Path, *extra: str) -> dict:
    return run_exp([str(PRESETS / f"{name}.yaml"), f"model_name_or_path={model}", f"output_dir={out}", *QUICK, *extra])


def _launch(script: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHON": sys.executable,
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", **env}
    full_env.pop("NPROC", None)
    return subprocess.run(["bash", script, *args], cwd=REPO, env=full_env, capture_output=True, text=True,
                          timeout=900)


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["data_platform", "medical", "medical_qlora", "chinese_capability"])
def test_lora_presets_train(preset, tiny_qwen2_dir, tmp_path, request):
    out = tmp_path / preset
    metrics = _run_preset(preset, tiny_qwen2_dir, out)
    # The two steps logged, and the run's train_loss is their mean (the Trainer's average over the steps run).
    logged = [json.loads(line) for line in (out / "trainer_log.jsonl").read_text(encoding="utf-8").splitlines()]
    losses = {row["current_steps"]: row["loss"] for row in logged if "loss" in row}
    assert sorted(losses) == [1, 2]
    assert metrics["train_loss"] == pytest.approx(sum(losses.values()) / 2, rel=1e-3)
    assert 0 < metrics["eval_loss"] < 20  # a real cross-entropy of the tiny model (ln 151k vocabulary ~ 11.9)
    # The preset's own choices reached the run (only QUICK's settings were overridden).
    preset_args = yaml.safe_load((PRESETS / f"{preset}.yaml").read_text(encoding="utf-8"))
    run_args = yaml.safe_load((out / "run_args.yaml").read_text(encoding="utf-8"))
    for key in ("template", "learning_rate", "lora_rank", "stage"):
        assert run_args[key] == preset_args[key], key
    assert run_args["dataset"] == preset_args["dataset"].split(",")
    assert run_args["lora_target"] == ["all"]
    adapter = json.loads((out / "adapter_config.json").read_text())
    expected = {"data_platform": (8, 32, 0.1), "medical": (16, 32, 0.05), "medical_qlora": (16, 32, 0.05),
                "chinese_capability": (8, 16, 0.05)}[preset]
    assert (adapter["r"], adapter["lora_alpha"], adapter["lora_dropout"]) == expected
    assert len(adapter["target_modules"]) == 7  # all linear layers of the decoder
    weights = load_file(out / "adapter_model.safetensors")
    assert any("lora_B" in key and tensor.abs().sum() > 0 for key, tensor in weights.items())
    if preset == "medical_qlora":
        assert "quantization_bit: 4" in (out / "run_args.yaml").read_text(encoding="utf-8")
    if preset == "chinese_capability":  # the before/after forgetting check of the preset, on real C-Eval files
        shared = request.getfixturevalue("shared_dir")  # real C-Eval files: skips on a fresh clone
        report_dir = tmp_path / "forgetting"
        report = run_forgetting([str(PRESETS / "eval" / "chinese_capability_forgetting.yaml"),
                                 f"model_name_or_path={tiny_qwen2_dir}", f"adapter_name_or_path={out}", "task=ceval",
                                 f"task_dir={shared / 'benchmarks'}", "subjects=accountant",
                                 "max_samples=4", "n_shot=1", "batch_size=4", f"save_dir={report_dir}"])
        overall = report["tasks"]["ceval"]["overall"]
        assert overall["total"] == 4 and overall["delta"] == pytest.approx(overall["after"] - overall["before"])
        for name in ("forgetting.json", "forgetting.md", "radar.png"):
            assert (report_dir / name).is_file(), name


@pytest.mark.slow
def test_risk_scoring_preset_runs_its_curriculum(tiny_qwen2_dir, tmp_path):
    out = tmp_path / "risk"
    summary = _run_preset("risk_scoring", tiny_qwen2_dir, out)
    assert [(stage["name"], stage["status"], stage["steps"]) for stage in summary["stages"]] == [
        ("basic_scoring", "trained", 2), ("intermediate_scoring", "trained", 2), ("full_scoring", "trained", 2)]
    # 8 training companies (2 held out): 30%, 60% and all of them, one multi-dimension prompt each
    assert [stage["samples"] for stage in summary["stages"]] == [2, 5, 8]
    assert json.loads((out / "stage_3_full_scoring" / "adapter_config.json").read_text())["r"] == 64
    assert (out / "curriculum_loss.png").is_file() and (out / "curriculum_summary.json").is_file()


@pytest.mark.slow
def test_full_tuning_preset_with_deepspeed_through_run_sft_sh(tiny_qwen2_dir, tmp_path):
    out = tmp_path / "full"
    result = _launch("run_sft.sh", "medical_full", f"model_name_or_path={tiny_qwen2_dir}", f"output_dir={out}", *QUICK)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"+ {sys.executable} src/train_bash.py {PRESETS / 'medical_full.yaml'} " in result.stdout
    assert "deepspeed: configs/deepspeed/ds_z3.json" in (out / "run_args.yaml").read_text(encoding="utf-8")
    assert (out / "model.safetensors").is_file() and f"Saved model to {out}" in result.stdout


@pytest.mark.slow
def test_pt_preset_through_run_pt_sh(tiny_qwen2_dir, tmp_path):
    out = tmp_path / "pt"
    result = _launch("run_pt.sh", "medical", f"model_name_or_path={tiny_qwen2_dir}", f"output_dir={out}", *QUICK)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"src/train_bash.py {PRESETS / 'medical_pt.yaml'} " in result.stdout
    assert "stage: pt" in (out / "run_args.yaml").read_text(encoding="utf-8")
    assert (out / "adapter_model.safetensors").is_file()


def test_unknown_preset_lists_the_presets():
    result = _launch("run_sft.sh", "medicl")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"error: unknown preset 'medicl' for stage sft (no {PRESETS / 'medicl.yaml'}).",
        "hint: available presets: chinese_capability chinese_capability_replay data_platform data_platform_grpo "
        "gsm8k_grpo medical medical_dpo medical_full medical_kto medical_qlora medical_rm risk_scoring "
        "risk_scoring_grpo; or pass a path to a YAML config.",
    ]
    result = _launch("run_pt.sh", "nosuch")
    assert result.returncode == 2 and "hint: available presets: medical;" in result.stderr
