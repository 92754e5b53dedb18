"""The CLI layer: sweep routing, error origins, one validation per run, process state, packages checked first."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmtuner import cli

REPO = Path(__file__).resolve().parents[1]
HIDE = REPO / "tests" / "reliability" / "hide_packages"


def _cli(*args: str, hide: str = "", cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "LLMTUNER_DEBUG"}
    env["HF_HUB_OFFLINE"] = "1"
    if hide:
        env["LLMTUNER_TEST_HIDE"] = hide
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HIDE), env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "llmtuner.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def _sft_config(path: Path, model_dir: Path, out: Path, **extra) -> Path:
    config = {"model_name_or_path": str(model_dir), "stage": "sft", "finetuning_type": "lora", "template": "qwen",
              "dataset": "sft_demo_zh_en", "dataset_dir": str(REPO / "data"), "cutoff_len": 64, "max_samples": 6,
              "val_size": 2, "output_dir": str(out), "per_device_train_batch_size": 2, "max_steps": 1,
              "save_strategy": "no", "report_to": "none", **extra}
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


def test_sweep_with_param_reaches_the_parameter_sweep(tiny_qwen2_dir, tmp_path):
    cfg = _sft_config(tmp_path / "cfg.json", tiny_qwen2_dir, tmp_path / "out")
    result = _cli("sweep", str(cfg), "--param", "lora_rank", "--values", "4,big", "--metric", "general/overall")
    assert result.returncode == 2, result.stderr
    assert "lora_rank='big' has the wrong type" in result.stderr and "--param lora_rank" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_grid_sweep_through_the_cli_trains_every_combination(tiny_qwen2_dir, tmp_path):
    out = tmp_path / "grid"
    cfg = _sft_config(tmp_path / "cfg.json", tiny_qwen2_dir, out)
    result = _cli("sweep", str(cfg), "--param", "lora_rank", "--values", "2,4", "--param", "learning_rate",
                  "--values", "1e-3,1e-2")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "sweep.json").read_text(encoding="utf-8"))
    assert report["params"] == ["lora_rank", "learning_rate"] and report["metric"] == "eval_loss"
    assert [run["label"] for run in report["runs"]] == [
        "lora_rank_2__learning_rate_1e-3", "lora_rank_2__learning_rate_1e-2",
        "lora_rank_4__learning_rate_1e-3", "lora_rank_4__learning_rate_1e-2"]
    params = [run["trainable_params"] for run in report["runs"]]
    assert params[0] == params[1] and params[2] == params[3] == 2 * params[0]  # LoRA size ~ rank
    assert all(run["metrics"]["eval_loss"] > 0 for run in report["runs"])


def test_a_bad_value_names_its_file_and_line(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("model_name_or_path: models/tiny-qwen2\nstage: sft\nlora_rank: big\noutput_dir: out\n",
                   encoding="utf-8")
    result = _cli("train", "cfg.yaml", cwd=tmp_path)
    assert result.returncode == 2
    assert "(set in cfg.yaml, line 3)" in result.stderr.splitlines()[0], result.stderr


def test_train_checks_the_rules_once(tiny_qwen2_dir, tmp_path, monkeypatch):
    from llmtuner.hparams import parser, rules
    from llmtuner.train import sft

    calls = []
    real = rules.check_args
    monkeypatch.setattr(parser, "check_args", lambda settings: (calls.append(1), real(settings))[1])
    monkeypatch.setattr(sft, "run_sft", lambda *args: {"done": 1})
    monkeypatch.setattr(cli, "prepare_training_process", lambda args: None)
    cfg = _sft_config(tmp_path / "cfg.json", tiny_qwen2_dir, tmp_path / "out")
    assert cli.main(["train", str(cfg)]) == 0
    assert len(calls) == 1


_THREADS_PROBE = """
import json, os
import torch
before = torch.get_num_threads()  # torch counts the cores when it is imported
os.sched_setaffinity(0, {0})  # from now on this process may use one CPU
from llmtuner.cli import prepare_training_process
prepare_training_process({"use_cpu": True})
print(json.dumps({"before": before, "after": torch.get_num_threads()}))
"""


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs a machine with 2 CPUs or more")
def test_prepare_process_gives_torch_the_usable_cores():
    env = {key: value for key, value in os.environ.items() if key != "OMP_NUM_THREADS"}
    done = subprocess.run([sys.executable, "-c", _THREADS_PROBE], env=env, capture_output=True, text=True,
                          timeout=300, check=True)
    threads = json.loads(done.stdout.strip().splitlines()[-1])
    assert threads["before"] >= 2 and threads["after"] == 1


def test_api_without_the_serve_extra_names_every_missing_package(tiny_qwen2_dir):
    result = _cli("api", f"model_name_or_path={tiny_qwen2_dir}", "template=qwen", hide="fastapi,uvicorn,torch")
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines()[-1].startswith("hint: Install them with: pip install fastapi uvicorn")
    assert "Traceback" not in result.stderr


def test_api_refuses_a_busy_port_before_loading(tiny_qwen2_dir):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = _cli("api", f"model_name_or_path={tiny_qwen2_dir}", "template=qwen", f"api_port={port}",
                      hide="safetensors")  # loading the weights would fail: the port must be refused first
    assert result.returncode == 2, result.stderr
    assert f"error: Cannot listen on 127.0.0.1:{port}" in result.stderr


def test_labelled_predict_and_scoring_test_check_metrics_packages_first(tiny_qwen2_dir, tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"text": "a", "label": "x"}\n', encoding="utf-8")
    predict = _cli("predict", f"model_name_or_path={tiny_qwen2_dir}", f"input_file={rows}",
                   f"output_file={tmp_path / 'out.jsonl'}", hide="sklearn,torch")
    assert predict.returncode == 2 and "pip install scikit-learn" in predict.stderr, predict.stderr
    assert not (tmp_path / "out.jsonl").exists()
    scoring = _cli("test", f"model_name_or_path={tiny_qwen2_dir}", "template=qwen",
                   "test_dataset=risk_scoring_test", f"save_dir={tmp_path / 'report'}", hide="scipy,torch")
    assert scoring.returncode == 2 and "pip install scipy" in scoring.stderr, scoring.stderr
    assert not (tmp_path / "report").exists()


def test_predict_refuses_an_existing_output_file_before_loading(tiny_qwen2_dir, tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"text": "a"}\n', encoding="utf-8")
    existing = tmp_path / "out.jsonl"
    existing.write_text("keep\n", encoding="utf-8")
    result = _cli("predict", f"model_name_or_path={tiny_qwen2_dir}", f"input_file={rows}",
                  f"output_file={existing}", hide="safetensors")
    assert result.returncode == 2 and "already exists" in result.stderr, result.stderr
    assert existing.read_text(encoding="utf-8") == "keep\n"


def test_every_stage_is_listed_in_the_train_summary():
    summary = cli.COMMANDS["train"][0]
    assert all(stage in summary for stage in ("pt", "sft", "cls", "dpo", "kto", "rm"))


def test_run_args_record_the_evaluation_that_val_size_implies(tiny_qwen2_dir, tmp_path):
    import yaml

    from llmtuner.hparams.parser import get_train_args, read_args, save_run_args

    out = tmp_path / "out"
    out.mkdir()
    args = read_args([str(_sft_config(tmp_path / "cfg.json", tiny_qwen2_dir, out))])  # val_size, no do_eval
    path = save_run_args(str(out), args, get_train_args(args))
    recorded = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert recorded["do_eval"] is True and recorded["do_train"] is True  # a resume from it evaluates too
