"""scripts/bench_grpo.py's core on the tiny model: two GRPO steps of llmtuner's grpo stage, timed and split; the
JSON and PNG it writes. No timing is asserted, only that the parts are there and add up to the step."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


@pytest.fixture
def bench_grpo(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(SCRIPTS))
    return importlib.import_module("bench_grpo")


def test_two_steps_split_into_parts_that_add_up(bench_grpo, tiny_qwen2_dir: str, tmp_path: Path) -> None:
    job = {**bench_grpo.plan_jobs(bench_grpo.parse_args(["--models", "tiny", "--rollouts", "transformers",
                                                          "--steps", "1", "--max_completion_length", "8"]))[0],
           "model_dir": tiny_qwen2_dir, "output_dir": str(tmp_path / "run")}
    assert job["warmup"] == 1 and job["num_generations"] == 4 and job["prompts_per_step"] == 1
    result = bench_grpo.measure(job, setup_process=False)  # warm-up step + one timed step

    assert len(result["warmup_step_seconds"]) == 1 and len(result["step_seconds"]) == 1
    parts = [result[f"{part}_s"] for part in ("generation", "reward", "update")]
    assert all(value > 0 for value in parts)
    assert sum(parts) <= result["step_s"] + 1e-9
    assert result["other_s"] >= 0 and sum(parts) + result["other_s"] == pytest.approx(result["step_s"])
    assert sum(result["share"].values()) == pytest.approx(1.0)
    assert result["mean"]["step"] == pytest.approx(sum(result["mean"][part] for part in bench_grpo.PARTS))
    assert result["spread"] >= 0 and isinstance(result["unsteady"], bool)
    for part, values in result["parts_per_step"].items():
        assert len(values) == 1, part
    # a random model never ends its turn: every completion runs to max_completion_length
    assert result["completion_tokens_per_step"] == 4 * 8 and result["completion_mean_length"] == 8
    assert result["prompt_tokens_per_step"] > 0 and result["reward_mean"] is not None
    assert 0 < result["trainable_parameters"] < result["parameters"]
    assert "model_dir" not in result and "output_dir" not in result
    assert (tmp_path / "run" / "adapter_config.json").is_file()  # run_grpo ran to the end: the adapter saved

    out = tmp_path / "bench" / "grpo.json"
    bench_grpo.write_results(out, {"vllm": bench_grpo.vllm_status()}, [result], bench_grpo.plot)
    written = json.loads(out.read_text())
    assert written["meta"]["vllm"] in ("installed", "not installed") and "load_average" in written["meta"]
    assert written["results"][0]["step_s"] == result["step_s"]
    assert out.with_suffix(".png").stat().st_size > 0
    bench_grpo.print_table([result])


def test_bad_arguments_exit_2(bench_grpo, capsys) -> None:
    assert bench_grpo.main(["--models", "tiny,qwen7b"]) == 2
    assert "qwen7b" in capsys.readouterr().err
    assert bench_grpo.main(["--num_generations", "0"]) == 2
