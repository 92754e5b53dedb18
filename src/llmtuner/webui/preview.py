"""What the Train tab shows before a run starts: the first rows of a dataset file, the first example as the
model will see it (masked spans marked), both produced by the data pipeline of training itself, and the table of
``llmtuner doctor`` for the tab's config."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

PREVIEW_ROWS = 5


def first_rows(dataset_dir: str, name: str, count: int = PREVIEW_ROWS) -> list[dict[str, Any]]:
    """The first ``count`` raw rows of a registered dataset, read by the training loader."""
    from ..data.loader import load_dataset_file
    from ..data.registry import get_dataset_specs

    spec = get_dataset_specs([name], dataset_dir or "data")[0]
    if spec.formatting == "scoring":  # one file per dimension: the first dimension's file stands for it
        from ..data.scoring import dimension_spec, selected_dimensions

        spec = dimension_spec(spec, selected_dimensions(spec, None)[0])
    raw = load_dataset_file(spec)
    return [raw[index] for index in range(min(count, len(raw)))]


def rows_as_text(rows: list[dict[str, Any]]) -> str:
    return "\n".join(json.dumps(row, ensure_ascii=False) for row in rows)


def first_rendered_example(config: dict[str, Any]) -> str:
    """The first training example of ``config`` decoded, every masked (untrained) span shown as ``[MASKED: ...]``.

    Runs the CLI's checks, then the loader, converter, template and preprocessing of the config's stage on the
    first rows only (``format_example_for_display`` is what ``llmtuner train`` prints at start). Raises the same
    ``LlmtunerError`` as the CLI for a bad config.
    """
    from ..data.loader import load_conversations
    from ..data.templates import format_example_for_display, get_template
    from ..hparams.parser import check_train_args_early
    from ..model.loader import load_tokenizer

    model_args, data_args, finetuning_args, _ = check_train_args_early(config)
    stage = finetuning_args.stage
    few = dataclasses.replace(data_args, max_samples=1, dataset=data_args.dataset[:1])
    conversations = load_conversations(few.dataset, few, stage)
    batch = {"messages": conversations["messages"][:1], "system": conversations["system"][:1]}
    tokenizer = load_tokenizer(model_args)
    if stage == "pt":
        from ..data.preprocess.pretrain import preprocess_pretrain_dataset

        tokens = preprocess_pretrain_dataset(batch, tokenizer, few)
    elif stage == "sft":
        from ..data.preprocess.supervised import preprocess_supervised_dataset

        tokens = preprocess_supervised_dataset(batch, get_template(few.template, tokenizer), tokenizer, few)
    else:  # cls trains on one text and a label, no token masks: show the converted row
        row = conversations[0]
        return json.dumps({key: row[key] for key in row if not key.startswith("_")}, ensure_ascii=False, indent=1)
    if not tokens["input_ids"] or not tokens["input_ids"][0]:
        return "(the first example has no trained token left after truncation to cutoff_len)"
    return format_example_for_display(tokenizer, tokens["input_ids"][0], tokens["labels"][0])


DOCTOR_HEADERS = ["status", "check", "value", "message", "fix"]


def doctor_table(config: dict[str, Any]) -> tuple[list[list[str]], str]:
    """``llmtuner doctor`` on the tab's config, in this process: one row per check (``DOCTOR_HEADERS``) and a line
    with the counts and where doctor.json / doctor.md went. Raises the CLI's ``LlmtunerError`` for a bad config."""
    from ..train.doctor.report import check_row, summary
    from ..train.doctor.runner import diagnose

    checks, paths = diagnose(dict(config), progress=lambda _: None)
    return [check_row(check) for check in checks], f"{summary(checks)}. Report: {paths[1]}"
