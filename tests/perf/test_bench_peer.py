"""scripts/bench_peer.py's pure logic: the two tools' configs of one job, and the summary's spread and ratios.
No LLaMA-Factory install and no training here."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


@pytest.fixture(scope="module")
def bench_peer():
    sys.path.insert(0, str(SCRIPTS))
    try:
        yield importlib.import_module("bench_peer")
    finally:
        sys.path.remove(str(SCRIPTS))


def job(mode: str = "packed", checkpointing: str = "off") -> dict:
    return {"model_dir": "/m", "dataset_dir": "/d", "cutoff_len": 256, "batch": 4, "steps": 30, "mode": mode,
            "gradient_checkpointing": checkpointing, "output_dir": "/o"}


def test_both_sides_get_equal_values_and_their_own_packing_and_checkpointing_keys(bench_peer) -> None:
    peer, ours = bench_peer.side_config("llamafactory", job()), bench_peer.side_config("llmtuner", job())
    shared = bench_peer.shared_values(job())
    assert {key: peer[key] for key in shared} == shared == {key: ours[key] for key in shared}
    assert peer["packing"] is True and peer["neat_packing"] is True and "neat_packing" not in ours
    assert (peer["max_steps"], peer["per_device_train_batch_size"], peer["learning_rate"]) == (30, 4, 1e-3)
    assert peer["include_effective_tokens_per_second"] is True and peer["do_train"] is True
    assert peer["disable_gradient_checkpointing"] is True and ours["activation_checkpointing"] is False

    on_peer, on_ours = (bench_peer.side_config(side, job("unpacked", "on")) for side in bench_peer.SIDES)
    assert on_peer["disable_gradient_checkpointing"] is False and on_ours["activation_checkpointing"] is True
    assert on_peer["packing"] is False and on_peer["neat_packing"] is False

    # "default": each tool keeps its own default (LLaMA-Factory on, llmtuner off)
    default_peer, default_ours = (bench_peer.side_config(side, job(checkpointing="default"))
                                  for side in bench_peer.SIDES)
    assert "disable_gradient_checkpointing" not in default_peer and "activation_checkpointing" not in default_ours


def test_our_config_passes_llmtuner_checks(bench_peer, tmp_path: Path) -> None:
    from llmtuner.hparams.parser import check_train_args_early

    folder = bench_peer.write_dataset_info(tmp_path / "data", tmp_path / "rows.json")
    (tmp_path / "rows.json").write_text(json.dumps([{"instruction": "hi", "input": "", "output": "yo"}]))
    model = tmp_path / "model"
    model.mkdir()
    config = bench_peer.side_config("llmtuner", {**job(checkpointing="on"), "dataset_dir": str(folder),
                                                 "model_dir": str(model), "output_dir": str(tmp_path / "out")})
    _, data_args, finetuning_args, _ = check_train_args_early(config)
    assert data_args.packing is True and data_args.cutoff_len == 256
    assert finetuning_args.lora_rank == 8 and finetuning_args.lora_alpha == 16
    info = json.loads((folder / "dataset_info.json").read_text())
    assert info == {"alpaca_zh_demo": {"file_name": str((tmp_path / "rows.json").resolve())}}


def run(side: str, runtime: float, rss: float, mode: str = "packed") -> dict:
    return {"side": side, "mode": mode, "gradient_checkpointing": "off", "train_runtime": runtime, "wall": runtime + 10,
            "eff_tokens_per_s": 1000 / runtime, "sys_s": 1.0, "minflt": 100, "peak_rss_mib": rss}


def test_summary_medians_spread_and_ratios(bench_peer) -> None:
    runs = [run("llamafactory", 70, 2000), run("llmtuner", 40, 2600), run("llamafactory", 80, 2100),
            run("llmtuner", 30, 2500), run("llamafactory", 72, 1900), run("llmtuner", 50, 2400),
            run("llamafactory", 60, 1000, mode="unpacked")]
    summary = bench_peer.summarize(runs)
    assert [(s["side"], s["mode"]) for s in summary] == [("llamafactory", "packed"), ("llmtuner", "packed"),
                                                          ("llamafactory", "unpacked")]
    peer, ours, alone = summary
    assert (peer["train_runtime_median"], peer["train_runtime_best"], peer["runs"]) == (72, 70, 3)
    assert peer["train_runtime_spread_pct"] == pytest.approx(100 * 10 / 72)
    assert ours["train_runtime_spread_pct"] == pytest.approx(50.0)
    assert ours["ratio_median_runtime"] == pytest.approx(40 / 72)
    assert ours["ratio_best_runtime"] == pytest.approx(30 / 70)
    assert ours["ratio_peak_rss"] == pytest.approx(2600 / 2100)
    assert "ratio_median_runtime" not in peer and "ratio_median_runtime" not in alone  # no llmtuner run to compare
