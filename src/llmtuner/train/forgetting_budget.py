"""The forgetting budget's decisions and the watch's report, from the logged numbers alone (no model, no torch).

An evaluation is within budget when the general accuracy fell by at most ``forgetting_budget`` from the base
model's: the mean over the watched tasks (``overall``) or every task on its own (``per_task``). The kept
checkpoint is the one with the best ``target_metric`` among the evaluations within budget that have a
checkpoint (or are the end of training); when none is within budget, the one that forgot least.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from ..extras.errors import LlmtunerError

if TYPE_CHECKING:

    from ..eval.benchmarks import Benchmark
    from ..hparams import FinetuningArguments
    from ..hparams.watch_args import ForgettingWatchArguments

WATCH_FILE = "forgetting_watch.json"
WATCH_PLOT = "forgetting_watch.png"
PREFIX = "general/"  # logged keys: general/<task>, general/<task>_change, general/overall, general/overall_change


# ---- checks before the model loads ----

def check_watch_files(finetuning_args: "FinetuningArguments") -> None:
    """The benchmark files exist and hold the subjects (read without a model; errors name the file)."""
    if finetuning_args.forgetting_watch is None:
        return
    try:
        load_watch_benchmarks(finetuning_args.forgetting_watch)
    except LlmtunerError as exc:  # say which block of the config the path came from
        raise type(exc)(f"forgetting_watch: {exc.message}", exc.hint) from exc


def load_watch_benchmarks(watch: "ForgettingWatchArguments") -> list["Benchmark"]:
    from ..eval.benchmarks import load_benchmark, subjects_per_task

    pairs = watch.task_splits()
    subjects = subjects_per_task([task for task, _ in pairs], watch.subjects)
    return [load_benchmark(task, watch.task_dir, split, subjects[task], watch.n_shot, watch.max_samples, watch.seed,
                           watch.lang) for task, split in pairs]


# ---- the budget ----

def worst_change(entry: dict[str, Any], scope: str) -> float:
    """The accuracy change the budget is compared with: overall, or the largest drop among the tasks."""
    return entry["overall_change"] if scope == "overall" else min(entry["change"].values())


def is_within_budget(entry: dict[str, Any], budget: Optional[float], scope: str) -> Optional[bool]:
    """None without a budget. The small tolerance keeps a drop of exactly the budget (0.02 of 50 questions =
    1 question) within it despite float rounding."""
    if budget is None:
        return None
    return worst_change(entry, scope) >= -budget - 1e-9


def should_stop(history: list[dict[str, Any]], patience: int) -> bool:
    """True when the last ``patience`` evaluations after the base were all over budget."""
    trained = [entry for entry in history if entry["step"] > 0]
    return len(trained) >= patience and all(entry["within_budget"] is False for entry in trained[-patience:])


def choose(history: list[dict[str, Any]], watch: "ForgettingWatchArguments", kept_steps: set[int]
           ) -> dict[str, Any]:
    """Which evaluated step to keep, and why. ``kept_steps``: steps whose weights exist (checkpoints, the end)."""
    metric = watch.target_metric
    candidates = [entry for entry in history
                  if entry["step"] > 0 and entry["step"] in kept_steps and metric in entry["metrics"]]
    if not candidates:
        return {"step": None, "reason": f"no evaluated checkpoint has {metric} (the trainer must evaluate at the "
                                        "watch's steps, and save there)"}
    within = [entry for entry in candidates if entry["within_budget"]]
    direction = "highest" if watch.greater_is_better else "lowest"
    budget = f"{watch.forgetting_budget:g} ({watch.forgetting_budget_scope})"
    if within:
        best = within[0]
        for entry in within[1:]:
            if watch.target_is_better(entry["metrics"][metric], best["metrics"][metric]):
                best = entry
        outside = [entry["step"] for entry in candidates if not entry["within_budget"]]
        reason = (f"step {best['step']} has the {direction} {metric} ({best['metrics'][metric]:.4f}) of the "
                  f"{len(within)} evaluated checkpoints within the forgetting budget {budget}; worst accuracy change "
                  f"{worst_change(best, watch.forgetting_budget_scope):+.4f}"
                  + (f"; over budget: steps {outside}" if outside else ""))
        return {"step": best["step"], "within_budget": True, "reason": reason}
    least = max(candidates, key=lambda entry: worst_change(entry, watch.forgetting_budget_scope))
    reason = (f"no evaluated checkpoint is within the forgetting budget {budget}; step {least['step']} forgot the "
              f"least (worst accuracy change {worst_change(least, watch.forgetting_budget_scope):+.4f})")
    return {"step": least["step"], "within_budget": False, "reason": reason}


def log_entry(entry: dict[str, Any]) -> dict[str, float]:
    """What goes next to the loss in trainer_log.jsonl / TensorBoard / wandb."""
    logs = {f"{PREFIX}{task}": value for task, value in entry["accuracy"].items()}
    logs.update({f"{PREFIX}{task}_change": value for task, value in entry["change"].items()})
    logs[f"{PREFIX}overall"] = entry["overall"]
    logs[f"{PREFIX}overall_change"] = entry["overall_change"]
    if entry["within_budget"] is not None:
        logs[f"{PREFIX}within_budget"] = int(entry["within_budget"])
    return logs


def write_report(output_dir: str, report: dict[str, Any]) -> Path:
    """``forgetting_watch.json`` through a temporary file: a kill never leaves half a report."""
    path = Path(output_dir) / WATCH_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, path)
    return path


def read_report(output_dir: str) -> Optional[dict[str, Any]]:
    path = Path(output_dir) / WATCH_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def plot_watch(path: Path, report: dict[str, Any], losses: list[tuple[int, float]],
               eval_losses: list[tuple[int, float]]) -> Path:
    """Left: accuracy per task over steps with the base model's as dashed lines (budget band when set);
    right: training and eval loss. Labels are bilingual, drawn with a CJK font when one is installed."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ..eval.plots import cjk_font

    font = cjk_font()
    rc = {"font.sans-serif": [font, *matplotlib.rcParams["font.sans-serif"]]} if font else {}
    en = font is None  # without a CJK font the labels stay English (matplotlib would draw boxes)
    history, base = report["history"], report["base"]
    budget = report["config"].get("forgetting_budget")
    with matplotlib.rc_context(rc):  # only while this figure is drawn; the process' settings stay as they were
        figure = Figure(figsize=(11, 4.2))
        FigureCanvasAgg(figure)
        accuracy_axes, loss_axes = figure.subplots(1, 2)
        steps = [entry["step"] for entry in history]
        for index, task in enumerate(base):
            color = f"C{index}"
            accuracy_axes.plot(steps, [entry["accuracy"][task] for entry in history], marker="o", color=color,
                               label=task)
            accuracy_axes.axhline(base[task], color=color, linestyle="--", linewidth=1,
                                  label=f"{task} base" if en else f"{task} 基座")
            if budget is not None:
                accuracy_axes.axhspan(base[task] - budget, base[task], color=color, alpha=0.08)
        kept = report.get("decision", {}).get("step")
        if kept is not None:
            accuracy_axes.axvline(kept, color="grey", linestyle=":", label="kept" if en else "保留的检查点")
        accuracy_axes.set_xlabel("step" if en else "步数 step")
        accuracy_axes.set_ylabel("accuracy" if en else "准确率 accuracy")
        accuracy_axes.set_title("general ability while training" if en else "训练中的通用能力")
        accuracy_axes.legend(fontsize=8)
        if losses:
            loss_axes.plot(*zip(*losses), label="train loss" if en else "训练损失")
        if eval_losses:
            loss_axes.plot(*zip(*eval_losses), marker="o", label="eval loss" if en else "验证损失")
        loss_axes.set_xlabel("step" if en else "步数 step")
        loss_axes.set_ylabel("loss" if en else "损失 loss")
        loss_axes.set_title("loss" if en else "损失")
        if losses or eval_losses:
            loss_axes.legend(fontsize=8)
        figure.tight_layout()
        temporary = path.with_name(path.name + ".tmp")
        figure.savefig(temporary, format="png", dpi=100)
    os.replace(temporary, path)
    return path
