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


def flag_tables() -> str:
    from llmtuner.hparams import DataArguments, FinetuningArguments, GeneratingArguments, ModelArguments

    parts = []
    for cls in (ModelArguments, DataArguments, FinetuningArguments, GeneratingArguments):
        parts.append(f"**{cls.__name__}**\n\n| flag | default | meaning |\n| --- | --- | --- |")
        for field in dataclasses.fields(cls):
            default = field.default if field.default is not dataclasses.MISSING else ""
            help_text = field.metadata.get("help", "").replace("|", "\\|")
            parts.append(f"| `{field.name}` | `{default}` | {help_text} |")
        parts.append("")
    parts.append(
        "Plus every field of transformers' `Seq2SeqTrainingArguments` (`output_dir`, `learning_rate`, `num_train_epochs`, "
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
