"""Curriculum learning on the tiny model: stage folders, weights carried from stage to stage, the summary and the
combined loss plot, skipping finished stages, and the config errors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from llmtuner.extras.errors import ConfigError, DatasetError
from llmtuner.train.curriculum import split_curriculum
from llmtuner.cli import run_config as run_exp  # the entry layer routes curriculum / stage eval configs

from .conftest import train_args

STAGES = [
    {"name": "sums", "tasks": ["add"], "data_ratio": 0.5, "epochs": 1},
    {"name": "both", "tasks": ["add", "echo"], "data_ratio": 0.25, "epochs": 1, "learning_rate": 5e-3},
]


class AdapterAtStart(TrainerCallback):
    """The trainable LoRA weights (in their saved form) as each run's training begins."""

    def __init__(self) -> None:
        self.snapshots: list[dict[str, torch.Tensor]] = []

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        from peft import get_peft_model_state_dict

        self.snapshots.append({key: value.detach().clone() for key, value in get_peft_model_state_dict(model).items()})


def _log(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / "trainer_log.jsonl").read_text(encoding="utf-8").splitlines()]


@pytest.mark.slow
def test_stages_resume_each_other_and_a_rerun_skips_them(tiny_qwen2_dir, two_tasks, tmp_path):
    out = tmp_path / "curriculum"
    config = {**train_args(tiny_qwen2_dir, two_tasks, out), "curriculum": {"stages": STAGES}}
    capture = AdapterAtStart()
    summary = run_exp(config, callbacks=[capture])  # `llmtuner train` on a config with a curriculum block
    first, second = out / "stage_1_sums", out / "stage_2_both"

    # stage 2 starts from exactly the adapter stage 1 saved, and trains it further
    saved_first = load_file(first / "adapter_model.safetensors")
    assert len(capture.snapshots) == 2 and capture.snapshots[1].keys() == saved_first.keys()
    assert all(torch.equal(capture.snapshots[1][key], saved_first[key]) for key in saved_first)
    assert not all(torch.equal(capture.snapshots[0][key], saved_first[key]) for key in saved_first)
    saved_second = load_file(second / "adapter_model.safetensors")
    assert any(not torch.equal(saved_second[key], saved_first[key]) for key in saved_first)

    # each stage trained on its own tasks, share of the data, epochs and learning rate
    stages = summary["stages"]
    assert [(s["name"], s["tasks"], s["samples"], s["steps"], s["status"]) for s in stages] == [
        ("sums", ["add"], 12, 3, "trained"), ("both", ["add", "echo"], 12, 3, "trained")]
    assert max(row["learning_rate"] for row in _log(second) if "learning_rate" in row) <= 5e-3
    assert max(row["learning_rate"] for row in _log(first) if "learning_rate" in row) > 5e-3
    assert "dataset:\n- add\n- echo\n" in (second / "run_args.yaml").read_text(encoding="utf-8")
    written = json.loads((out / "curriculum_summary.json").read_text(encoding="utf-8"))
    assert written == json.loads(json.dumps(summary))
    assert written["total_steps"] == 6
    for stage in written["stages"]:
        assert stage["final_loss"] == _log(out / f"stage_{stage['stage']}_{stage['name']}")[-2]["loss"]
        assert stage["tokens"] > 0 and stage["train_time_s"] > 0
    assert (out / "curriculum_loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # a rerun trains nothing; an unfinished stage (no record) trains again from the finished one before it
    mtime = (first / "adapter_model.safetensors").stat().st_mtime_ns
    again = run_exp(config)
    assert [stage["status"] for stage in again["stages"]] == ["skipped", "skipped"]
    assert again["stages"][1]["final_loss"] == stages[1]["final_loss"]
    (second / "series_run.json").unlink()
    capture = AdapterAtStart()
    restarted = run_exp(config, callbacks=[capture])
    assert [stage["status"] for stage in restarted["stages"]] == ["skipped", "trained"]
    assert (first / "adapter_model.safetensors").stat().st_mtime_ns == mtime
    assert all(torch.equal(capture.snapshots[0][key], saved_first[key]) for key in saved_first)

    # other settings for a finished stage are refused, not mixed in
    with pytest.raises(ConfigError) as info:
        run_exp({**config, "lora_dropout": 0.1})
    assert info.value.message.startswith(f"Curriculum stage 1 (sums) in {first} already finished with other settings")
    assert "lora_dropout: None -> 0.1" in info.value.message


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ([], "`curriculum:` must hold a non-empty list of `stages`."),
        ({"stages": [{"name": "a", "tasks": []}]}, "curriculum stage 1 (a) has tasks=[]."),
        ({"stages": [{"name": "a/b", "tasks": ["x"]}]}, "curriculum stage 1 has name='a/b'."),
        ({"stages": [{"name": "a", "tasks": ["x"], "ratio": 1}]}, "Unknown key in curriculum stage 1: ratio (did you mean data_ratio?)."),
        ({"stages": [{"name": "a", "tasks": ["x"], "data_ratio": 0}]},
         "curriculum stage 1 (a): data_ratio=0 is not a positive number."),
        ({"stages": [{"name": "a", "tasks": "x"}, {"name": "a", "tasks": "y"}]},
         "Curriculum stage name(s) used twice: a."),
        ({"task_key": "tasks", "stages": [{"name": "a", "tasks": ["x"]}]},
         "curriculum task_key='tasks' is not a valid value."),
    ],
)
def test_bad_curriculum_blocks(block, message):
    with pytest.raises(ConfigError) as info:
        split_curriculum({"output_dir": "out", "curriculum": block})
    assert info.value.message == message


def test_every_stage_is_validated_before_the_first_trains(tiny_qwen2_dir, two_tasks, tmp_path):
    out = tmp_path / "out"
    config = {**train_args(tiny_qwen2_dir, two_tasks, out), "num_train_epochs": 1}
    # a misspelt task of the last stage fails before the first stage trains
    stages = [{"name": "ok", "tasks": ["add"]}, {"name": "typo", "tasks": ["add", "ecko"]}]
    with pytest.raises(DatasetError) as info:
        run_exp({**config, "curriculum": {"stages": stages}})
    assert info.value.message.startswith("Dataset 'ecko' is not registered")
    stages = [{"name": "ok", "tasks": ["add"]}, {"name": "dims", "tasks": ["add"]}]
    with pytest.raises(ConfigError) as info:
        run_exp({**config, "curriculum": {"task_key": "scoring_dimensions", "stages": stages}, "dataset": "add"})
    assert info.value.message == ("scoring_dimensions=add is set, but none of the datasets (add) is a scoring "
                                  "dataset.")
    with pytest.raises(ConfigError) as info:
        run_exp({**config, "curriculum": {"stages": stages}, "lora_rnak": 4})
    assert "lora_rnak" in info.value.message
    assert not out.exists()


def test_a_stage_s_args_apply_to_it_alone_and_the_command_line_wins():
    from llmtuner.hparams.reader import read_args
    from llmtuner.train.curriculum import stage_args

    block = {"task_key": "dataset", "stages": [
        {"name": "sft", "tasks": ["a"]},
        {"name": "rl", "tasks": ["a"], "args": {"stage": "grpo", "max_completion_length": 64, "num_generations": 4}}]}
    raw = read_args({"output_dir": "out", "curriculum": block})
    raw.update(max_completion_length=16)
    raw.origins["max_completion_length"] = "on the command line"  # as read_args marks a key=value override
    task_key, stages, base = split_curriculum(raw)
    first, second = (stage_args(base, task_key, stages, position) for position in (1, 2))
    assert "stage" not in first and first["max_completion_length"] == 16
    assert (second["stage"], second["num_generations"], second["max_completion_length"]) == ("grpo", 4, 16)
    assert second["adapter_name_or_path"].endswith("stage_1_sft")


@pytest.mark.parametrize(("args", "message"), [
    ("grpo", "has args='grpo'"),
    ({"output_dir": "x"}, "sets output_dir in args, but the curriculum sets it for each stage"),
])
def test_bad_stage_args(args, message):
    block = {"stages": [{"name": "a", "tasks": ["x"], "args": args}]}
    with pytest.raises(ConfigError, match=message):
        split_curriculum({"output_dir": "out", "curriculum": block})
