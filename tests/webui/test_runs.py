"""Runs started by the UI: a training subprocess stopped gracefully (checkpoint) and resumed from it."""

from __future__ import annotations

import json
import time

import pytest

from llmtuner.extras.errors import ConfigError
from llmtuner.webui import config as cfg
from llmtuner.webui.runs import RunManager

pytestmark = pytest.mark.slow


def _wait(condition, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and not condition():
        time.sleep(0.5)


def test_stop_saves_a_checkpoint_and_resume_continues(tiny_qwen2_dir, repo_root, tmp_path):
    manager = RunManager(tmp_path / "runs", repo_root)
    output_dir = tmp_path / "out"
    form = {**cfg.DEFAULT_FORM, "model_name_or_path": tiny_qwen2_dir, "dataset": ["sft_demo_zh_en"],
            "output_dir": str(output_dir), "max_steps": 400, "logging_steps": 1, "save_steps": 1000,
            "max_samples": 16, "cutoff_len": 128}
    config = cfg.build_train_config(form)
    run = manager.start(config)
    with pytest.raises(ConfigError, match="still training"):  # one folder, one run at a time
        manager.start({**config, "overwrite_output_dir": True})
    _wait(lambda: run.loss_rows() or run.process.poll() is not None)
    assert run.loss_rows(), run.console_tail()
    run.stop()
    run.process.wait(300)
    assert run.status == "stopped", run.console_tail()
    checkpoints = sorted(output_dir.glob("checkpoint-*"))
    assert checkpoints, run.console_tail()
    stopped_at = int(checkpoints[-1].name.split("-")[1])
    assert 0 < stopped_at < 400

    # Without resume or overwrite the folder is refused, as by the CLI; with resume it continues from the checkpoint.
    assert cfg.check_train_config(config)[0] == "output"
    resumed_config = cfg.build_train_config({**form, "max_steps": stopped_at + 2, "resume": True})
    assert cfg.check_train_config(resumed_config) is None
    resumed = manager.start(resumed_config)
    resumed.process.wait(300)
    assert resumed.status == "finished", resumed.console_tail()
    steps = [json.loads(line)["current_steps"] for line in (output_dir / "trainer_log.jsonl").read_text().splitlines()]
    assert steps[-1] == stopped_at + 2 and steps == sorted(steps)
    assert [row[1] for row in manager.table()] == ["finished", "stopped"]
