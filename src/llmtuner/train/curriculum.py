"""Curriculum learning: train stage by stage, each stage starting from the weights the previous one saved.

A config gets a ``curriculum:`` block next to its ordinary keys::

    curriculum:
      task_key: dataset            # the argument each stage's tasks go to: dataset (default) or scoring_dimensions
      stages:
        - {name: basic, tasks: [competitiveness, innovation], data_ratio: 0.3, epochs: 1}
        - {name: full, tasks: [competitiveness, innovation, diversity], data_ratio: 1.0, epochs: 2,
           learning_rate: 1.0e-4}

Stage ``i`` (from 1) trains into ``<output_dir>/stage_<i>_<name>`` with the config's arguments plus its own
tasks, ``dataset_ratios: <data_ratio>``, ``num_train_epochs: <epochs>``, ``learning_rate`` and the stage's
``args`` (its own arguments, e.g. ``{stage: grpo, reward_funcs: score}``: RL after SFT; a key given on the command
line wins over them, as over the rest of the file). From stage 2 on it
resumes the previous stage's LoRA adapter (``adapter_name_or_path``; for freeze/full tuning the previous stage's
model becomes ``model_name_or_path``). With ``test_dataset: <scoring entry>`` in the config, each finished stage
is tested on it (``eval/scoring_eval.py``; report in ``<stage>/scoring_test``, metrics under the stage's ``test``
in the summary). The block is parsed into ``CurriculumArguments`` (hparams/curriculum_args.py) and removed
before each stage's arguments are parsed. Outputs: ``curriculum_summary.json`` (per stage:
samples, tokens, steps, time, final loss) and ``curriculum_loss.png`` (every stage's loss on one step axis).
Running the same config again skips the stages that finished (``run_series``).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

from ..extras.errors import ConfigError
from ..extras.files import write_text_atomically
from ..extras.logging import get_logger, is_main_process
from ..hparams.curriculum_args import CurriculumStage, parse_curriculum_block
from ..hparams.reader import COMMAND_LINE, UserArgs

if TYPE_CHECKING:
    from transformers import TrainerCallback

logger = get_logger(__name__)

SUMMARY_FILE = "curriculum_summary.json"
LOSS_PLOT_FILE = "curriculum_loss.png"


def split_curriculum(args: dict[str, Any]) -> tuple[str, list[CurriculumStage], dict[str, Any]]:
    """``(task_key, stages, the other arguments)`` from a raw config holding a ``curriculum`` block.

    Raises ConfigError for a missing or malformed block (hparams/curriculum_args.py: no stages, a stage without
    name or tasks, an unknown key, a repeated name, a data_ratio/epochs/learning_rate that is not a positive
    number), and for top-level arguments the stages would replace.
    """
    base = UserArgs(args)  # keeps where each key was set: a command-line value beats a stage's args
    block = base.pop("curriculum", None)
    if block is None:
        raise ConfigError("The config has no `curriculum:` block.",
                          "Add one (see README, Curriculum learning), or train it with `llmtuner train`.")
    curriculum = parse_curriculum_block(block)  # hparams/curriculum_args.py: typed, unknown keys suggested
    task_key, stages = curriculum.task_key, curriculum.stages
    if not base.get("output_dir"):
        raise ConfigError("A curriculum needs output_dir.", "Set output_dir: the stages are written to "
                          "<output_dir>/stage_<i>_<name>.")
    # Each stage sets its tasks and its data ratio; a top-level value would be silently replaced.
    for key, stage_key in ((task_key, "tasks"), ("dataset_ratios", "data_ratio")):
        if key in base:
            raise ConfigError(f"{key}={base[key]!r} is set at the top level, but each curriculum stage sets its own "
                              f"{key} (from the stage's `{stage_key}`).",
                              f"Remove {key} from the top level and give each stage its `{stage_key}`.")
    from ..hparams.rules import check_series_args

    check_series_args(base, "curriculum")
    return task_key, stages, base


def stage_dir(output_dir: Union[str, Path], position: int, stage: CurriculumStage) -> Path:
    return Path(output_dir) / f"stage_{position}_{stage.name}"


def stage_args(base: dict[str, Any], task_key: str, stages: list[CurriculumStage], position: int) -> dict[str, Any]:
    """The full arguments of stage ``position`` (from 1): the config, the stage's settings, the previous weights."""
    stage = stages[position - 1]
    typed = {key for key, where in getattr(base, "origins", {}).items() if where == COMMAND_LINE}
    own = {key: value for key, value in (stage.args or {}).items() if key not in typed}
    args = {**base, **own, task_key: ",".join(stage.tasks), "dataset_ratios": stage.data_ratio,
            "output_dir": str(stage_dir(base["output_dir"], position, stage))}
    if stage.epochs is not None:
        args["num_train_epochs"] = stage.epochs
    if stage.learning_rate is not None:
        args["learning_rate"] = stage.learning_rate
    if position > 1:
        previous = str(stage_dir(base["output_dir"], position - 1, stages[position - 2]))
        if base.get("finetuning_type", "lora") == "lora":
            args["adapter_name_or_path"] = previous  # resumed trainable: model/adapter.py keeps the last adapter
        else:
            args["model_name_or_path"] = previous
    return args


def run_curriculum(
    args: Union[dict[str, Any], list[str], None] = None,
    callbacks: Optional[list["TrainerCallback"]] = None,
) -> dict[str, Any]:
    """Train every stage of the config's curriculum in order; returns the summary (also written as JSON).

    Every stage's arguments are validated before the first stage trains. Stages that finished with the same
    arguments are skipped; ``overwrite_output_dir: true`` retrains them all.
    """
    from ..hparams.parser import read_args
    from .run_series import (
        check_restartable,
        check_series_output_dir,
        finished_record,
        parse_series_run,
        train_and_record,
    )

    task_key, stages, base = split_curriculum(read_args(args))
    test_dataset = base.pop("test_dataset", None)  # not a training argument: each finished stage is tested on it
    if test_dataset:  # a wrong entry fails now, not after the first stage trained
        from ..eval.scoring_eval import scoring_spec

        scoring_spec(test_dataset, base.get("dataset_dir", "data"))
    output_dir = Path(base["output_dir"])
    overwrite = bool(base.get("overwrite_output_dir"))
    check_series_output_dir(output_dir, overwrite, "stage_", (SUMMARY_FILE, LOSS_PLOT_FILE), "curriculum")
    plans = []
    for position, stage in enumerate(stages, start=1):
        run_args = stage_args(base, task_key, stages, position)
        folder = Path(run_args["output_dir"])
        what = f"Curriculum stage {position} ({stage.name})"
        parsed = parse_series_run(run_args)  # every stage's arguments fail here, before the first stage trains
        done = None if overwrite else finished_record(folder, run_args, parsed, what)
        if done is None:
            if not overwrite and check_restartable(folder, what):
                run_args["overwrite_output_dir"] = True  # our own unfinished stage: start it again
                parsed = parse_series_run(run_args)
            _check_stage_data(parsed[1])  # and every stage's datasets
        plans.append((stage, run_args, parsed, done))

    summary: list[dict[str, Any]] = []
    for position, (stage, run_args, parsed, done) in enumerate(plans, start=1):
        header = (f"Curriculum stage {position}/{len(plans)}: {stage.name} ({task_key}: {', '.join(stage.tasks)}; "
                  f"data_ratio {stage.data_ratio:g})")
        if done is not None:
            print(f"\n== {header}: finished earlier, skipped ==")
            record, status = done, "skipped"
        else:
            print(f"\n== {header} ==")
            record, status = train_and_record(run_args, parsed, callbacks), "trained"
        described = {key: value for key, value in asdict(stage).items() if key != "position"}
        summary.append({"stage": position, **described, "output_dir": run_args["output_dir"], "status": status,
                        **record})
        if test_dataset and is_main_process():
            from ..eval.scoring_eval import stage_test_metrics

            summary[-1]["test"] = stage_test_metrics(run_args, test_dataset)
    result = {"task_key": task_key, "stages": summary,
              "total_steps": sum(item["steps"] for item in summary),
              "total_train_time_s": round(sum(item["train_time_s"] for item in summary), 3)}
    if is_main_process():
        write_text_atomically(output_dir / SUMMARY_FILE, json.dumps(result, ensure_ascii=False, indent=2) + "\n")
        plot = plot_curriculum_loss(output_dir, [(item["stage"], item["name"], Path(item["output_dir"]))
                                                 for item in summary])
        _print_summary(output_dir, summary, plot)
    return result


def _check_stage_data(data_args: Any) -> None:
    """The stage's dataset names, registry entries and scoring dimensions (no file is read)."""
    from ..data.registry import get_dataset_specs
    from ..data.scoring import check_scoring_dimensions

    check_scoring_dimensions(get_dataset_specs(data_args.dataset or [], data_args.dataset_dir),
                             data_args.scoring_dimensions)
    if data_args.eval_dataset:
        get_dataset_specs(data_args.eval_dataset, data_args.dataset_dir)


def plot_curriculum_loss(output_dir: Path, stages: list[tuple[int, str, Path]]) -> Optional[Path]:
    """Every stage's training loss on one step axis (stage after stage), stage boundaries marked; returns the PNG."""
    from ..extras.plotting import new_figure, save_png, smooth
    from .run_series import loss_history

    figure = new_figure(figsize=(8, 4.5))
    axis = figure.add_subplot()
    offset, plotted = 0, False
    for position, name, folder in stages:
        points = loss_history(folder)
        if not points:
            continue
        steps = [offset + step for step, _ in points]
        values = [loss for _, loss in points]
        line = axis.plot(steps, values, alpha=0.35)[0]
        axis.plot(steps, smooth(values), color=line.get_color(), label=f"stage {position}: {name}")
        if offset:
            axis.axvline(offset, color="grey", linestyle="--", linewidth=0.8)
        offset = steps[-1]
        plotted = True
    if not plotted:
        logger.warning("No stage logged a training loss: no curriculum loss plot.")
        return None
    axis.set_xlabel("step (all stages)")
    axis.set_ylabel("loss")
    axis.set_title(f"curriculum loss of {output_dir.name}")
    axis.legend()
    return save_png(figure, output_dir / LOSS_PLOT_FILE, bbox_inches="tight")


def _print_summary(output_dir: Path, summary: list[dict[str, Any]], plot: Optional[Path]) -> None:
    print("\nCurriculum summary")
    print(f"{'stage':<28} {'status':<8} {'samples':>8} {'steps':>6} {'time s':>8} {'final loss':>10}")
    for item in summary:
        loss = "-" if item["final_loss"] is None else f"{item['final_loss']:.4f}"
        print(f"{str(item['stage']) + '. ' + item['name']:<28} {item['status']:<8} {item['samples']:>8} "
              f"{item['steps']:>6} {item['train_time_s']:>8.1f} {loss:>10}")
    print(f"Summary: {output_dir / SUMMARY_FILE}" + (f"\nLoss plot: {plot}" if plot else ""))
