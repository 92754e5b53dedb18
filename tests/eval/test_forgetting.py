"""The forgetting report: its numbers are the two evaluations' numbers, its charts are real PNGs, drops are flagged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmtuner.eval.forgetting import run_forgetting
from llmtuner.extras.errors import ConfigError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _common(benchmarks_dir, out, **overrides):
    return {"task": "mmlu,ceval", "task_dir": str(benchmarks_dir), "subjects": "anatomy,astronomy,law,accountant",
            "max_samples": 4, "n_shot": 1, "save_dir": str(out), **overrides}


@pytest.fixture(scope="module")
def evaluated(tiny_qwen2_dir, lora_adapter_dir, benchmarks_dir, tmp_path_factory):
    """Base vs base + adapter on two MMLU and two C-Eval subjects: (report, save_dir)."""
    out = tmp_path_factory.mktemp("forgetting") / "report"
    report = run_forgetting({"model_name_or_path": tiny_qwen2_dir, "adapter_name_or_path": str(lora_adapter_dir),
                             **_common(benchmarks_dir, out)})
    return report, out


def _read(folder: Path) -> tuple[dict, dict]:
    results = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    with open(folder / "predictions.jsonl", encoding="utf-8") as f:
        predictions = {row["id"]: row for row in map(json.loads, f)}
    return results, predictions


def test_report_numbers_are_the_evaluations_numbers(evaluated):
    report, out = evaluated
    assert json.loads((out / "forgetting.json").read_text(encoding="utf-8")) == json.loads(json.dumps(report))
    totals = {"English": [0, 0, 0], "Chinese": [0, 0, 0]}
    for task, language in (("mmlu", "English"), ("ceval", "Chinese")):
        (before, old), (after, new) = _read(out / "before" / task), _read(out / "after" / task)
        assert after["config"]["adapter"] and not before["config"]["adapter"]
        entry = report["tasks"][task]
        for name, subject in before["subjects"].items():
            assert entry["subjects"][name]["before"] == subject["accuracy"]
            assert entry["subjects"][name]["after"] == after["subjects"][name]["accuracy"]
            assert entry["subjects"][name]["delta"] == after["subjects"][name]["accuracy"] - subject["accuracy"]
        for name, category in before["categories"].items():
            assert (entry["categories"][name]["before"], entry["categories"][name]["after"]) == (
                category["accuracy"], after["categories"][name]["accuracy"])
        assert (entry["overall"]["before"], entry["overall"]["after"]) == (before["overall"]["accuracy"],
                                                                           after["overall"]["accuracy"])
        assert entry["overall"]["macro_after"] == after["overall"]["macro_accuracy"]
        flips = entry["flips"]
        assert flips["right_to_wrong"] == [q for q in old if old[q]["correct"] and not new[q]["correct"]]
        assert flips["wrong_to_right"] == [q for q in old if not old[q]["correct"] and new[q]["correct"]]
        assert (before["overall"]["correct"] - flips["num_right_to_wrong"] + flips["num_wrong_to_right"]
                == after["overall"]["correct"])
        totals[language] = [before["overall"]["correct"], after["overall"]["correct"], before["overall"]["total"]]
    for language, (old_correct, new_correct, total) in totals.items():
        assert report["languages"][language]["before"] == old_correct / total
        assert report["languages"][language]["after"] == new_correct / total
    markdown = (out / "forgetting.md").read_text(encoding="utf-8")
    assert "| English | mmlu | 8 |" in markdown and "| Chinese | ceval | 8 |" in markdown


def test_charts_are_real_images(evaluated):
    from PIL import Image

    _, out = evaluated
    for name in ("radar.png", "drops.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.width > 300 and image.height > 200
            assert len(image.convert("RGB").getcolors(maxcolors=1 << 20)) > 10  # something is drawn


def test_two_finished_runs_give_the_same_report(evaluated, tmp_path):
    report, out = evaluated
    again = run_forgetting({"before_results": f"{out}/before/mmlu,{out}/before/ceval/results.json",
                            "after_results": f"{out}/after/ceval,{out}/after/mmlu", "save_dir": str(tmp_path / "r")})
    for task in ("mmlu", "ceval"):
        for key in ("overall", "categories", "subjects", "flips"):
            assert again["tasks"][task][key] == report["tasks"][task][key]
    assert again["languages"] == report["languages"]


def _write_run(folder: Path, n_shot: int, marks: dict[str, list[bool]], category: str = "STEM") -> Path:
    """A minimal results.json + predictions.jsonl: subject -> correctness of each question."""
    folder.mkdir(parents=True)
    rows = [{"id": f"{subject}/{i}", "subject": subject, "correct": ok} for subject, oks in marks.items()
            for i, ok in enumerate(oks)]
    subjects = {s: {"name": s, "category": category, "correct": sum(o), "total": len(o), "accuracy": sum(o) / len(o)}
                for s, o in marks.items()}
    correct, total = sum(e["correct"] for e in subjects.values()), sum(e["total"] for e in subjects.values())
    group = {"correct": correct, "total": total, "subjects": len(subjects), "accuracy": correct / total,
             "macro_accuracy": sum(e["accuracy"] for e in subjects.values()) / len(subjects)}
    results = {"config": {"task": "mmlu", "split": "test", "lang": "en", "n_shot": n_shot, "template": None,
                          "subjects": list(marks), "max_samples": None, "seed": 42},
               "subjects": subjects, "categories": {category: group}, "overall": group}
    (folder / "results.json").write_text(json.dumps(results), encoding="utf-8")
    (folder / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return folder


def test_drops_beyond_the_threshold_are_flagged(tmp_path):
    before = _write_run(tmp_path / "a", 5, {"algebra": [True] * 10, "physics": [True] * 5 + [False] * 5})
    after = _write_run(tmp_path / "b", 5, {"algebra": [True] * 9 + [False], "physics": [True] * 5 + [False] * 5})
    report = run_forgetting({"before_results": str(before), "after_results": str(after), "drop_threshold": 0.05,
                             "save_dir": str(tmp_path / "out")})
    subjects = report["tasks"]["mmlu"]["subjects"]
    assert subjects["algebra"]["delta"] == pytest.approx(-0.1) and subjects["algebra"]["flagged"]
    assert subjects["physics"]["delta"] == 0 and not subjects["physics"]["flagged"]
    assert [(f["level"], f["name"]) for f in report["flagged"]] == [("task", "overall"), ("category", "STEM"),
                                                                     ("subject", "algebra")]
    assert report["tasks"]["mmlu"]["flips"]["right_to_wrong"] == ["algebra/9"]
    assert "| mmlu/algebra | 100.00 | 90.00 | -10.00 (!) |" in (tmp_path / "out" / "forgetting.md").read_text()
    relaxed = run_forgetting({"before_results": str(before), "after_results": str(after), "drop_threshold": 0.2,
                              "save_dir": str(tmp_path / "relaxed")})
    assert relaxed["flagged"] == []


def test_runs_that_asked_different_questions_are_refused(tmp_path, tiny_qwen2_dir, lora_adapter_dir):
    before = _write_run(tmp_path / "a", 5, {"algebra": [True, False]})
    after = _write_run(tmp_path / "b", 3, {"algebra": [True, True]})
    with pytest.raises(ConfigError, match=r"did not ask the same questions \(n_shot: 5 vs 3\)"):
        run_forgetting({"before_results": str(before), "after_results": str(after), "save_dir": str(tmp_path / "o")})
    with pytest.raises(ConfigError, match="after_results is not"):
        run_forgetting({"before_results": str(before), "save_dir": str(tmp_path / "o")})
    with pytest.raises(ConfigError, match="no tuned model"):
        run_forgetting({"model_name_or_path": tiny_qwen2_dir, "task": "mmlu", "save_dir": str(tmp_path / "o")})
    with pytest.raises(ConfigError, match="Both adapter_name_or_path and tuned_model_path"):
        run_forgetting({"model_name_or_path": tiny_qwen2_dir, "adapter_name_or_path": str(lora_adapter_dir),
                        "tuned_model_path": tiny_qwen2_dir, "task": "mmlu", "save_dir": str(tmp_path / "o")})
    assert not (tmp_path / "o").exists()


def test_a_merged_tuned_model(tiny_qwen2_dir, merged_model_dir, benchmarks_dir, tmp_path):
    report = run_forgetting({"model_name_or_path": tiny_qwen2_dir, "tuned_model_path": str(merged_model_dir),
                             **_common(benchmarks_dir, tmp_path / "m", task="mmlu", subjects="anatomy", n_shot=0,
                                       max_samples=3)})
    after, _ = _read(tmp_path / "m" / "after" / "mmlu")
    assert after["config"]["model"] == str(merged_model_dir) and after["config"]["adapter"] is None
    assert report["tasks"]["mmlu"]["overall"]["after"] == after["overall"]["accuracy"]
    # One task with one category: the radar falls back to a subject axis and is still drawn.
    assert (tmp_path / "m" / "radar.png").read_bytes()[:8] == PNG_MAGIC
