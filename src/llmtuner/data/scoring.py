"""The ``scoring`` formatting: per-dimension company scoring rows -> prompts and answers, and answers -> scores.

A scoring dataset is a folder with one file per dimension, ``<folder>/<dimension>.json`` (the risk-scoring
project's ``data/<split>/<dimension>.json``), each row ``{prompt, company_info, think, score, reason}``. The
registry entry names the dimensions and their labels, so a new dimension is a new file and one line of JSON::

    "risk_scoring_train": {"file_name": "presets/risk_scoring/train", "formatting": "scoring",
                           "dimensions": {"competitiveness": "产品竞争力", "innovation": "产品创新性"},
                           "score_range": [0, 9]}

``scoring_mode: single`` (default) makes one conversation per row: ``SINGLE_PROMPT`` -> one answer block.
``scoring_mode: multi`` joins the rows that share a ``company_info`` into one conversation that asks for every
selected dimension at once (``MULTI_PROMPT``, the seed's ``create_multitask_prompt``) and answers with one
numbered block per dimension. An answer block is, exactly (``ANSWER_BLOCK``)::

    分析过程：<think>

    评分：<score>/<highest>

    理由：<reason>

and in multi mode each block is headed ``<i>. <label>评估：`` and blocks are separated by a blank line.
``parse_score`` is the project's one score reader (range from the entry's ``score_range``);
``parse_scoring_answer`` / ``parse_multi_scoring_answer`` / ``read_answer_scores`` read generated answers back.
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any, Optional, Union

import datasets

from ..extras.errors import ConfigError, DatasetError
from ..extras.logging import get_logger
from .converters import convert_dataset
from .registry import DatasetColumns, DatasetSpec

logger = get_logger(__name__)

SCORING_FIELDS = ("prompt", "company_info", "think", "score", "reason")
SCORING_MODES = ("single", "multi")
DEFAULT_PROMPT = "请对该企业进行评估。"
SINGLE_PROMPT = (
    "{prompt}\n\n评估维度：{label}\n\n企业信息：\n{company_info}\n\n"
    "请先写分析过程，再给出{low}-{high}的评分（{low}分最低，{high}分最高）和理由。"
)
MULTI_PROMPT = (
    "作为风控专家，请对以下企业在{labels}等维度进行全面评估。\n\n企业信息：\n{company_info}\n\n"
    "请按照以下要求进行评估：\n1. 对每个维度给出{low}-{high}的评分（{low}分最低，{high}分最高）\n"
    "2. 提供详细的分析理由\n3. 分析过程要体现专业的风控思维\n\n评估维度：{numbered}"
)
ANSWER_BLOCK = "分析过程：{think}\n\n评分：{score}/{high}\n\n理由：{reason}"
BLOCK_HEADER = "{index}. {label}评估："

_HEADER = re.compile(r"^\s*(\d+)\s*[.．、]\s*(.+?)评估\s*[:：]\s*$", re.M)
_THINK = re.compile(r"分析过程\s*[:：]\s*(.*?)(?=\n\s*评分\s*[:：]|\Z)", re.S)
_REASON = re.compile(r"理由\s*[:：]\s*(.*)", re.S)
# The score, in this order: the answer layout's "评分：7" / "评分：7/9"; another label ("Score: 7.5", "得分为8"); the
# first "N/M" or "N分" (not 分析/分类/分钟); a text that is only a number.
_LAYOUT = re.compile(r"评分\s*[:：]\s*(-?\d+(?:\.\d+)?)(?:\s*/\s*\d+(?:\.\d+)?)?")
_LABELLED = re.compile(r"(?:score|rating|评分|得分|分数|打分)\s*(?:[:：=\-]|为|是)?\s*(-?\d+(?:\.\d+)?)"
                       r"(?:\s*/\s*\d+(?:\.\d+)?)?", re.I)
_SUFFIXED = re.compile(r"(-?\d+(?:\.\d+)?)\s*(?:/\s*\d+(?:\.\d+)?\b|分(?![析类钟]))")
_BARE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*[。.]?\s*$")
DEFAULT_SCORE_RANGE = (0.0, 9.0)  # a registry entry's score_range when it sets none (registry.DatasetSpec)


@dataclass(frozen=True)
class ScoringAnswer:
    """One dimension's answer read back: ``score`` is None when it is missing or outside the score range."""

    think: str
    score: Optional[float]
    reason: str


# ---- building prompts and answers ----

def number_text(value: float) -> str:
    """7.0 -> "7", 7.5 -> "7.5": scores are written as people write them."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def build_single_prompt(company_info: str, label: str, low: float = 0, high: float = 9,
                        prompt: Optional[str] = None) -> str:
    """The user turn asking for one dimension (``prompt`` is the row's own instruction)."""
    return SINGLE_PROMPT.format(prompt=(prompt or "").strip() or DEFAULT_PROMPT, label=label,
                                company_info=company_info.strip(), low=number_text(low), high=number_text(high))


def build_multi_prompt(company_info: str, labels: list[str], low: float = 0, high: float = 9) -> str:
    """The user turn asking for several dimensions at once (the seed's ``create_multitask_prompt``)."""
    numbered = "".join(f"\n{index}. {label}" for index, label in enumerate(labels, start=1))
    return MULTI_PROMPT.format(labels="、".join(labels), company_info=company_info.strip(), numbered=numbered,
                               low=number_text(low), high=number_text(high))


def format_answer(think: str, score: float, reason: str, high: float = 9) -> str:
    """One answer block in the documented layout."""
    return ANSWER_BLOCK.format(think=think.strip(), score=number_text(score), high=number_text(high),
                               reason=reason.strip())


def format_multi_answer(blocks: list[tuple[str, str, float, str]], high: float = 9) -> str:
    """``[(label, think, score, reason)]`` -> numbered blocks, one per dimension, in order."""
    return "\n\n".join(
        BLOCK_HEADER.format(index=index, label=label) + "\n\n" + format_answer(think, score, reason, high)
        for index, (label, think, score, reason) in enumerate(blocks, start=1)
    )


# ---- reading answers back ----

def parse_score(text: Union[str, float, int, None], low: float = DEFAULT_SCORE_RANGE[0],
                high: float = DEFAULT_SCORE_RANGE[1]) -> Optional[float]:
    """The score in ``text`` (or a number given as such), or None when there is none in ``[low, high]``.

    The one score reader of the project (answers of scoring models, the metrics of ``eval/metrics/scores.py``);
    ``low``/``high`` come from the dataset's ``score_range``. The first match decides: a labelled score out of
    range is a failure, not a reason to look further (a model that writes "评分：12" did not answer 7 because "7分"
    appears in its reasoning).
    """
    if text is None or isinstance(text, bool):
        return None
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        match = _score_match(text)
        if not match:
            return None
        value = float(match.group(1))
    return value if math.isfinite(value) and low <= value <= high else None


def _score_match(text: str) -> Optional[re.Match]:
    return _LAYOUT.search(text) or _LABELLED.search(text) or _SUFFIXED.search(text) or _BARE.match(text)


def parse_scoring_answer(text: str, low: float = DEFAULT_SCORE_RANGE[0], high: float = DEFAULT_SCORE_RANGE[1]
                         ) -> ScoringAnswer:
    """Read one answer block: the score as ``parse_score`` reads it (``评分：7`` or ``评分：7/9``; None if absent
    or outside ``[low, high]``), the think text before it and the reason after it. Text outside the layout is
    tolerated: what cannot be found is empty."""
    think = _THINK.search(text)
    score = _score_match(text)
    reason = _REASON.search(text[score.end():] if score else text)
    return ScoringAnswer(think.group(1).strip() if think else "", parse_score(text, low, high),
                         reason.group(1).strip() if reason else "")


def read_answer_scores(text: str, dimensions: list[str], labels: dict[str, str], low: float, high: float,
                       multi: bool) -> dict[str, ScoringAnswer]:
    """The answer to a prompt that asked for ``dimensions`` (one in single mode, several in multi mode), read
    back per dimension; a dimension whose block is missing gets ``ScoringAnswer("", None, "")``, so it counts as a
    parse failure of that dimension only."""
    if not multi:
        return {dimensions[0]: parse_scoring_answer(text, low, high)}
    found = parse_multi_scoring_answer(text, {name: labels[name] for name in dimensions}, low, high)
    return {name: found.get(name, ScoringAnswer("", None, "")) for name in dimensions}


def parse_multi_scoring_answer(text: str, labels: dict[str, str], low: float = DEFAULT_SCORE_RANGE[0],
                               high: float = DEFAULT_SCORE_RANGE[1]
                               ) -> dict[str, ScoringAnswer]:
    """Read a multi-dimension answer: ``{dimension name: ScoringAnswer}`` for each ``labels`` entry (name ->
    label) whose block header ``<i>. <label>评估：`` is present. A dimension without a block is left out, so
    callers count it as a parse failure."""
    by_label = {label: name for name, label in labels.items()}
    headers = list(_HEADER.finditer(text))
    answers = {}
    for position, header in enumerate(headers):
        name = by_label.get(header.group(2).strip())
        if name is None or name in answers:
            continue
        end = headers[position + 1].start() if position + 1 < len(headers) else len(text)
        answers[name] = parse_scoring_answer(text[header.end():end], low, high)
    return answers


# ---- the registry side: which files, and rows -> conversations ----

def selected_dimensions(spec: DatasetSpec, wanted: Optional[list[str]]) -> list[str]:
    """The dimensions to load, in the entry's order: ``wanted`` (``scoring_dimensions``) or all with a file."""
    known = [name for name, _ in spec.dimensions]
    if wanted:
        unknown = [name for name in wanted if name not in known]
        if unknown:
            raise ConfigError(
                f"scoring_dimensions names {', '.join(unknown)}, which dataset {spec.name!r} does not list.",
                f"Its dimensions ({spec.registry_path}): {', '.join(known)}. Fix the name or add the dimension "
                "to the entry's \"dimensions\".",
            )
    names = [name for name in known if not wanted or name in wanted]
    present = [name for name in names if _dimension_file(spec, name)]
    if not present:
        raise DatasetError(
            f"Dataset {spec.name!r} has no file for the dimensions {', '.join(names)} in {spec.path}.",
            "Put one <dimension>.json per dimension in that folder, or fix scoring_dimensions.",
        )
    missing = [name for name in names if name not in present]
    if missing:
        logger.warning(f"Dataset {spec.name!r} has no file for dimension(s) {', '.join(missing)} in {spec.path}: "
                       "they are left out.")
    return present


def check_scoring_dimensions(specs: list[DatasetSpec], wanted: Optional[list[str]]) -> None:
    """Raise unless ``scoring_dimensions`` (``wanted``) fits the training datasets: at least one is a scoring
    dataset, and each scoring dataset lists every wanted dimension."""
    scoring = [spec for spec in specs if spec.formatting == "scoring"]
    if wanted and not scoring:
        raise ConfigError(
            f"scoring_dimensions={','.join(wanted)} is set, but none of the datasets "
            f"({', '.join(spec.name for spec in specs)}) is a scoring dataset.",
            'Train on a dataset registered with "formatting": "scoring", or remove scoring_dimensions.',
        )
    for spec in scoring:
        selected_dimensions(spec, wanted)


def dimension_spec(spec: DatasetSpec, name: str) -> DatasetSpec:
    """The entry narrowed to one dimension's file (for reading it and for messages)."""
    file = _dimension_file(spec, name)
    return replace(spec, name=f"{spec.name}/{name}", path=file, data_files=(file,))


def scoring_conversations(
    raw_by_dimension: dict[str, datasets.Dataset],
    spec: DatasetSpec,
    mode: str,
    stage: str,
    num_proc: Optional[int] = None,
) -> list[tuple[str, datasets.Dataset]]:
    """Conversations from each dimension's raw rows: ``[(task name, rows)]``, one per dimension in single mode,
    one for the dataset in multi mode. Rows with no company_info or reason, or a score that is not a number in
    the score range, are dropped and counted; a dimension left with no row is an error."""
    if mode not in SCORING_MODES:
        raise ConfigError(f"scoring_mode={mode!r} is not a valid value.", "Set scoring_mode to single or multi.")
    labels = dict(spec.dimensions)
    low, high = spec.score_range
    rows_by_dimension = {name: _valid_rows(raw, spec, name) for name, raw in raw_by_dimension.items()}
    if mode == "single":
        return [
            (f"{spec.name}/{name}", _convert(spec, stage, num_proc, [
                {"instruction": build_single_prompt(row["company_info"], labels[name], low, high, row.get("prompt")),
                 "output": format_answer(row["think"], row["score"], row["reason"], high)}
                for row in rows
            ]))
            for name, rows in rows_by_dimension.items()
        ]
    companies: dict[str, dict[str, dict]] = {}  # company_info -> dimension -> row, in order of first appearance
    for name, rows in rows_by_dimension.items():
        for row in rows:
            companies.setdefault(row["company_info"].strip(), {}).setdefault(name, row)
    joined = []
    for company_info, by_dimension in companies.items():
        names = [name for name in labels if name in by_dimension]  # the entry's order
        blocks = [(labels[n], by_dimension[n]["think"], by_dimension[n]["score"], by_dimension[n]["reason"])
                  for n in names]
        joined.append({"instruction": build_multi_prompt(company_info, [labels[n] for n in names], low, high),
                       "output": format_multi_answer(blocks, high)})
    logger.info(f"Dataset {spec.name!r}: {len(joined)} companies, each asked for its dimensions in one prompt.")
    return [(spec.name, _convert(spec, stage, num_proc, joined))]


@dataclass(frozen=True)
class ScoringTestItem:
    """One prompt of a scoring test: a company asked for one dimension (single mode) or several (multi mode),
    with the gold row (score, think, reason) of each dimension asked."""

    company: str  # the first clause of company_info (the company's name in the preset data)
    dimensions: tuple[str, ...]
    prompt: str  # the user turn, exactly as training builds it
    gold: dict[str, dict[str, Any]]


def scoring_test_items(raw_by_dimension: dict[str, datasets.Dataset], spec: DatasetSpec, mode: str
                       ) -> list[ScoringTestItem]:
    """The prompts of a test split, built as in training (``scoring_conversations``), with their gold scores.

    Unlike training, no row is dropped: a test row without company_info or reason, or without a score in the
    range, makes the gold incomplete, so it is an error naming the file and the rows.

    Raises:
        DatasetError: a file without a score field, or rows that cannot be scored.
    """
    labels = dict(spec.dimensions)
    low, high = spec.score_range
    rows_by_dimension = {}
    for name, raw in raw_by_dimension.items():
        where = f"{_dimension_file(spec, name)} (test dataset {spec.name!r}, dimension {name!r})"
        if "score" not in raw.column_names:
            raise DatasetError(f"{where} has no score field, so there is nothing to compare answers with.",
                               "A scoring test split needs the gold score of every row: {{prompt, company_info, "
                               f"think, score, reason}} with a score in [{number_text(low)}, {number_text(high)}].")
        rows = []
        for number, row in enumerate(raw, start=1):
            problem, score = _row_problem(row, low, high)
            if problem:
                raise DatasetError(f"{where}: row {number} has {problem} (score {row.get('score')!r}).",
                                   "Fix or remove that row: every test row needs company_info, reason and a score "
                                   "in the entry's score_range.")
            rows.append({**row, "score": score, "think": row.get("think") or "", "prompt": row.get("prompt") or ""})
        rows_by_dimension[name] = rows
    if mode == "single":
        return [ScoringTestItem(company_name(row["company_info"]), (name,),
                                build_single_prompt(row["company_info"], labels[name], low, high, row["prompt"]),
                                {name: row})
                for name, rows in rows_by_dimension.items() for row in rows]
    companies: dict[str, dict[str, dict]] = {}  # as scoring_conversations joins them
    for name, rows in rows_by_dimension.items():
        for row in rows:
            companies.setdefault(row["company_info"].strip(), {}).setdefault(name, row)
    items = []
    for company_info, by_dimension in companies.items():
        names = tuple(name for name in labels if name in by_dimension)
        items.append(ScoringTestItem(company_name(company_info), names,
                                     build_multi_prompt(company_info, [labels[n] for n in names], low, high),
                                     {name: by_dimension[name] for name in names}))
    return items


def company_name(company_info: str) -> str:
    """The first clause of ``company_info`` ("匠心家居股份有限公司，成立于..." -> "匠心家居股份有限公司")."""
    return re.split(r"[，,。；;:：\n]", company_info.strip(), maxsplit=1)[0].strip()[:60]


def _dimension_file(spec: DatasetSpec, name: str) -> Optional[str]:
    return next((file for file in spec.data_files if os.path.splitext(os.path.basename(file))[0] == name), None)


def _valid_rows(raw: datasets.Dataset, spec: DatasetSpec, name: str) -> list[dict[str, Any]]:
    where = f"{_dimension_file(spec, name)} (dataset {spec.name!r}, dimension {name!r})"
    missing = [field for field in ("company_info", "score", "reason") if field not in raw.column_names]
    if missing:
        raise DatasetError(
            f"{where} has no {', '.join(missing)} field; it has: {', '.join(raw.column_names)}.",
            f"Scoring rows hold {', '.join(SCORING_FIELDS)} (prompt and think may be empty).",
        )
    low, high = spec.score_range
    kept, problems = [], Counter()
    for row in raw:
        problem, score = _row_problem(row, low, high)
        if problem:
            problems[problem] += 1
            continue
        kept.append({**row, "score": score, "think": row.get("think") or "", "prompt": row.get("prompt") or ""})
    if problems:
        summary = "; ".join(f"{count} × {problem}" for problem, count in problems.most_common())
        if not kept:
            raise DatasetError(f"{where} has no usable row: {summary}.",
                               f"Each row needs company_info, reason and a score between {number_text(low)} and "
                               f"{number_text(high)} (the entry's score_range).")
        logger.warning(f"{where}: dropped {sum(problems.values())} of {len(raw)} rows: {summary}.")
    return kept


def _row_problem(row: dict[str, Any], low: float, high: float) -> tuple[str, Optional[float]]:
    for field in ("company_info", "reason"):
        if not isinstance(row.get(field), str) or not row[field].strip():
            return f"empty {field}", None
    for field in ("prompt", "think"):
        if row.get(field) is not None and not isinstance(row[field], str):
            return f"{field} is not text", None
    score: Union[str, float, None] = row.get("score")
    try:
        value = float(score) if not isinstance(score, bool) and score is not None else math.nan
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and low <= value <= high):
        return f"score not a number in [{number_text(low)}, {number_text(high)}]", None
    return "", value


def _convert(spec: DatasetSpec, stage: str, num_proc: Optional[int], rows: list[dict[str, str]]) -> datasets.Dataset:
    """Prompt/answer pairs through the alpaca converter, which checks and shapes them like every other row."""
    alpaca = replace(spec, formatting="alpaca", columns=DatasetColumns(prompt="instruction", response="output"),
                     columns_declared=True)
    return convert_dataset(datasets.Dataset.from_list(rows), alpaca, stage, num_proc)
