"""What the forgetting watch costs: the share of training time spent scoring the watched questions.

    python scripts/bench_forgetting_watch.py                 # tiny and 42M models, CPU (a few minutes)
    python scripts/bench_forgetting_watch.py --models tiny --steps 10
    python scripts/bench_forgetting_watch.py --curves docs/images/forgetting_watch_replay.png

Each model trains LoRA (rank 8, every linear layer) on the sample sft data for ``--steps`` steps with the
forgetting watch of the chinese_capability_replay preset (its demo CMMLU + MMLU files: 32 questions, 2-shot)
every ``--every`` steps plus the base model at the start. The watch's own clock (forgetting_watch.json
``cost``) is divided by the Trainer's train_runtime, which includes it. Prints a table and writes JSON
(``--out``). ``--curves PNG`` also trains the tiny model twice at a high learning rate, without and with replay,
and draws both watch histories (mechanics only: a random tiny model has no knowledge to forget).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "data" / "presets" / "chinese_capability" / "benchmarks"
WATCH = {"task": "cmmlu,mmlu", "task_dir": str(BENCHMARKS), "n_shot": 2, "max_samples": 8}


def _bench_train_module():
    spec = importlib.util.spec_from_file_location("bench_train", ROOT / "scripts" / "bench_train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_model(name: str, work: Path) -> str:
    from llmtuner.model.tiny import make_tiny_model

    folder = work / name
    if folder.is_dir():  # built earlier in this work folder
        return str(folder)
    if name == "tiny":
        return make_tiny_model("qwen2", str(folder))
    return _bench_train_module().build_small_model(work / "small")  # the 42M model of scripts/bench_train.py


def train(model_dir: str, out: Path, steps: int, every: int, **extra) -> dict:
    from llmtuner.train.tuner import run_exp

    watch = {**WATCH, **extra.pop("watch", {})}
    run_exp({"model_name_or_path": model_dir, "stage": "sft", "finetuning_type": "lora", "lora_rank": 8,
             "template": "qwen", "dataset": "sft_demo_zh_en", "dataset_dir": str(ROOT / "data"), "cutoff_len": 512,
             "output_dir": str(out), "per_device_train_batch_size": 4, "learning_rate": 1e-4, "max_steps": steps,
             "logging_steps": every, "save_strategy": "no", "seed": 0,
             "forgetting_watch": {**watch, "eval_steps": every},
             **extra})
    return json.loads((out / "forgetting_watch.json").read_text(encoding="utf-8"))


def measure(models: list[str], steps: int, every: int, work: Path) -> list[dict]:
    rows = []
    for name in models:
        model_dir = build_model(name, work)
        report = train(model_dir, work / f"run-{name}", steps, every)
        state = json.loads((work / f"run-{name}" / "train_results.json").read_text(encoding="utf-8"))
        evaluations = len(report["history"])
        questions = sum(len(ids) for ids in report["config"]["question_ids"].values())
        rows.append({"model": name, "steps": steps, "every": every, "evaluations": evaluations,
                     "questions_per_evaluation": questions, "train_runtime_s": round(state["train_runtime"], 2),
                     "watch_s": report["cost"]["watch_seconds"],
                     "watch_s_per_evaluation": round(report["cost"]["watch_seconds"] / evaluations, 3),
                     "watch_fraction": round(report["cost"]["watch_seconds"] / state["train_runtime"], 4)})
    return rows


def curves(path: Path, work: Path, steps: int) -> dict:
    """Two full-tuning runs of the tiny model at lr 1e-3, without and with 30% replay; one chart of both."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    model_dir = build_model("tiny", work)
    runs = {}
    for label, extra in (("no replay", {}), ("replay 0.3", {"replay_dataset": "sft_demo_sharegpt",
                                                            "replay_ratio": 0.3})):
        runs[label] = train(model_dir, work / f"curve-{label.replace(' ', '_')}", steps, max(1, steps // 4),
                            finetuning_type="full", learning_rate=1e-3, max_samples=40, **extra)
    figure = Figure(figsize=(10, 4))
    FigureCanvasAgg(figure)
    for axes, task in zip(figure.subplots(1, 2), ("cmmlu", "mmlu")):
        for index, (label, report) in enumerate(runs.items()):
            steps_seen = [entry["step"] for entry in report["history"]]
            axes.plot(steps_seen, [entry["accuracy"][task] for entry in report["history"]], marker="o",
                      color=f"C{index}", label=label)
        axes.axhline(next(iter(runs.values()))["base"][task], color="grey", linestyle="--", label="base")
        axes.set_title(f"{task}: accuracy while training (random tiny model)")
        axes.set_xlabel("step")
        axes.set_ylabel("accuracy")
        axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=100)
    return {label: [(e["step"], e["accuracy"]) for e in report["history"]] for label, report in runs.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny,small", help="tiny, small (the 42M model), comma-separated")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--every", type=int, default=10, help="watch every N steps")
    parser.add_argument("--out", default=str(ROOT / "bench" / "forgetting_watch.json"))
    parser.add_argument("--curves", default=None, help="also draw the watch with and without replay to this PNG")
    parser.add_argument("--curve_steps", type=int, default=16, help="training steps of each --curves run")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        rows = measure([name.strip() for name in args.models.split(",") if name.strip()], args.steps, args.every,
                       work)
        result = {"rows": rows}
        if args.curves:
            result["curves"] = curves(Path(args.curves), work, args.curve_steps)
    print("\n| model | steps | watch every | evaluations | questions | train time (s) | watch (s) | per evaluation (s) "
          "| share of training time |\n|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['model']} | {row['steps']} | {row['every']} | {row['evaluations']} | "
              f"{row['questions_per_evaluation']} | {row['train_runtime_s']} | {row['watch_s']} | "
              f"{row['watch_s_per_evaluation']} | {100 * row['watch_fraction']:.1f}% |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"Written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
