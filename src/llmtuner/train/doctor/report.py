"""One doctor check's result, and the report they make: a table on the terminal, doctor.json and doctor.md."""

from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Optional

from ...extras.errors import ConfigError

Status = Literal["pass", "warn", "fail", "skip"]
STATUSES = ("pass", "warn", "fail", "skip")
REPORT_FILES = ("doctor.json", "doctor.md")
# Stages whose rows are conversations rendered by a chat template (pt trains raw text, cls a label head).
CHAT_STAGES_EXCLUDED = ("pt", "cls")


@dataclass
class Check:
    """``name`` groups checks (template, masks, special_tokens, numerics, resume, data_mix, fit); ``title`` says
    what was checked; ``value`` is the number behind the verdict (a share, a count, a difference); ``fix`` what to
    change when it is not a pass; ``details`` free-form data for doctor.json (first differing token, tables ...)."""

    name: str
    title: str
    status: Status
    value: Any = None
    message: str = ""
    fix: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DoctorContext:
    """What every check reads, built once by the runner from the user's config (the same parse as `llmtuner
    train`): the parsed argument objects, the tokenizer and our template, and the folder the report goes to.
    ``rows`` is how many rows per dataset the row-level checks look at. ``cache``: what one check loaded that
    another may reuse (the first rows of each dataset, the truncated model), keyed by a name. ``progress``: where
    a check prints what the user should see as it runs (the first example with its masks)."""

    raw: dict[str, Any]
    model_args: Any
    data_args: Any
    training_args: Any
    finetuning_args: Any
    generating_args: Any
    tokenizer: Any
    template: Any
    out_dir: str
    rows: int = 32
    cache: dict[str, Any] = field(default_factory=dict)
    progress: Callable[[str], None] = print

    @property
    def stage(self) -> str:
        return self.finetuning_args.stage

    def chat_stage_skip(self, name: str, title: str) -> Optional[Check]:
        """A ``skip`` for stages whose rows have no chat template (pt, cls), else None."""
        if self.stage in CHAT_STAGES_EXCLUDED or self.template is None:
            return Check(name, title, "skip", message=f"stage {self.stage} renders no chat template: nothing to check.")
        return None

    def first_rows(self, dataset: str) -> Any:
        """The first ``rows`` converted rows of one dataset (``{"messages", "system", ...}``), through the data
        path the stage reads them with (registry, file, num_samples, converters). The converter's report of the
        rows it dropped, and why, is kept under ``drops:<dataset>`` for the masks check."""
        key = f"rows:{dataset}"
        if key not in self.cache:
            import copy

            from ...data.loader import load_conversations

            data_args = copy.copy(self.data_args)  # max_samples only: the stage's other data settings stay
            limit = self.data_args.max_samples
            data_args.max_samples = self.rows if limit is None else min(limit, self.rows)
            with _converter_warnings() as drops:
                self.cache[key] = load_conversations([dataset], data_args, self.stage, seed=self.training_args.seed)
            self.cache[f"drops:{dataset}"] = drops
        return self.cache[key]

    def conversations(self, dataset: str) -> list[tuple[list[dict], Optional[str]]]:
        """(messages, system) of each trained answer of the first rows, as the stage renders it for training:
        sft and kto rows as they are, dpo/rm rows once with the chosen and once with the rejected answer."""
        found = []
        for row in self.first_rows(dataset):
            system = row.get("system") or self.data_args.default_system
            answers = [row[key] for key in ("chosen", "rejected") if row.get(key) is not None]
            if answers:
                found += [([*row["messages"], {"role": "assistant", "content": answer}], system)
                          for answer in answers]
            else:
                found.append((list(row["messages"]), system))
        return found


@contextmanager
def _converter_warnings() -> Iterator[list[str]]:
    """The warnings the converter logs while rows load: it reports dropped rows (how many, why, which) only there."""
    found: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.WARNING:
                found.append(record.getMessage())

    handler = Collect()
    converter_logger = logging.getLogger("llmtuner.data.converters")
    converter_logger.addHandler(handler)
    try:
        yield found
    finally:
        converter_logger.removeHandler(handler)


def exit_code(checks: list[Check]) -> int:
    """1 when any check failed, else 0 (2 stays the CLI's code for a config it refuses)."""
    return 1 if any(check.status == "fail" for check in checks) else 0


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def summary(checks: list[Check]) -> str:
    """``6 pass, 1 warn, 0 fail, 2 skip``."""
    counts = {status: sum(check.status == status for check in checks) for status in STATUSES}
    return ", ".join(f"{count} {status}" for status, count in counts.items())


def check_row(check: Check) -> list[str]:
    """One check as the cells of a table: status, check, value, message, fix (the web UI's table)."""
    return [check.status, f"{check.name}: {check.title}", _cell(check.value), check.message, check.fix]


def format_table(checks: list[Check]) -> str:
    """The terminal table: status, check, value, then the message (and the fix on its own line)."""
    rows = [(check.status.upper(), f"{check.name}: {check.title}", _cell(check.value)) for check in checks]
    widths = [max(len(header), *(len(row[i]) for row in rows)) if rows else len(header)
              for i, header in enumerate(("status", "check", "value"))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(("status", "check", "value"), widths)) + "  message"]
    for check, row in zip(checks, rows):
        # one line per check: a message that quotes an error's "hint:" line stays on it
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + " ".join(check.message.split()))
        if check.fix and check.status in ("warn", "fail"):
            lines.append(" " * (sum(widths) + 6) + "  fix: " + check.fix)
    lines.append(summary(checks))
    return "\n".join(lines)


def _md(text: Any) -> str:
    return _cell(text).replace("|", "\\|").replace("\n", " ")


def format_markdown(checks: list[Check], config: str) -> str:
    """doctor.md: the table, then each check's details that are text (the first example with its masks ...)."""
    lines = [f"# llmtuner doctor: {config}", "", "| status | check | value | message | fix |",
             "|---|---|---|---|---|"]
    lines += ["| " + " | ".join(_md(cell) for cell in check_row(check)) + " |" for check in checks]
    for check in checks:
        shown = {key: value for key, value in check.details.items() if isinstance(value, str) and "\n" in value}
        for key, value in shown.items():
            lines += ["", f"## {check.name}: {key}", "", "```text", value, "```"]
    lines += ["", summary(checks), ""]
    return "\n".join(lines)


def check_report_folder(out_dir: str) -> None:
    """Refuse (before anything loads) a folder whose doctor.json / doctor.md are not an earlier doctor report:
    the doctor replaces its own report, never a user's file of that name."""
    folder = Path(out_dir)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"The doctor's report folder {folder} is a file.", "Pass --out <folder> for the report.")
    json_file = folder / REPORT_FILES[0]
    ours = False
    if json_file.is_file():
        try:
            ours = "llmtuner_doctor" in json.loads(json_file.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            ours = False
    for name in REPORT_FILES:
        if (folder / name).exists() and not ours:
            raise ConfigError(f"{folder / name} exists and is not a report of `llmtuner doctor`.",
                              "Pass --out <another folder>, or move that file away.")


def write_report(checks: list[Check], out_dir: str, config: str) -> list[Path]:
    """doctor.json (every check with its details) and doctor.md into ``out_dir``; returns their paths."""
    from ... import __version__

    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    document = {"llmtuner_doctor": {"version": __version__, "config": config, "exit_code": exit_code(checks)},
                "checks": [check.to_dict() for check in checks]}
    paths = [folder / name for name in REPORT_FILES]
    paths[0].write_text(json.dumps(document, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    paths[1].write_text(format_markdown(checks, config), encoding="utf-8")
    return paths
