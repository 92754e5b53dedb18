"""Read MMLU, C-Eval, CMMLU and GSM8K from their original file layouts on local disk.

Layouts (the files as their authors publish them):
- MMLU: ``data/{dev,val,test}/{subject}_{split}.csv``, no header: question, A, B, C, D, answer.
- C-Eval: ``{dev,val,test}/{subject}_{split}.csv``, header id,question,A,B,C,D,answer[,explanation]. The official
  test split has no answers and is refused.
- CMMLU: ``{dev,test}/{subject}.csv``, header ,Question,A,B,C,D,Answer.
- GSM8K: ``{train,test}.jsonl`` of {"question", "answer"}, the answer ending in ``#### N``.

Subject names and categories come from our mapping files (``eval/mappings/<task>.json``, written from the
published category lists). Question ids are ``<subject>/<row>`` (row = 0-based data row in the split file), so two
runs on the same files can be compared question by question.
"""

from __future__ import annotations

import csv
import json
import random
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Optional

from ..extras.errors import ConfigError, DatasetError
from ..extras.logging import get_logger
from ..extras.suggest import closest_names

logger = get_logger(__name__)

CHOICES = ("A", "B", "C", "D")
CHOICES_LOWER = tuple(letter.lower() for letter in CHOICES)  # C-Eval / CMMLU column names, lower-cased


@dataclass(frozen=True)
class TaskSpec:
    """How one benchmark is laid out and scored."""

    name: str
    lang: str  # the language of its questions: en or zh
    kind: str  # "choice" (option letter) or "math" (generated number)
    default_split: str
    shot_split: str  # where the k-shot examples come from
    header: bool = True  # CSV files start with a header row


TASK_SPECS: dict[str, TaskSpec] = {
    "mmlu": TaskSpec("mmlu", "en", "choice", default_split="test", shot_split="dev", header=False),
    "ceval": TaskSpec("ceval", "zh", "choice", default_split="val", shot_split="dev"),
    "cmmlu": TaskSpec("cmmlu", "zh", "choice", default_split="test", shot_split="dev"),
    "gsm8k": TaskSpec("gsm8k", "en", "math", default_split="test", shot_split="train"),
}
GSM8K_SUBJECT = "gsm8k"


@dataclass(frozen=True)
class Question:
    """One benchmark item: a multiple-choice question (``options`` A-D) or a math problem (no options).

    ``answer`` is the gold option letter, or the final number of a math problem; ``solution`` is a math problem's
    worked answer (used in few-shot examples).
    """

    id: str
    subject: str
    question: str
    answer: str
    options: dict[str, str] = field(default_factory=dict)
    solution: str = ""


@dataclass
class Subject:
    name: str  # the file name's subject key, e.g. high_school_physics
    display_name: str  # what the prompt calls it, e.g. "high school physics" or "高中物理"
    category: str
    shots: list[Question]  # the k-shot examples, in file order
    questions: list[Question]
    total_in_split: int  # questions in the file before max_samples


@dataclass
class Benchmark:
    task: str
    split: str
    lang: str
    kind: str
    folder: Path
    subjects: list[Subject]

    @property
    def num_questions(self) -> int:
        return sum(len(subject.questions) for subject in self.subjects)


def load_benchmark(
    task: str,
    task_dir: Optional[str],
    split: Optional[str] = None,
    subjects: Optional[list[str]] = None,
    n_shot: int = 5,
    max_samples: Optional[int] = None,
    seed: int = 42,
    lang: Optional[str] = None,
) -> Benchmark:
    """Read a benchmark split with its k-shot examples; every file problem is a ``DatasetError`` naming the file.

    ``subjects`` None means every subject whose file is in the split folder. ``max_samples`` keeps that many
    questions per subject, drawn with ``seed`` (the same questions whatever other subjects are chosen), in file
    order. The k-shot examples are the first ``n_shot`` items of the dev split (GSM8K: of train.jsonl).
    """
    spec = TASK_SPECS[task]
    split = split or spec.default_split
    folder = resolve_task_dir(task, task_dir)
    if spec.kind == "math":
        chosen = [_read_gsm8k_subject(folder, split, subjects, n_shot)]
    else:
        mapping = load_mapping(task)
        names = _choose_subjects(task, folder, split, subjects, mapping)
        chosen = [_read_choice_subject(spec, folder, split, name, mapping[name], n_shot) for name in names]
    if split == spec.shot_split and n_shot:
        logger.warning(f"{task}: scoring the {split} split, which also provides the {n_shot}-shot examples; "
                       "those questions are then answered with themselves in the prompt.")
    for subject in chosen:
        subject.questions = sample_questions(subject.questions, max_samples, seed, subject.name)
    return Benchmark(task, split, lang or spec.lang, spec.kind, folder, chosen)


def subjects_per_task(tasks: list[str], subjects: Optional[list[str]]) -> dict[str, Optional[list[str]]]:
    """Each task's share of ``subjects`` when several tasks run at once (None: all of its subjects).

    With one task the list is passed on whole (its reader names typos precisely). With several, each subject must
    belong to at least one task, and each multiple-choice task must get at least one; GSM8K has no subjects.
    """
    if not subjects or len(tasks) == 1:
        return {task: subjects for task in tasks}
    shares = {task: [name for name in subjects if name in load_mapping(task)]
              for task in tasks if TASK_SPECS[task].kind == "choice"}
    unknown = [name for name in subjects if not any(name in share for share in shares.values())]
    if unknown:
        raise ConfigError(f"subjects: {', '.join(unknown)} belong to none of the tasks {', '.join(shares)}.",
                          "Check the spelling against llmtuner/eval/mappings/<task>.json.")
    for task, share in shares.items():
        if not share:
            raise ConfigError(f"subjects names no {task} subject, so there would be nothing to score for {task}.",
                              f"Add {task} subjects, or evaluate {task} in a separate run.")
    return {task: shares.get(task) for task in tasks}


def sample_questions(questions: list[Question], max_samples: Optional[int], seed: int, key: str) -> list[Question]:
    """``max_samples`` of ``questions`` drawn with ``seed`` and ``key`` (the subject), kept in file order."""
    if max_samples is None or len(questions) <= max_samples:
        return questions
    keep = sorted(random.Random(f"{seed}/{key}").sample(range(len(questions)), max_samples))
    return [questions[index] for index in keep]


def resolve_task_dir(task: str, task_dir: Optional[str]) -> Path:
    """The benchmark's own folder: ``task_dir`` itself when it has the layout, else ``task_dir/<task>``."""
    if not task_dir:
        raise ConfigError(f"task_dir is not set, so there is no {task} data to read.",
                          f"Set task_dir to the folder holding {task} in its original layout "
                          f"({_layout_text(task)}), e.g. task_dir: benchmarks; {DOWNLOAD_HINT}")
    base = Path(task_dir).expanduser()
    if not base.is_dir():
        raise ConfigError(f"task_dir={task_dir} is not a folder.",
                          f"Point task_dir at a folder holding {task}/ in its original layout ({_layout_text(task)}); "
                          f"{DOWNLOAD_HINT}")
    for folder in (base, base / task):
        if _has_layout(task, folder):
            return folder
    raise DatasetError(
        f"task_dir={task_dir} holds no {task} files in the original layout ({_layout_text(task)}), "
        f"neither directly nor in {base / task}.",
        f"Point task_dir at the folder you unpacked {task} into, or at its parent; {DOWNLOAD_HINT}",
    )


# Where the official files come from and where they go: docs/evaluation.md, "Getting the benchmark files".
DOWNLOAD_HINT = "docs/evaluation.md (Getting the benchmark files) says what to download and where to unpack it."


@lru_cache(maxsize=None)
def load_mapping(task: str) -> dict[str, dict[str, str]]:
    """Subject -> {"name": display name, "category": ...} for ``task`` (mmlu, ceval, cmmlu)."""
    text = resources.files("llmtuner.eval").joinpath("mappings", f"{task}.json").read_text(encoding="utf-8")
    return json.loads(text)


# ---- multiple choice ----

def _has_layout(task: str, folder: Path) -> bool:
    if task == "gsm8k":
        return (folder / "test.jsonl").is_file() or (folder / "train.jsonl").is_file()
    if task == "mmlu":
        return (folder / "data").is_dir() or any((folder / split).is_dir() for split in ("dev", "val", "test"))
    return (folder / "dev").is_dir()


def _layout_text(task: str) -> str:
    return {
        "mmlu": "data/{dev,val,test}/<subject>_<split>.csv",
        "ceval": "{dev,val}/<subject>_<split>.csv",
        "cmmlu": "{dev,test}/<subject>.csv",
        "gsm8k": "train.jsonl and test.jsonl",
    }[task]


def _split_folder(task: str, folder: Path, split: str) -> Path:
    if task == "mmlu" and (folder / "data").is_dir():
        folder = folder / "data"
    return folder / split


def _subject_file(task: str, folder: Path, split: str, subject: str) -> Path:
    name = f"{subject}.csv" if task == "cmmlu" else f"{subject}_{split}.csv"
    return _split_folder(task, folder, split) / name


def _subjects_in(task: str, folder: Path, split: str) -> list[str]:
    split_folder = _split_folder(task, folder, split)
    if not split_folder.is_dir():
        present = sorted(p.name for p in split_folder.parent.iterdir() if p.is_dir())
        raise DatasetError(f"{task}: there is no {split} split in {split_folder.parent} (found: "
                           f"{', '.join(present) or 'no folders'}).",
                           "Choose one of those splits (split: ...), or check task_dir.")
    suffix = ".csv" if task == "cmmlu" else f"_{split}.csv"
    return sorted(p.name[: -len(suffix)] for p in split_folder.glob(f"*{suffix}"))


def _choose_subjects(task: str, folder: Path, split: str, wanted: Optional[list[str]],
                     mapping: dict[str, dict[str, str]]) -> list[str]:
    present = _subjects_in(task, folder, split)
    unknown = [name for name in present if name not in mapping]
    if unknown:
        raise DatasetError(
            f"{task}: {_split_folder(task, folder, split)} holds subjects that are not {task} subjects: "
            f"{', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}.",
            f"Check that task={task} matches the files in task_dir (subjects are listed in "
            f"llmtuner/eval/mappings/{task}.json).",
        )
    if not wanted:
        if not present:
            raise DatasetError(f"{task}: {_split_folder(task, folder, split)} holds no subject files.",
                               f"Expected files named {_layout_text(task)}.")
        return present
    for name in wanted:
        if name not in mapping:
            close = closest_names(name, mapping, n=3, cutoff=0.6)
            raise ConfigError(f"subjects: {name!r} is not a {task} subject.",
                              (f"Did you mean {' or '.join(close)}? " if close else "")
                              + f"The subjects are the keys of llmtuner/eval/mappings/{task}.json.")
        if name not in present:
            raise DatasetError(f"{task}: subject {name} has no file {_subject_file(task, folder, split, name)}.",
                               "Copy the complete benchmark into task_dir, or leave that subject out.")
    return list(dict.fromkeys(wanted))


def _read_choice_subject(spec: TaskSpec, folder: Path, split: str, name: str, info: dict[str, str],
                         n_shot: int) -> Subject:
    questions = _read_choice_file(spec, _subject_file(spec.name, folder, split, name), name)
    shots: list[Question] = []
    if n_shot:
        shot_file = _subject_file(spec.name, folder, spec.shot_split, name)
        if not shot_file.is_file():
            raise DatasetError(f"{spec.name}: the {n_shot}-shot examples of {name} come from {shot_file}, "
                               "which does not exist.", "Copy the dev split too, or set n_shot: 0.")
        shots = _read_choice_file(spec, shot_file, name)[:n_shot]
        if len(shots) < n_shot:
            raise ConfigError(f"n_shot={n_shot}, but {shot_file} holds only {len(shots)} examples.",
                              f"Set n_shot to {len(shots)} or less.")
    return Subject(name, info["name"], info["category"], shots, questions, len(questions))


def _read_choice_file(spec: TaskSpec, path: Path, subject: str) -> list[Question]:
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            rows = list(csv.reader(f))
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path} is not UTF-8 text.", "Use the benchmark's original files.") from exc
    if spec.header:
        if not rows:
            raise DatasetError(f"{path} is empty.", "Use the benchmark's original files.")
        header, rows = [cell.strip().lower() for cell in rows[0]], rows[1:]
        columns = {name: header.index(name) for name in ("question", *CHOICES_LOWER, "answer") if name in header}
        if "answer" not in columns:
            raise DatasetError(
                f"{path} has no answer column (its header is {','.join(header)}): this split has "
                "no answers to score against" + (" (C-Eval withholds its test answers)." if spec.name == "ceval"
                                                 else "."),
                "Evaluate a split with answers, e.g. split: val for C-Eval.",
            )
        missing = [name for name in ("question", *CHOICES_LOWER) if name not in columns]
        if missing:
            raise DatasetError(f"{path} lacks the column(s) {', '.join(missing)}.",
                               "Use the benchmark's original files.")
    else:
        columns = {"question": 0, "a": 1, "b": 2, "c": 3, "d": 4, "answer": 5}
    questions = []
    for row_index, row in enumerate(rows):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) <= max(columns.values()):
            raise DatasetError(f"{path}, data row {row_index + 1}: {len(row)} fields where "
                               f"{max(columns.values()) + 1} were expected.", "Use the benchmark's original files.")
        answer = row[columns["answer"]].strip().upper()
        if answer not in CHOICES:
            raise DatasetError(
                f"{path}, data row {row_index + 1}: answer {row[columns['answer']]!r} is not one of A, B, C, D"
                + (" (this split has no answers to score against)." if not answer else "."),
                "Evaluate a split with answers (C-Eval: split: val), or fix the row.",
            )
        questions.append(Question(
            id=f"{subject}/{row_index}",
            subject=subject,
            question=row[columns["question"]].strip(),
            answer=answer,
            options={letter: row[columns[letter.lower()]].strip() for letter in CHOICES},
        ))
    return questions


# ---- GSM8K ----

_CALCULATOR = re.compile(r"<<[^>]*>>")  # the dataset's calculator annotations, "<<16-3-4=9>>"
_FINAL = re.compile(r"####\s*(.+?)\s*$")


def _read_gsm8k_subject(folder: Path, split: str, wanted: Optional[list[str]], n_shot: int) -> Subject:
    if wanted and wanted != [GSM8K_SUBJECT]:
        raise ConfigError(f"subjects={','.join(wanted)}: gsm8k has no subjects.", "Remove subjects for gsm8k.")
    path = folder / f"{split}.jsonl"
    if not path.is_file():
        raise DatasetError(f"gsm8k: there is no {path}.", "Use split: test (or train) with the original files.")
    questions = _read_gsm8k_file(path)
    shots: list[Question] = []
    if n_shot:
        shot_path = folder / f"{TASK_SPECS['gsm8k'].shot_split}.jsonl"
        if not shot_path.is_file():
            raise DatasetError(f"gsm8k: the {n_shot}-shot examples come from {shot_path}, which does not exist.",
                               "Copy train.jsonl too, or set n_shot: 0.")
        shots = _read_gsm8k_file(shot_path, limit=n_shot)
        if len(shots) < n_shot:
            raise ConfigError(f"n_shot={n_shot}, but {shot_path} holds only {len(shots)} problems.",
                              f"Set n_shot to {len(shots)} or less.")
    return Subject(GSM8K_SUBJECT, "grade school math", "Math", shots, questions, len(questions))


def _read_gsm8k_file(path: Path, limit: Optional[int] = None) -> list[Question]:
    problems = []
    with open(path, encoding="utf-8") as f:
        for line_number, line in enumerate(f, 1):
            if limit is not None and len(problems) >= limit:
                break
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                question, answer = row["question"], row["answer"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise DatasetError(f"{path}, line {line_number}: not a JSON object with question and answer ({exc}).",
                                   "Use GSM8K's original jsonl files.") from exc
            solution = _CALCULATOR.sub("", answer).strip()
            final = _FINAL.search(solution)
            if not final:
                raise DatasetError(f"{path}, line {line_number}: the answer does not end in '#### <number>', so "
                                   "there is nothing to score against.", "Use GSM8K's original jsonl files.")
            problems.append(Question(id=f"{GSM8K_SUBJECT}/{line_number - 1}", subject=GSM8K_SUBJECT,
                                     question=question.strip(), answer=final.group(1), solution=solution))
    return problems
