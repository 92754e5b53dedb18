"""Print (or --update docs/flags.md with) the flag reference table generated from the argument dataclasses.

The dataclasses' help strings are the single source of truth; tests/test_readme.py checks docs/flags.md is current.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from pathlib import Path

BEGIN, END = "<!-- flags:begin -->", "<!-- flags:end -->"
DEFAULT_PAGE = Path(__file__).resolve().parents[1] / "docs" / "flags.md"


def _sections() -> list[tuple[type, str]]:
    """Each argument dataclass with where its keys go (training config, another command, or a block)."""
    from llmtuner.hparams import DataArguments, FinetuningArguments, GeneratingArguments, ModelArguments
    from llmtuner.hparams.api_args import ApiArguments
    from llmtuner.hparams.curriculum_args import CurriculumArguments, CurriculumStage
    from llmtuner.hparams.evaluation_args import EvaluationArguments, ForgettingArguments
    from llmtuner.hparams.export_args import ExportArguments
    from llmtuner.hparams.predict_args import PredictArguments
    from llmtuner.hparams.rl_args import RLArguments
    from llmtuner.hparams.sweep_args import SweepArguments
    from llmtuner.hparams.task_test_args import TaskTestArguments
    from llmtuner.hparams.watch_args import ForgettingWatchArguments

    return [
        (ModelArguments, "training config and every command that loads a model"),
        (DataArguments, "training config"),
        (FinetuningArguments, "training config"),
        (RLArguments, "training config of stage grpo / rloo (docs/rl.md)"),
        (GeneratingArguments, "chat, test, predict, api, sft with do_predict"),
        (CurriculumArguments, "the `curriculum:` block of a training config"),
        (CurriculumStage, "each entry of `curriculum: stages:`"),
        (ForgettingWatchArguments, "the `forgetting_watch:` block of a pt/sft config (plus EvaluationArguments' "
                                   "benchmark keys, except save_dir)"),
        (SweepArguments, "`llmtuner sweep` options (`--ratios`, `--metric`, `--tolerance`)"),
        (EvaluationArguments, "`llmtuner eval`"),
        (ForgettingArguments, "`llmtuner forgetting`"),
        (ExportArguments, "`llmtuner export`"),
        (PredictArguments, "`llmtuner predict` (classifiers and reward models)"),
        (TaskTestArguments, "`llmtuner test`"),
        (ApiArguments, "`llmtuner api`"),
    ]


def flag_tables() -> str:
    parts = []
    for cls, where in _sections():
        parts.append(f"**{cls.__name__}** ({where})\n\n| flag | default | meaning |\n| --- | --- | --- |")
        inherited = {field.name for base in cls.__mro__[1:] if dataclasses.is_dataclass(base)
                     for field in dataclasses.fields(base)}
        for field in dataclasses.fields(cls):
            if field.name in inherited or not field.init or field.name == "position":
                continue
            default = field.default if field.default is not dataclasses.MISSING else ""
            help_text = field.metadata.get("help", "").replace("|", "\\|")
            parts.append(f"| `{field.name}` | `{default}` | {help_text} |")
        parts.append("")
    parts.append(
        "Training configs also take every field of transformers' `Seq2SeqTrainingArguments` (`output_dir`, "
        "`learning_rate`, `num_train_epochs`, "
        "`max_steps`, `per_device_train_batch_size`, `gradient_accumulation_steps`, `gradient_checkpointing`, `bf16`, "
        "`save_steps`, `logging_steps`, `report_to`, `deepspeed`, `resume_from_checkpoint`, ...)."
    )
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--update", type=Path, nargs="?", const=DEFAULT_PAGE,
                        help=f"rewrite the section between the flag markers of this file (default: {DEFAULT_PAGE})")
    args = parser.parse_args(argv)
    tables = flag_tables()
    if not args.update:
        print(tables)
        return 0
    text = args.update.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        print(f"error: {args.update} has no {BEGIN} ... {END} section", file=sys.stderr)
        return 2
    args.update.write_text(pattern.sub(lambda _: f"{BEGIN}\n{tables}\n{END}", text), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
