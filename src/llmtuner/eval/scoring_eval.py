"""``llmtuner test cfg.yaml test_dataset=<scoring entry>``: a tuned scoring model answers a registered test split.

The test split is any ``"formatting": "scoring"`` registry entry (``risk_scoring_test``): its prompts are built
exactly as in training, in the ``scoring_mode`` the model was trained with (read from the ``run_args.yaml`` of
the adapter, or of the model, unless the config sets ``scoring_mode``). The model answers greedily in batches
(``ChatEngine.generate_many``, with a progress bar); ``scoring_report`` reads the answers back and writes the
report. ``compare_results`` puts several report folders side by side; ``stage_test_metrics`` is what a
curriculum calls after each stage.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

from ..extras.constants import RUN_ARGS_FILE
from ..extras.errors import ConfigError, DatasetError
from ..extras.logging import get_logger
from .scoring_report import METRIC_TITLES, RESULTS_JSON, check_report_dir, metrics_table

if TYPE_CHECKING:
    from ..data.registry import DatasetSpec
    from ..data.scoring import ScoringTestItem
    from ..hparams import DataArguments, FinetuningArguments, GeneratingArguments, ModelArguments
    from ..hparams.task_test_args import TaskTestArguments

logger = get_logger(__name__)

COMPARE_JSON, COMPARE_MD = "scoring_compare.json", "scoring_compare.md"
ANSWER_MARGIN = 16  # tokens allowed beyond the longest gold answer when max_new_tokens is not set


def run_scoring_test(model_args: "ModelArguments", data_args: "DataArguments",
                     finetuning_args: "FinetuningArguments", generating_args: "GeneratingArguments",
                     test_args: "TaskTestArguments", user_args: dict[str, Any]) -> dict[str, Any]:
    """Check the test entry, its rows and save_dir, load the model, answer, read back, write the report.

    ``user_args`` are the keys the user set (to tell a chosen scoring_mode / max_new_tokens from a default).

    Raises:
        ConfigError: the entry is not a scoring dataset, or save_dir holds results.
        DatasetError: a test file without scores (or rows that cannot be scored).
    """
    from ..model.engine import ChatEngine
    from .scoring_report import build_report, score_answers, write_report

    spec = scoring_spec(test_args.test_dataset, data_args.dataset_dir)
    mode = data_args.scoring_mode if "scoring_mode" in user_args else recorded_scoring_mode(model_args)
    folder = check_report_dir(test_args.save_dir, test_args.overwrite_save_dir)
    items = load_test_items(spec, data_args.scoring_dimensions, mode)
    logger.info(f"Scoring test {spec.name}: {len(items)} prompts (scoring_mode {mode}), "
                f"{sum(len(item.dimensions) for item in items)} scores to read back.")
    engine = ChatEngine.from_parsed(model_args, data_args, finetuning_args, generating_args)
    golds = [gold_answer(item, spec, mode == "multi") for item in items]
    limit = generating_args.max_new_tokens if "max_new_tokens" in user_args else max(
        len(engine.tokenizer(text, add_special_tokens=False)["input_ids"]) for text in golds) + ANSWER_MARGIN
    prompts = [engine.encode([{"role": "user", "content": item.prompt}]) for item in items]
    responses = engine.generate_many(prompts, test_args.batch_size, desc="Scoring test", do_sample=False,
                                     max_new_tokens=int(limit))
    records = score_answers(items, [response.text for response in responses], spec, multi=mode == "multi")
    gold_texts = {(item.company, name): "\n".join((item.gold[name]["think"], item.gold[name]["reason"]))
                  for item in items for name in item.dimensions}
    report = build_report(records, spec, test_args.score_bins, gold_texts)
    run_info = {"test_dataset": spec.name, "scoring_mode": mode, "model": model_args.model_name_or_path,
                "adapters": model_args.adapter_name_or_path or [], "template": data_args.template,
                "max_new_tokens": int(limit), "num_prompts": len(items)}
    written = write_report(folder, report, records, spec, run_info)
    print(metrics_table(report, dict(spec.dimensions)))
    print(f"{report['overall']['parse_failures']} of {report['overall']['num_samples']} scores could not be read "
          f"back.\nReport: {', '.join(str(path) for path in written)}")
    return {**run_info, **report}


def scoring_spec(name: Optional[str], dataset_dir: str) -> "DatasetSpec":
    from ..data.registry import get_dataset_specs

    spec = get_dataset_specs([name], dataset_dir)[0]
    if spec.formatting != "scoring":
        raise ConfigError(
            f"test_dataset={name} is registered with formatting {spec.formatting!r}, not a scoring dataset.",
            'Name an entry with "formatting": "scoring" (e.g. risk_scoring_test), or use test_file=<rows with '
            "instruction/input/output/task> for a task test.")
    return spec


def load_test_items(spec: "DatasetSpec", dimensions: Optional[list[str]], mode: str) -> list["ScoringTestItem"]:
    """The test prompts of ``spec`` with their gold scores (every row must hold one)."""
    from ..data.loader import load_dataset_file
    from ..data.scoring import dimension_spec, scoring_test_items, selected_dimensions

    raw = {name: load_dataset_file(dimension_spec(spec, name)) for name in selected_dimensions(spec, dimensions)}
    items = scoring_test_items(raw, spec, mode)
    if not items:
        raise DatasetError(f"Test dataset {spec.name!r} ({spec.path}) holds no rows.",
                           "Put the test rows in its <dimension>.json files.")
    return items


def gold_answer(item: "ScoringTestItem", spec: "DatasetSpec", multi: bool) -> str:
    """The answer training would have taught for ``item`` (its length bounds the generation)."""
    from ..data.scoring import format_answer, format_multi_answer

    high, labels = spec.score_range[1], dict(spec.dimensions)
    blocks = [(labels[name], item.gold[name]["think"], item.gold[name]["score"], item.gold[name]["reason"])
              for name in item.dimensions]
    return format_multi_answer(blocks, high) if multi else format_answer(*blocks[0][1:], high)


def recorded_scoring_mode(model_args: "ModelArguments") -> str:
    """``scoring_mode`` of the run_args.yaml left by training in the last adapter (or the model) folder; single
    (the training default) when there is none."""
    import yaml

    folder = (model_args.adapter_name_or_path or [model_args.model_name_or_path])[-1]
    path = Path(folder) / RUN_ARGS_FILE
    if not path.is_file():
        logger.info(f"No {path}: scoring_mode single (set scoring_mode: multi for a model trained in multi mode).")
        return "single"
    try:
        recorded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"Cannot read the training arguments in {path} ({error}), so the scoring_mode the model "
                          "was trained with is unknown.", "Set scoring_mode: single or multi.") from error
    mode = recorded.get("scoring_mode", "single")
    logger.info(f"scoring_mode {mode}, as the model was trained ({path}).")
    return mode


# ---- comparing report folders ----

def compare_results(folders: Sequence[str], save_dir: Optional[str], overwrite: bool = False) -> dict[str, Any]:
    """Two or more report folders side by side: ``scoring_compare.json`` / ``.md`` (one table of the overall and
    per-dimension metrics) and one chart per metric (``compare_<metric>.png``).

    Raises:
        ConfigError: fewer than two folders, a folder without ``scoring_results.json``, or save_dir with results.
    """
    from .scoring_charts import plot_metric_comparison

    if len(folders) < 2:
        raise ConfigError(f"--compare needs two or more result folders, got {len(folders)}.",
                          "llmtuner test --compare saves/base_test saves/tuned_test save_dir=saves/compare")
    names = [f"compare_{metric}.png" for metric in METRIC_TITLES]
    target = check_report_dir(save_dir, overwrite, (COMPARE_JSON, COMPARE_MD, *names), "--compare")
    reports = {}
    for folder in folders:
        path = Path(folder) / RESULTS_JSON
        if not path.is_file():
            raise ConfigError(f"{folder} holds no {RESULTS_JSON}.",
                              "Pass folders written by `llmtuner test ... test_dataset=<scoring entry>`.")
        reports[folder] = json.loads(path.read_text(encoding="utf-8"))
    runs = _run_names(list(folders))
    dimensions = list(dict.fromkeys(name for report in reports.values() for name in report["dimensions"]))
    groups = [*dimensions, "overall"]
    table: dict[str, dict[str, dict[str, Optional[float]]]] = {}
    for metric in METRIC_TITLES:
        table[metric] = {run: {group: _metric(report, group, metric) for group in groups}
                         for run, report in zip(runs, reports.values())}
    target.mkdir(parents=True, exist_ok=True)
    result = {"runs": dict(zip(runs, map(str, folders))), "groups": groups, "metrics": table}
    (target / COMPARE_JSON).write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    (target / COMPARE_MD).write_text(compare_markdown(result), encoding="utf-8")
    for metric, title in METRIC_TITLES.items():
        plot_metric_comparison(metric, title, runs, groups,
                               {run: [table[metric][run][group] for group in groups] for run in runs},
                               target / f"compare_{metric}.png")
    print(compare_markdown(result))
    return result


def compare_markdown(result: dict[str, Any]) -> str:
    runs = list(result["runs"])
    lines = ["# Scoring comparison", "", *(f"- **{run}**: `{folder}`" for run, folder in result["runs"].items()), "",
             "| metric | dimension | " + " | ".join(runs) + " |", "| --- | --- |" + " ---: |" * len(runs)]
    for metric, by_run in result["metrics"].items():
        for group in result["groups"]:
            cells = [by_run[run][group] for run in runs]
            lines.append(f"| {METRIC_TITLES[metric]} | {group} | "
                         + " | ".join("n/a" if value is None else f"{value:.4f}" for value in cells) + " |")
    return "\n".join(lines) + "\n"


def _metric(report: dict[str, Any], group: str, metric: str) -> Optional[float]:
    entry = report["overall"] if group == "overall" else report["dimensions"].get(group)
    return None if entry is None else entry.get(metric)


def _run_names(folders: list[str]) -> list[str]:
    """Short names: the folder names, or the shortest unique path tails (stage_1_x/scoring_test ...)."""
    parts = [Path(folder).resolve().parts for folder in folders]
    for depth in range(1, max(len(p) for p in parts) + 1):
        names = ["/".join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    return [str(folder) for folder in folders]


# ---- a curriculum stage ----

STAGE_TEST_DIR = "scoring_test"


def stage_test_metrics(run_args: dict[str, Any], test_dataset: str, batch_size: Optional[int] = None
                       ) -> dict[str, Any]:
    """Test the model a finished curriculum stage saved (``run_args["output_dir"]``) on ``test_dataset`` into
    ``<stage>/scoring_test``; returns the overall metrics and each dimension's MAE (a stage whose report is
    there already is read, not tested again)."""
    from ..hparams.parser import get_task_test_args

    stage = Path(run_args["output_dir"])
    folder = stage / STAGE_TEST_DIR
    if not (folder / RESULTS_JSON).is_file():
        lora = run_args.get("finetuning_type", "lora") == "lora"
        args = {"model_name_or_path": run_args["model_name_or_path"] if lora else str(stage),
                "template": run_args.get("template", "auto"), "dataset_dir": run_args.get("dataset_dir", "data"),
                "test_dataset": test_dataset, "save_dir": str(folder), "overwrite_save_dir": True,
                "batch_size": batch_size or run_args.get("per_device_eval_batch_size") or 8,
                **({"adapter_name_or_path": str(stage)} if lora else {}),
                **{key: run_args[key] for key in ("scoring_mode", "max_new_tokens", "cutoff_len") if key in run_args}}
        parsed = get_task_test_args(args)
        run_scoring_test(*parsed, user_args=args)
    report = json.loads((folder / RESULTS_JSON).read_text(encoding="utf-8"))
    overall = {key: report["overall"].get(key) for key in (*METRIC_TITLES, "num_samples", "parse_failures")}
    return {"report": str(folder), **overall,
            "mae_by_dimension": {name: entry["mae"] for name, entry in report["dimensions"].items()}}

