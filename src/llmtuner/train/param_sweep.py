"""Sweeps over any training argument: ``llmtuner sweep cfg.yaml --param lora_rank --values 4,8,16``.

Each ``--param NAME --values V1,V2,...`` pair adds one axis; two pairs make a grid (every combination), e.g.
``--param lora_rank --values 4,8 --param learning_rate --values 1e-4,1e-3`` trains four runs. NAME is any key a
training config accepts (lora_rank, lora_alpha, lora_dropout, learning_rate, num_train_epochs, replay_ratio, ...);
each run is the config with those values into ``<output_dir>/<name>_<value>[__<name>_<value>]``. Every run's
arguments, and its forgetting_watch's benchmark files, are checked before the first one trains; finished runs
are skipped when the sweep runs again (train/run_series.py). The data-ratio sweep (``--ratios``) is train/sweep.py.

Per run the table holds the target metric (``--metric``, default eval_loss; with a forgetting_watch any logged
metric such as general/overall), the accuracy change per watched task (from forgetting_watch.json, at the kept
checkpoint), trainable parameters, train time and peak memory. ``sweep.png`` draws the target metric against
forgetting with the Pareto front marked (without a watch: the metric against the swept value).
"""

from __future__ import annotations

import itertools
import json
import threading
from pathlib import Path
from typing import Any, Optional, Union

from transformers import TrainerCallback

from ..extras.errors import ConfigError, LlmtunerError
from ..extras.logging import is_main_process

PARAM_SWEEP_FILES = ("sweep.json", "sweep.md", "sweep.png")
RESOURCES_FILE = "sweep_resources.json"
PARAM_USAGE = ("usage: llmtuner sweep <config.yaml> --param NAME --values V1,V2,... [--param NAME2 --values ...] "
               "[--metric NAME] [key=value ...]")


def is_param_sweep(argv: list[str]) -> bool:
    return any(token == "--param" or token.startswith("--param=") for token in argv)


def split_param_argv(argv: list[str]) -> tuple[list[tuple[str, list[str]]], str, list[str]]:
    """``([(name, [values])], metric, the remaining argv)``; each ``--values`` belongs to the ``--param`` before it."""
    axes: list[tuple[str, list[str]]] = []
    metric, rest, position = "eval_loss", [], 0
    while position < len(argv):
        token = argv[position]
        position += 1
        key, has_value, value = token.partition("=")
        if key in ("--param", "--values", "--metric") and not has_value:
            if position >= len(argv):
                raise ConfigError(f"{key} needs a value after it.", PARAM_USAGE)
            value = argv[position]
            position += 1
        if key == "--param":
            if axes and axes[-1][1] is None:
                raise ConfigError(f"--param {axes[-1][0]} has no --values.", PARAM_USAGE)
            axes.append((value.strip().replace("-", "_"), None))  # type: ignore[arg-type]
        elif key == "--values":
            if not axes or axes[-1][1] is not None:
                raise ConfigError("--values must follow its --param.", PARAM_USAGE)
            values = [item.strip() for item in value.split(",") if item.strip()]
            if not values:
                raise ConfigError(f"--param {axes[-1][0]} --values {value!r} lists no values.", "E.g. --values 4,8,16")
            axes[-1] = (axes[-1][0], values)
        elif key == "--metric":
            metric = value
        else:
            rest.append(token)
    if not axes or axes[-1][1] is None:
        raise ConfigError("Every --param needs --values.", PARAM_USAGE)
    names = [name for name, _ in axes]
    if len(set(names)) != len(names):
        raise ConfigError(f"--param names {', '.join(names)}: one is given twice.", "Give each parameter once.")
    return axes, metric, rest  # type: ignore[return-value]


def run_param_sweep(args: Union[dict[str, Any], list[str], None], axes: list[tuple[str, list[Any]]],
                    metric: str = "eval_loss") -> dict[str, Any]:
    """Train one run per combination of values; returns what ``sweep.json`` holds. Raises ConfigError for a
    name that is not an argument, a value of the wrong type, a watch without its benchmark files, or an
    output_dir holding something else, before any run trains."""
    from ..hparams.parser import read_args
    from ..hparams.rules import check_series_args
    from .forgetting_budget import check_watch_files
    from .run_series import check_restartable, check_series_output_dir, finished_record, parse_series_run

    base = read_args(args)
    if "curriculum" in base:
        raise ConfigError("The config has a `curriculum:` block; a sweep trains one ordinary run per value.",
                          "Remove the block for the sweep.")
    if not base.get("output_dir"):
        raise ConfigError("A sweep needs output_dir.", "Set output_dir: runs go to <output_dir>/<param>_<value>.")
    for name, _ in axes:
        if name in ("output_dir", "do_train", "overwrite_output_dir"):
            raise ConfigError(f"--param {name} cannot be swept: the sweep sets it per run.", "Sweep another key.")
    check_series_args(base, "sweep")
    output_dir = Path(base["output_dir"])
    overwrite = bool(base.get("overwrite_output_dir"))
    check_series_output_dir(output_dir, overwrite, f"{axes[0][0]}_", PARAM_SWEEP_FILES, "sweep")

    plans = []
    for combination in itertools.product(*[values for _, values in axes]):
        setting = dict(zip([name for name, _ in axes], combination))
        label = "__".join(f"{name}_{value}" for name, value in setting.items())
        run_args = {**base, **setting, "output_dir": str(output_dir / label), "do_train": True}
        folder = Path(run_args["output_dir"])
        try:
            parsed = parse_series_run(run_args)  # every run's arguments fail here, before the first one trains
            done = None if overwrite else finished_record(folder, run_args, parsed, f"Sweep run {label}")
            if done is None and not overwrite and check_restartable(folder, f"Sweep run {label}"):
                run_args["overwrite_output_dir"] = True  # our own unfinished run: start it again
                parsed = parse_series_run(run_args)
        except LlmtunerError as exc:
            named = ", ".join(f"--param {name} --values ...{value}" for name, value in setting.items())
            raise type(exc)(f"Sweep run {label} ({named}): {exc.message}", exc.hint) from exc
        check_watch_files(parsed[3])
        plans.append((setting, label, run_args, parsed, done, parsed[3].forgetting_watch is not None))

    runs = [_run_one(position, len(plans), *plan) for position, plan in enumerate(plans, start=1)]
    watched = all(run["watch"] is not None for run in runs)
    if metric not in runs[0]["metrics"]:
        raise ConfigError(f"--metric {metric} was not measured (found: {', '.join(runs[0]['metrics'])}).",
                          "Set val_size for eval_loss, or name a logged metric such as general/overall.")
    higher = "loss" not in metric
    result = {"params": [name for name, _ in axes], "metric": metric, "higher_is_better": higher, "runs": runs,
              "pareto": pareto_front(runs, metric, higher) if watched else []}
    if is_main_process():
        write_param_reports(output_dir, result)
    return result


def _run_one(position: int, total: int, setting: dict[str, Any], label: str, run_args: dict[str, Any],
             parsed: tuple[Any, ...], done: Optional[dict[str, Any]], watched: bool) -> dict[str, Any]:
    from .run_series import train_and_record

    print(f"\n== Sweep run {position}/{total}: {label}" + (" (finished earlier, skipped) ==" if done else " =="))
    record = done if done is not None else train_and_record(run_args, parsed, callbacks=[ResourceRecorder()])
    folder = Path(run_args["output_dir"])
    resources = json.loads((folder / RESOURCES_FILE).read_text(encoding="utf-8")) \
        if (folder / RESOURCES_FILE).is_file() else {}
    metrics = {key: value for key, value in record["metrics"].items() if key.startswith("eval_")}
    watch = _watch_summary(folder) if watched else None
    if watch:
        metrics.update({f"general/{task}": value for task, value in watch["accuracy"].items()})
        metrics["general/overall"] = watch["overall"]
    return {"label": label, "values": setting, "output_dir": str(folder), "status": "skipped" if done else "trained",
            "train_time_s": record.get("train_time_s"), "steps": record.get("steps"), **resources,
            "metrics": metrics, "watch": watch}


def _watch_summary(folder: Path) -> Optional[dict[str, Any]]:
    """The accuracy and its change per task at the kept checkpoint (the end without a budget)."""
    path = folder / "forgetting_watch.json"
    if not path.is_file():
        return None
    report = json.loads(path.read_text(encoding="utf-8"))
    kept = (report.get("decision") or {}).get("kept")
    entry = next((e for e in report["history"] if e["step"] == kept), report["history"][-1])
    return {"step": entry["step"], "accuracy": entry["accuracy"], "change": entry["change"],
            "overall": entry["overall"], "overall_change": entry["overall_change"]}


def pareto_front(runs: list[dict[str, Any]], metric: str, higher_is_better: bool) -> list[str]:
    """Labels of the runs no other run beats on both the metric and the forgetting (overall accuracy change)."""
    def score(run: dict[str, Any]) -> tuple[float, float]:
        value = run["metrics"][metric]
        return (value if higher_is_better else -value, run["watch"]["overall_change"])

    front = []
    for run in runs:
        mine = score(run)
        dominated = any(all(o >= m for o, m in zip(score(other), mine)) and score(other) != mine
                        for other in runs if other is not run)
        if not dominated:
            front.append(run["label"])
    return front


def write_param_reports(output_dir: Path, result: dict[str, Any]) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "sweep.json").write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    table = param_table(result)
    (output_dir / "sweep.md").write_text(table, encoding="utf-8")
    plot_param_sweep(output_dir / "sweep.png", result)
    print("\n" + table)
    print(f"Written: {output_dir / 'sweep.json'}, sweep.md, sweep.png")


def param_table(result: dict[str, Any]) -> str:
    runs, metric = result["runs"], result["metric"]
    tasks = list(runs[0]["watch"]["change"]) if runs[0]["watch"] else []
    head = [*result["params"], metric, *[f"{task} change" for task in tasks], "trainable params", "train time (s)",
            "peak memory (MiB)", "status"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for run in runs:
        cells = [str(run["values"][name]) for name in result["params"]] + [f"{run['metrics'][metric]:.4f}"]
        cells += [f"{100 * run['watch']['change'][task]:+.1f} pts" for task in tasks]
        cells += [f"{run.get('trainable_params', 0):,}", f"{run['train_time_s']:.1f}",
                  f"{run.get('peak_memory_mib', float('nan')):.0f}", run["status"]]
        lines.append("| " + " | ".join(cells) + " |")
    direction = "higher" if result["higher_is_better"] else "lower"
    lines += ["", f"{metric}: {direction} is better. Peak memory: {runs[0].get('memory_kind', '')}."]
    if result["pareto"]:
        lines.append(f"Pareto front (no run is better on both {metric} and forgetting): "
                     f"{', '.join(result['pareto'])}.")
    return "\n".join(lines) + "\n"


def plot_param_sweep(path: Path, result: dict[str, Any]) -> Path:
    """With a watch: the metric against the overall accuracy change, Pareto front joined; else metric vs value."""
    import os

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    runs, metric = result["runs"], result["metric"]
    figure = Figure(figsize=(6.5, 4.5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    values = [run["metrics"][metric] for run in runs]
    if result["pareto"]:
        changes = [100 * run["watch"]["overall_change"] for run in runs]
        axes.scatter(changes, values, color="C0", label="runs")
        front = sorted((c, v) for run, c, v in zip(runs, changes, values) if run["label"] in result["pareto"])
        axes.plot(*zip(*front), color="C3", marker="o", label="Pareto front")
        for run, change, value in zip(runs, changes, values):
            axes.annotate(run["label"], (change, value), textcoords="offset points", xytext=(4, 4), fontsize=8)
        axes.set_xlabel("general accuracy change vs base (points)")
        axes.legend()
    else:
        labels = [run["label"] for run in runs]
        axes.plot(range(len(runs)), values, marker="o")
        axes.set_xticks(range(len(runs)), labels, rotation=30, ha="right", fontsize=8)
        axes.set_xlabel(", ".join(result["params"]))
    axes.set_ylabel(metric)
    axes.set_title(f"{metric} by {', '.join(result['params'])}")
    figure.tight_layout()
    temporary = path.with_name(path.name + ".tmp")
    figure.savefig(temporary, format="png", dpi=100)
    os.replace(temporary, path)
    return path


class ResourceRecorder(TrainerCallback):
    """Trainable parameters and peak memory of one run, written to ``RESOURCES_FILE`` so a skipped run keeps them.
    GPU: torch's peak allocated memory; CPU: the process' resident memory, sampled every 0.1 s while training."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):  # noqa: ANN001
        import torch

        self.trainable = sum(p.numel() for p in model.parameters() if p.requires_grad) if model is not None else 0
        self.cuda = torch.cuda.is_available() and not args.use_cpu
        self.peak, self.done = 0, threading.Event()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
            return
        import psutil

        process = psutil.Process()

        def sample() -> None:
            while not self.done.wait(0.1):
                self.peak = max(self.peak, process.memory_info().rss)

        self.peak = process.memory_info().rss
        self.thread = threading.Thread(target=sample, daemon=True)
        self.thread.start()

    def on_train_end(self, args, state, control, **kwargs):  # noqa: ANN001
        import torch

        if self.cuda:
            self.peak = torch.cuda.max_memory_allocated()
        else:
            self.done.set()
            self.thread.join()
        if state.is_world_process_zero:
            data = {"trainable_params": self.trainable, "peak_memory_mib": round(self.peak / 2**20, 1),
                    "memory_kind": "GPU allocated (torch)" if self.cuda else "process resident set (CPU)"}
            Path(args.output_dir).mkdir(parents=True, exist_ok=True)
            (Path(args.output_dir) / RESOURCES_FILE).write_text(json.dumps(data) + "\n", encoding="utf-8")
