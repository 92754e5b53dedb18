"""Data-ratio sweeps: how good does the model get with 20%, 40%, ... of the training data, and at what cost?

``llmtuner sweep cfg.yaml --ratios 0.2 0.4 0.6 0.8 1.0 [--metric eval_loss] [key=value ...]`` trains one run per
ratio into ``<output_dir>/ratio_<r>``, each with ``dataset_ratios`` = the config's ratios times ``r``. Every run
keeps the first rows of one fixed-seed shuffle per task (data/loader.py), so a smaller ratio's training rows are
a subset of a larger one's, and the validation rows (``val_size``, split off before subsampling, or
``eval_dataset``) are the same for every run. Each run is scored by a pluggable ``SweepMetric`` (built in:
``eval_loss``, ``eval_perplexity``, and task metrics from the tuned model's greedy answers to the validation
prompts, scored by ``eval/metrics``: ``accuracy`` (exact match and macro-F1, for classification tasks) and
``score_mae`` (scores read back from scoring answers); ``register_metric`` adds more). Outputs: ``sweep.json``,
``sweep.md`` (ratio, samples, tokens, steps, train time, metrics, and the cheapest ratio within ``--tolerance`` of
the best) and ``sweep.png`` (metric vs ratio and vs training time).
Runs that finished with the same arguments are skipped when the sweep is run again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Union

from ..extras.errors import ConfigError
from ..extras.logging import get_logger, is_main_process
from ..hparams.sweep_args import DEFAULT_RATIOS  # noqa: F401 (the default ratios, also shown in --help)
from .param_sweep import PARAM_USAGE, is_param_sweep, run_param_sweep, split_param_argv

logger = get_logger(__name__)

DEFAULT_TOLERANCE = 0.02
SWEEP_FILES = ("sweep.json", "sweep.md", "sweep.png")
USAGE = ("usage: llmtuner sweep <config.yaml> [--ratios 0.2 0.4 ...] [--metric NAME] [--tolerance 0.02] "
         "[key=value ...]")


@dataclass(frozen=True)
class SweepRun:
    """What a metric can look at: the run's arguments, its folder, and its record (``run_series``)."""

    ratio: float
    args: dict[str, Any]
    output_dir: Path
    record: dict[str, Any]
    parsed: Optional[tuple[Any, ...]] = None  # the run's parsed arguments (parsed from args when absent)


@dataclass(frozen=True)
class SweepMetric:
    """``compute(run)`` returns named numbers; the one called ``name`` ranks the runs."""

    name: str
    higher_is_better: bool
    compute: Callable[[SweepRun], dict[str, float]]


def _trainer_metric(key: str) -> Callable[[SweepRun], dict[str, float]]:
    def compute(run: SweepRun) -> dict[str, float]:
        value = run.record["metrics"].get(key)
        if value is None:
            raise ConfigError(f"Run {run.output_dir} reported no {key}.",
                              "The sweep needs an evaluation set: set val_size or eval_dataset.")
        return {key: float(value)}

    return compute


METRICS: dict[str, SweepMetric] = {}


def register_metric(metric: SweepMetric) -> None:
    """Make ``metric`` available as ``--metric <name>`` (e.g. a task metric computed from generated answers)."""
    METRICS[metric.name] = metric


# ---- task metrics: the tuned model answers the validation prompts (greedy), eval/metrics scores the answers ----

def generated_answers(run: SweepRun) -> tuple[list[dict[str, Any]], list[str]]:
    """The run's validation conversations (the rows its eval_loss used) and the tuned model's greedy answers."""
    import dataclasses

    from ..model.engine import ChatEngine
    from ..data.loader import load_conversations, load_split_conversations
    from .run_series import parse_series_run

    model_args, data_args, training_args, finetuning_args, generating_args = run.parsed or parse_series_run(run.args)
    if data_args.eval_dataset:
        rows = load_conversations(data_args.eval_dataset, data_args, "sft", seed=training_args.seed)
    else:
        _, rows = load_split_conversations(data_args.dataset, data_args, "sft", seed=training_args.seed,
                                           val_size=data_args.val_size)
    if finetuning_args.finetuning_type == "lora":  # the run's adapter already holds any adapter it resumed
        model_args = dataclasses.replace(model_args, adapter_name_or_path=[str(run.output_dir)])
    else:
        model_args = dataclasses.replace(model_args, model_name_or_path=str(run.output_dir), adapter_name_or_path=None)
    engine = ChatEngine.from_parsed(model_args, data_args, finetuning_args, generating_args)
    rows = rows.to_list()
    golds = [row["messages"][-1]["content"] for row in rows]
    # Answers need not be longer than the longest expected one (plus a margin), unless the config says otherwise.
    longest = max(len(engine.tokenizer(gold, add_special_tokens=False)["input_ids"]) for gold in golds) + 16
    limit = run.args.get("max_new_tokens") or longest
    prompts = [engine.encode(row["messages"][:-1], row["system"]) for row in rows]
    responses = engine.generate_many(prompts, batch_size=training_args.per_device_eval_batch_size,
                                     desc=f"Answering {len(prompts)} validation prompts", do_sample=False,
                                     max_new_tokens=int(limit))
    return rows, [response.text for response in responses]


def _accuracy(run: SweepRun) -> dict[str, float]:
    """Exact-match accuracy and macro-F1 of the answers (classification tasks: each answer is a label)."""
    from ..eval.metrics import classification_metrics

    rows, answers = generated_answers(run)
    gold = [row["messages"][-1]["content"].strip() for row in rows]
    metrics = classification_metrics(gold, [answer.strip() for answer in answers], labels=sorted(set(gold)))
    return {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"]}


def _score_mae(run: SweepRun) -> dict[str, float]:
    """Scoring data: the mean absolute error of the scores read back from the answers, by the code of the scoring
    report (``data.scoring.read_answer_scores`` + ``eval.metrics.score_metrics``). A score that cannot be read
    counts as the largest possible error, so a run cannot improve by answering less."""
    from ..data.registry import get_dataset_specs
    from ..data.scoring import read_answer_scores
    from ..eval.metrics import score_metrics

    rows, answers = generated_answers(run)
    specs = {spec.name: spec for spec in get_dataset_specs(sorted({row["_dataset"] for row in rows}),
                                                           run.args.get("dataset_dir", "data"))}
    multi = run.args.get("scoring_mode") == "multi"
    gold, predicted, lows, highs = [], [], [], []
    for row, answer in zip(rows, answers):
        spec = specs[row["_dataset"]]
        if spec.formatting != "scoring":
            raise ConfigError(f"--metric score_mae needs scoring data, but {spec.name!r} is {spec.formatting}.",
                              "Use --metric accuracy or eval_loss for this dataset.")
        (low, high), labels = spec.score_range, dict(spec.dimensions)
        lows.append(low)
        highs.append(high)
        # the dimensions the expected answer holds: its numbered blocks (multi) or the one it answers (single)
        asked = read_answer_scores(row["messages"][-1]["content"], list(labels) if multi else ["_"],
                                   labels, low, high, multi)
        wanted = {name: parsed for name, parsed in asked.items() if parsed.score is not None}
        got = read_answer_scores(answer, list(wanted), labels, low, high, multi)
        gold += [parsed.score for parsed in wanted.values()]
        predicted += [got[name].score for name in wanted]
    low, high = min(lows), max(highs)
    metrics = score_metrics(gold, predicted, bins=(), low=low, high=high)
    worst = (high - low) * metrics["parse_failures"]
    mae = ((metrics["mae"] or 0.0) * metrics["num_parsed"] + worst) / metrics["num_samples"]
    return {"score_mae": mae, "parse_failure_rate": metrics["parse_failure_rate"]}


register_metric(SweepMetric("eval_loss", higher_is_better=False, compute=_trainer_metric("eval_loss")))
register_metric(SweepMetric("eval_perplexity", higher_is_better=False, compute=_trainer_metric("eval_perplexity")))
register_metric(SweepMetric("accuracy", higher_is_better=True, compute=_accuracy))
register_metric(SweepMetric("score_mae", higher_is_better=False, compute=_score_mae))


def split_sweep_argv(argv: list[str]) -> tuple[list[float], str, float, list[str]]:
    """``(ratios, metric name, tolerance, the remaining argv)`` from the command line of ``llmtuner sweep``.

    The sweep's own options (``--ratios 0.2 0.4`` or ``--ratios=0.2,0.4``, ``--metric``, ``--tolerance``) are
    parsed into ``SweepArguments`` like any argument dataclass: a ratio that is not a number is an error naming it.
    """
    from ..hparams.sweep_args import SweepArguments

    options: dict[str, Any] = {}
    rest: list[str] = []
    position = 0
    while position < len(argv):
        token = argv[position]
        position += 1
        name, has_value, value = token[2:].partition("=") if token.startswith("--") else ("", False, "")
        name = name.replace("-", "_")
        if name in ("ratios", "ratio"):
            values = value.split(",") if has_value else []
            # space-separated values run until the next option or key=value
            while not has_value and position < len(argv) and not argv[position].startswith("--") \
                    and "=" not in argv[position] and not argv[position].endswith((".yaml", ".yml", ".json")):
                values += argv[position].split(",")
                position += 1
            if not [item for item in values if item.strip()]:
                raise ConfigError("--ratios needs numbers after it.", "For example: --ratios 0.2 0.4 0.6 0.8 1.0")
            options["ratios"] = [*options.get("ratios", []), *values]
        elif name in ("metric", "tolerance"):
            if not has_value:
                if position >= len(argv):
                    raise ConfigError(f"--{name} needs a value after it.", "For example: --metric eval_loss")
                value = argv[position]
                position += 1
            options[name] = value
        else:
            rest.append(token)
    sweep = SweepArguments(**options)
    return sweep.ratios, sweep.metric, sweep.tolerance, rest


def sweep_main(argv: list[str], defaults: Optional[dict[str, Any]] = None,
               prepare: Optional[Callable[[dict[str, Any]], None]] = None) -> int:
    """``llmtuner sweep``: parse the command line and run the sweep, over any argument (``--param``,
    train/param_sweep.py) or over data ratios. ``defaults``: arguments that apply unless the user set them (the
    CLI's environment defaults); where each user key was set is kept for error messages. ``prepare(args)``: the
    caller's process set-up (the CLI layer's), called once with the sweep's arguments before any run."""
    from ..hparams.reader import read_args, with_defaults

    if argv in (["-h"], ["--help"]) or not argv:
        print(USAGE + "\n" + PARAM_USAGE)
        return 0 if argv else 2
    if is_param_sweep(argv):
        axes, param_metric, rest = split_param_argv(argv)
        args = with_defaults(read_args(rest), defaults or {})
        if prepare is not None:
            prepare(args)
        run_param_sweep(args, axes, param_metric)
        return 0
    ratios, metric, tolerance, rest = split_sweep_argv(argv)
    args = with_defaults(read_args(rest), defaults or {})
    if prepare is not None:
        prepare(args)
    run_sweep(args, ratios, metric, tolerance)
    return 0


def run_sweep(
    args: Union[dict[str, Any], list[str], None],
    ratios: Optional[list[float]] = None,
    metric: str = "eval_loss",
    tolerance: float = DEFAULT_TOLERANCE,
) -> dict[str, Any]:
    """Train and score one run per ratio (smallest first); returns what ``sweep.json`` holds.

    Every run's arguments are validated before the first one trains. Raises ConfigError for a bad ratio, an
    unknown metric, a config without an evaluation set, or an output_dir holding something else.
    """
    from ..hparams import DataArguments
    from ..hparams.parser import read_args
    from .run_series import (
        check_restartable,
        check_series_output_dir,
        finished_record,
        parse_series_run,
        train_and_record,
    )

    from ..hparams.rules import check_series_args
    from ..hparams.sweep_args import SweepArguments

    base = read_args(args)
    if "curriculum" in base:
        raise ConfigError("The config has a `curriculum:` block; a sweep trains one ordinary run per ratio.",
                          "Remove the block for the sweep (or sweep one stage's settings as a plain config).")
    ratios = SweepArguments(ratios=ratios, metric=metric, tolerance=tolerance).ratios
    if metric not in METRICS:
        raise ConfigError(f"--metric {metric} is not a known sweep metric.", f"Use one of: {', '.join(METRICS)}.")
    if not base.get("output_dir"):
        raise ConfigError("A sweep needs output_dir.", "Set output_dir: runs go to <output_dir>/ratio_<r>.")
    if not (base.get("val_size") or base.get("eval_dataset")):
        raise ConfigError("A sweep compares runs on one evaluation set, but the config has none.",
                          "Set val_size (split per task before subsampling) or eval_dataset.")
    check_series_args(base, "sweep")
    # Every run trains and is evaluated (the sweep compares eval metrics): a user who switched either off is told.
    for key in ("do_train", "do_eval"):
        if key in base and not base[key]:
            raise ConfigError(f"{key}={base[key]!r}, but every sweep run trains and evaluates (do_train and do_eval "
                              "are true for each run).", f"Remove {key} from the sweep config.")
    output_dir = Path(base["output_dir"])
    overwrite = bool(base.get("overwrite_output_dir"))
    check_series_output_dir(output_dir, overwrite, "ratio_", SWEEP_FILES, "sweep")
    base_ratios = DataArguments(dataset_ratios=base.get("dataset_ratios")).dataset_ratios or [1.0]

    plans = []
    for ratio in ratios:
        run_args = {**base, "dataset_ratios": [round(value * ratio, 6) for value in base_ratios],
                    "output_dir": str(output_dir / f"ratio_{ratio:g}"), "do_train": True, "do_eval": True}
        folder = Path(run_args["output_dir"])
        what = f"Sweep run ratio={ratio:g}"
        parsed = parse_series_run(run_args)  # every run's arguments fail here, before the first one trains
        done = None if overwrite else finished_record(folder, run_args, parsed, what)
        if done is None and not overwrite and check_restartable(folder, what):
            run_args["overwrite_output_dir"] = True  # our own unfinished run: start it again
            parsed = parse_series_run(run_args)
        plans.append((ratio, run_args, parsed, done))

    scorer = METRICS[metric]
    runs = []
    for position, (ratio, run_args, parsed, done) in enumerate(plans, start=1):
        print(f"\n== Sweep run {position}/{len(plans)}: ratio {ratio:g}" + (" (finished earlier, skipped) ==" if done
                                                                           else " =="))
        record = done if done is not None else train_and_record(run_args, parsed)
        scores = scorer.compute(SweepRun(ratio, run_args, Path(run_args["output_dir"]), record, parsed))
        if "eval_loss" not in scores and "eval_loss" in record["metrics"]:  # shown beside every task metric
            scores = {**scores, "eval_loss": record["metrics"]["eval_loss"]}
        runs.append({"ratio": ratio, "output_dir": run_args["output_dir"], "status": "skipped" if done else "trained",
                     **{key: record.get(key) for key in ("samples", "tokens", "eval_samples", "steps", "train_time_s",
                                                    "final_loss")},
                     "metrics": scores})
    result = {"metric": metric, "higher_is_better": scorer.higher_is_better, "tolerance": tolerance,
              "runs": runs, "recommended_ratio": recommend(runs, metric, scorer.higher_is_better, tolerance)}
    if is_main_process():
        write_reports(output_dir, result)
    return result


def recommend(runs: list[dict[str, Any]], metric: str, higher_is_better: bool, tolerance: float) -> float:
    """The smallest ratio whose metric is within ``tolerance`` (relative) of the best run's."""
    values = [run["metrics"][metric] for run in runs]
    best = max(values) if higher_is_better else min(values)
    margin = tolerance * abs(best)
    good = [run["ratio"] for run, value in zip(runs, values)
            if (value >= best - margin if higher_is_better else value <= best + margin)]
    return min(good)


def write_reports(output_dir: Path, result: dict[str, Any]) -> None:
    """``sweep.json``, ``sweep.md`` and ``sweep.png`` in ``output_dir``; prints the table."""
    from ..extras.files import write_text_atomically

    write_text_atomically(output_dir / "sweep.json", json.dumps(result, ensure_ascii=False, indent=2) + "\n")
    table = markdown_table(result)
    write_text_atomically(output_dir / "sweep.md", table)
    plot_sweep(output_dir / "sweep.png", result)
    print("\n" + table)
    print(f"Written: {output_dir / 'sweep.json'}, sweep.md, sweep.png")


def markdown_table(result: dict[str, Any]) -> str:
    metric_names = list(result["runs"][0]["metrics"])
    head = ["ratio", "samples", "tokens", "steps", "train time (s)", "eval samples", *metric_names]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for run in result["runs"]:
        cells = [f"{run['ratio']:g}", str(run["samples"]), str(run["tokens"]), str(run["steps"]),
                 f"{run['train_time_s']:.1f}", str(run["eval_samples"]),
                 *(f"{run['metrics'][name]:.4f}" for name in metric_names)]
        lines.append("| " + " | ".join(cells) + " |")
    direction = "higher" if result["higher_is_better"] else "lower"
    lines += ["", f"Metric: {result['metric']} ({direction} is better). Cheapest ratio within "
              f"{result['tolerance']:.0%} of the best: **{result['recommended_ratio']:g}**.", ""]
    return "\n".join(lines)


def plot_sweep(path: Path, result: dict[str, Any]) -> Path:
    """The metric against the data ratio and against the training time, one point per run."""
    from ..extras.plotting import new_figure, save_png

    metric = result["metric"]
    ratios = [run["ratio"] for run in result["runs"]]
    values = [run["metrics"][metric] for run in result["runs"]]
    times = [run["train_time_s"] for run in result["runs"]]
    figure = new_figure(figsize=(10, 4))
    by_ratio, by_cost = figure.subplots(1, 2)
    by_ratio.plot(ratios, values, marker="o")
    by_ratio.axvline(result["recommended_ratio"], color="grey", linestyle="--", linewidth=0.8, label="recommended")
    by_ratio.set_xlabel("data ratio")
    by_ratio.set_ylabel(metric)
    by_ratio.legend()
    by_cost.plot(times, values, marker="o")
    for ratio, time_s, value in zip(ratios, times, values):
        by_cost.annotate(f"{ratio:g}", (time_s, value), textcoords="offset points", xytext=(4, 4))
    by_cost.set_xlabel("train time (s)")
    by_cost.set_ylabel(metric)
    figure.suptitle(f"{metric} vs training data")
    return save_png(figure, path, bbox_inches="tight")
