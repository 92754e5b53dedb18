"""Turn raw rows (alpaca / sharegpt / openai layouts) into the one conversation shape the rest of llmtuner reads.

Every output row is ``{"messages": [{"role": "user"|"assistant", "content": str}, ...], "system": str | None,
"_dataset": name}``. For ``sft`` the turns alternate user/assistant, start with the user and end with the
assistant, all non-empty; for ``pt`` there is one user turn holding the text. A row that breaks these rules is
dropped and counted by reason (a few row numbers are logged) so one bad line never stops a run, but a dataset
with no usable row at all is an error.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, replace
from typing import Any, Optional

import datasets

from ..extras.constants import TASK_PROMPT
from ..extras.errors import ConfigError, DatasetError
from ..extras.logging import get_logger
from ..extras.suggest import closest_names
from ..hparams.rl_args import RL_STAGES
from .registry import DatasetColumns, DatasetSpec, MessageTags

logger = get_logger(__name__)

STAGES = ("pt", "sft", "cls", "dpo", "kto", "rm", *RL_STAGES)
PAIRWISE_STAGES = ("dpo", "rm")  # read "ranking": true entries only
CONVERSATION_FEATURES = datasets.Features(
    {
        "messages": datasets.List({"role": datasets.Value("string"), "content": datasets.Value("string")}),
        "system": datasets.Value("string"),
        "_dataset": datasets.Value("string"),
    }
)
# Pairwise rows: "messages" is the shared conversation ending with the user turn, then the two answers.
PAIRWISE_FEATURES = datasets.Features(
    {**CONVERSATION_FEATURES, "chosen": datasets.Value("string"), "rejected": datasets.Value("string")}
)
# kto rows: a whole conversation (ending with the answer) and whether that answer is desirable.
KTO_FEATURES = datasets.Features({**CONVERSATION_FEATURES, "kto_tag": datasets.Value("bool")})
_DROP_REASON = "_drop_reason"
_EXAMPLE_ROWS = 5


class _DroppedRow(Exception):
    """A row that cannot become a valid conversation; the message is the reason, counted across rows."""


def check_stage(spec: DatasetSpec, stage: str) -> None:
    """Raise unless ``stage`` is known and the dataset's formatting can feed it (pt reads plain alpaca text)."""
    if stage not in STAGES:
        raise ConfigError(f"stage={stage!r} has no data converter.", f"Use one of: {', '.join(STAGES)}.")
    if stage == "pt" and spec.formatting != "alpaca":
        raise DatasetError(
            f"Dataset {spec.name!r} is {spec.formatting} conversations, but stage pt reads plain text.",
            f'For pt, register the text as alpaca with "columns": {{"prompt": "text"}} in {spec.registry_path}; '
            "use conversation datasets with stage sft.",
        )
    if spec.ranking and stage not in (*PAIRWISE_STAGES, "kto"):
        raise DatasetError(
            f'Dataset {spec.name!r} is pairwise preference data ("ranking": true), which stage {stage} cannot read.',
            f"Train it with stage dpo, kto or rm, or use a dataset with one response per prompt for stage {stage}.",
        )
    if stage in PAIRWISE_STAGES and not spec.ranking:
        raise DatasetError(
            f"Stage {stage} needs pairwise preference data, but dataset {spec.name!r} is not marked "
            '"ranking": true.',
            f'Use a dataset with chosen/rejected answers and "ranking": true in {spec.registry_path} '
            "(data/README.md, \"Preference data\"); single responses tagged good/bad train with stage kto.",
        )
    if stage in (*PAIRWISE_STAGES, "kto") and spec.formatting == "scoring":
        raise DatasetError(f"Dataset {spec.name!r} is formatting scoring, which stage {stage} cannot read.",
                           "Use alpaca or sharegpt preference data (data/README.md, \"Preference data\").")
    if stage == "cls" and spec.formatting != "alpaca":
        raise DatasetError(
            f"Dataset {spec.name!r} is {spec.formatting} conversations, but stage cls reads one text and one label "
            "per row.",
            f'Register it as alpaca with the text in "prompt" (and "query") and the label in "response", e.g. '
            f'"columns": {{"prompt": "text", "response": "label"}} in {spec.registry_path}.',
        )


def convert_dataset(
    raw: datasets.Dataset, spec: DatasetSpec, stage: str, num_proc: Optional[int] = None
) -> datasets.Dataset:
    """Rows of ``raw`` (read from ``spec``'s files) as conversations with columns messages, system, _dataset.

    Raises DatasetError when a declared column is missing from the file (listing the columns it has), when a
    column holds the wrong kind of value for every row (e.g. lists of ranked responses), or when every row is
    dropped (naming the most common reason).
    """
    check_stage(spec, stage)
    if len(raw) == 0:
        raise DatasetError(
            f"Dataset {spec.name!r} has no rows ({spec.path}).",
            f"Fill the file, or fix \"file_name\"/\"split\" of {spec.name!r} in {spec.registry_path}.",
        )
    if stage == "kto" and spec.ranking:  # read as pairs, then each answer becomes a tagged row
        return _unpair(convert_dataset(raw, spec, "dpo", num_proc))
    columns = _columns_for_stage(raw, spec, stage)
    _check_column_kinds(raw, spec, columns)
    if stage in RL_STAGES:  # RL rows are sft conversations: the prompt, and the gold answer the rewards read
        stage = "sft"
    converted = raw.map(
        _convert_batch,
        batched=True,
        fn_kwargs={"spec": spec, "columns": columns, "stage": stage},
        remove_columns=raw.column_names,
        features=datasets.Features({**_features(stage), _DROP_REASON: datasets.Value("string")}),
        num_proc=num_proc,
        desc=f"Converting {spec.name}",
    )
    return _drop_bad_rows(converted, spec)


def _features(stage: str) -> datasets.Features:
    if stage in PAIRWISE_STAGES:
        return PAIRWISE_FEATURES
    return KTO_FEATURES if stage == "kto" else CONVERSATION_FEATURES


def _columns_for_stage(raw: datasets.Dataset, spec: DatasetSpec, stage: str) -> DatasetColumns:
    """The columns this stage reads, each checked to exist in the file."""
    columns = spec.columns
    if stage == "kto" and not spec.ranking and columns.kto_tag is None:
        columns = replace(columns, kto_tag="kto_tag")  # LLaMA-Factory's name when "columns" does not name it
    elif stage != "kto":
        columns = replace(columns, kto_tag=None)
    if spec.ranking:
        pass  # chosen/rejected replace the response
    elif stage == "pt":  # pre-training text is the prompt (+ query), as in LLaMA-Factory
        columns = replace(columns, response=None, history=None, system=None, task=None)
    elif spec.formatting == "alpaca" and columns.response is None:
        raise DatasetError(
            f"Dataset {spec.name!r} names no response column, which {stage} needs.",
            f'Add "response": "<column with the answers>" to the "columns" of {spec.name!r} in {spec.registry_path}'
            + ("; the rewards of grpo/rloo compare each completion with that gold answer." if stage in RL_STAGES
               else "."),
        )
    if stage == "cls":  # one text (prompt + query) and its label (the response); no dialogue context
        columns = replace(columns, history=None, system=None, task=None)
    # The default "input" column is optional: many alpaca files leave it out.
    if not spec.columns_declared and columns.query and columns.query not in raw.column_names:
        columns = replace(columns, query=None)
    mapped = asdict(columns)
    for role, column in mapped.items():
        if column is not None and column not in raw.column_names:
            unused = [name for name in raw.column_names if name not in mapped.values()]
            close = closest_names(column, unused, n=1, cutoff=0.6)
            raise DatasetError(
                f"Dataset {spec.name!r}: the {role} column {column!r} is not in {spec.path}; "
                f"the file has columns: {', '.join(raw.column_names)}.",
                f'Name the right column in "columns" of {spec.name!r} in {spec.registry_path}: '
                + (f'"{role}": "{close[0]}"?' if close else f'"{role}": "<one of the columns above>", or remove it.'),
            )
    return columns


def _check_column_kinds(raw: datasets.Dataset, spec: DatasetSpec, columns: DatasetColumns) -> None:
    if columns.kto_tag and raw.features[columns.kto_tag] not in (datasets.Value("bool"), datasets.Value("null")):
        values = ", ".join(repr(value) for value in raw.select(range(min(3, len(raw))))[columns.kto_tag])
        raise DatasetError(
            f"Dataset {spec.name!r}: the kto_tag column {columns.kto_tag!r} holds {raw.features[columns.kto_tag]} "
            f"values (e.g. {values}), not true/false.",
            f"Write each row's {columns.kto_tag!r} as JSON true (a desirable response) or false (an undesirable one), "
            'without quotes; 1/0 and "yes"/"no" are not read as booleans.',
        )
    if columns.response and _is_list_feature(raw.features[columns.response]):
        raise DatasetError(
            f"Dataset {spec.name!r}: the response column {columns.response!r} holds lists (ranked responses), "
            "not one response per row.",
            'Give each row one response string; for preference training put the better answer in "chosen", the '
            'worse in "rejected" and mark the entry "ranking": true (data/README.md, "Preference data").',
        )
    # Json (mixed values) and null (every row empty) columns are checked row by row instead.
    messages_feature = raw.features[columns.messages] if columns.messages else None
    if messages_feature is not None and not (
        _is_list_feature(messages_feature)
        or isinstance(messages_feature, datasets.Json)
        or messages_feature == datasets.Value("null")
    ):
        raise DatasetError(
            f"Dataset {spec.name!r}: the messages column {columns.messages!r} holds "
            f"{messages_feature}, not lists of turns.",
            f"Each row's {columns.messages!r} must be a list of turn objects; check \"formatting\" and \"columns\" "
            f"of {spec.name!r} in {spec.registry_path}.",
        )


def _is_list_feature(feature: Any) -> bool:
    return isinstance(feature, (list, datasets.List, datasets.LargeList))


def _convert_batch(batch: dict[str, list], spec: DatasetSpec, columns: DatasetColumns, stage: str) -> dict[str, list]:
    to_conversation = _alpaca_row if spec.formatting == "alpaca" else _conversation_row
    used = [column for column in asdict(columns).values() if column is not None]
    extra = [name for name in _features(stage) if name not in CONVERSATION_FEATURES]  # chosen/rejected, kto_tag
    output: dict[str, list] = {"messages": [], "system": [], "_dataset": [], _DROP_REASON: [], **{k: [] for k in extra}}
    for values in zip(*(batch[column] for column in used)):
        row = dict(zip(used, values))
        answers: dict[str, Any] = {name: None for name in extra}
        try:
            messages, system = to_conversation(row, columns, spec.tags, stage)
            if spec.ranking:
                answers = {name: _answer(row, getattr(columns, name), spec.tags) for name in ("chosen", "rejected")}
                if answers["chosen"].strip() == answers["rejected"].strip():
                    raise _DroppedRow("chosen and rejected are the same answer")
            elif stage == "kto":
                answers["kto_tag"] = row[columns.kto_tag]
                if answers["kto_tag"] is None:
                    raise _DroppedRow(f"no {columns.kto_tag!r} value")
            _check_turns(messages, stage, last_role="user" if spec.ranking else "assistant")
            reason = ""
        except _DroppedRow as dropped:
            messages, system, reason = [], None, str(dropped)
            answers = {name: None for name in extra}
        output["messages"].append(messages)
        output["system"].append(system or None)
        output["_dataset"].append(spec.name)
        output[_DROP_REASON].append(reason)
        for name in extra:
            output[name].append(answers[name])
    return output


def _answer(row: dict, column: str, tags: MessageTags) -> str:
    """A ranking row's chosen/rejected answer: a message object ({"from": "gpt", "value": ...}, sharegpt) or text."""
    value = row[column]
    if isinstance(value, dict):
        if value.get(tags.role_tag) not in (None, tags.assistant_tag):
            raise _DroppedRow(f"{column!r} is a {value.get(tags.role_tag)!r} turn, not an {tags.assistant_tag!r} one")
        value = value.get(tags.content_tag)
    if not isinstance(value, str) or not value.strip():
        raise _DroppedRow(f"empty or missing {column!r} answer")
    return value


def _unpair(pairs: datasets.Dataset) -> datasets.Dataset:
    """Pairwise rows -> kto rows: each prompt once with its chosen answer (desirable), once with the rejected one."""
    def split(batch: dict[str, list]) -> dict[str, list]:
        output: dict[str, list] = {name: [] for name in KTO_FEATURES}
        for messages, system, name, chosen, rejected in zip(batch["messages"], batch["system"], batch["_dataset"],
                                                            batch["chosen"], batch["rejected"]):
            for answer, tag in ((chosen, True), (rejected, False)):
                output["messages"].append([*messages, {"role": "assistant", "content": answer}])
                output["system"].append(system)
                output["_dataset"].append(name)
                output["kto_tag"].append(tag)
        return output

    return pairs.map(split, batched=True, remove_columns=pairs.column_names, features=KTO_FEATURES,
                     desc="Unpairing chosen/rejected for kto")


def _alpaca_row(row: dict, columns: DatasetColumns, tags: MessageTags, stage: str) -> tuple[list[dict], Any]:
    messages = _history_turns(row[columns.history]) if columns.history else []
    parts = [_text(row, column) for column in (columns.prompt, columns.query) if column and column != columns.task]
    content = "\n".join(part for part in parts if part)
    if columns.task:
        task = _text(row, columns.task).strip()
        if not task:
            raise _DroppedRow(f"empty task in column {columns.task!r}")
        content = TASK_PROMPT.format(task=task, input=content)
    messages.append({"role": "user", "content": content})
    if stage in ("sft", "kto") and columns.response:  # ranking rows have their answers in chosen/rejected
        messages.append({"role": "assistant", "content": _text(row, columns.response)})
    elif stage == "cls":  # the label; files often hold labels as numbers (0/1), which are names here too
        value = row[columns.response]
        is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
        label = str(value) if is_number else _text(row, columns.response)
        messages.append({"role": "assistant", "content": label.strip()})
    return messages, _text(row, columns.system) if columns.system else None


def task_of_messages(messages: list[dict]) -> str:
    """The task named in the last user turn of a task-tagged conversation (written by ``TASK_PROMPT``)."""
    prefix = TASK_PROMPT.split("{task}")[0]
    first_line = messages[-2 if messages[-1]["role"] == "assistant" else -1]["content"].split("\n", 1)[0]
    return first_line[len(prefix):] if first_line.startswith(prefix) else ""


def _history_turns(history: Any) -> list[dict]:
    if history is None:
        return []
    if not isinstance(history, list) or not all(isinstance(pair, list) and len(pair) == 2 for pair in history):
        raise _DroppedRow("history is not a list of [user, assistant] pairs")
    turns = []
    for user, assistant in history:
        turns += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return turns


def _conversation_row(row: dict, columns: DatasetColumns, tags: MessageTags, stage: str) -> tuple[list[dict], Any]:
    """sharegpt and openai rows: a list of turns whose role/content keys and role names come from ``tags``."""
    turns = row[columns.messages]
    if not isinstance(turns, list):
        raise _DroppedRow(f"{columns.messages!r} is not a list of turns")
    system = _text(row, columns.system) if columns.system else None
    roles = {tags.user_tag: "user", tags.assistant_tag: "assistant"}
    messages = []
    for position, turn in enumerate(turns):
        if not isinstance(turn, dict) or turn.get(tags.role_tag) is None:
            raise _DroppedRow(f"a turn has no {tags.role_tag!r} key")
        role, content = turn[tags.role_tag], turn.get(tags.content_tag)
        if role == tags.system_tag:
            if position != 0:
                raise _DroppedRow("a system turn is not the first turn")
            system = content  # a leading system turn overrides the system column, as in LLaMA-Factory
            if system is not None and not isinstance(system, str):
                raise _DroppedRow("the system prompt is not text")
        elif role in (tags.observation_tag, tags.function_tag):
            raise _DroppedRow(f"tool turns ({role!r}) are not supported yet")
        elif role in roles:
            messages.append({"role": roles[role], "content": content})
        else:
            raise _DroppedRow(f"unknown role {role!r} (expected {tags.user_tag!r} or {tags.assistant_tag!r})")
    return messages, system


def _text(row: dict, column: str) -> str:
    """The row's value in ``column`` as text; missing counts as empty, any other non-string drops the row."""
    value = row[column]
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _DroppedRow(f"{column!r} holds {type(value).__name__}, not text")
    return value


def _check_turns(messages: list[dict], stage: str, last_role: str = "assistant") -> None:
    if stage == "pt":
        if not messages[0]["content"].strip():
            raise _DroppedRow("empty text")
        return
    if not messages:
        raise _DroppedRow("no turns")
    for position, message in enumerate(messages):
        if message["role"] != ("user" if position % 2 == 0 else "assistant"):
            raise _DroppedRow("turns do not alternate user/assistant starting with user")
        if not isinstance(message["content"], str):
            raise _DroppedRow(f"a {message['role']} turn's content is not text")
        if not message["content"].strip():
            raise _DroppedRow(f"empty {message['role']} turn")
    if messages[-1]["role"] != last_role:
        raise _DroppedRow(f"the last turn is not {'an' if last_role == 'assistant' else 'a'} {last_role} turn"
                          + (" (ranking rows end with the question; the answers are chosen/rejected)"
                             if last_role == "user" else ""))


def _drop_bad_rows(converted: datasets.Dataset, spec: DatasetSpec) -> datasets.Dataset:
    rows_by_reason: dict[str, list[int]] = defaultdict(list)
    keep = []
    for index, reason in enumerate(converted[_DROP_REASON]):
        if reason:
            rows_by_reason[reason].append(index + 1)
        else:
            keep.append(index)
    if not rows_by_reason:
        return converted.remove_columns(_DROP_REASON)
    reasons = sorted(rows_by_reason.items(), key=lambda item: -len(item[1]))  # most common first, stable
    summary = "; ".join(f"{len(rows)} × {reason} ({_row_numbers(rows)})" for reason, rows in reasons)
    if not keep:
        reason, rows = reasons[0]
        raise DatasetError(
            f"Dataset {spec.name!r} has no usable rows: all {len(converted)} were dropped. "
            f"Most common reason: {reason} ({len(rows)} row{'s' if len(rows) > 1 else ''}). All reasons: {summary}.",
            f'Check that "formatting", "columns" and "tags" of {spec.name!r} in {spec.registry_path} match '
            f"the file {spec.path} (see data/README.md).",
        )
    logger.warning(
        f"Dataset {spec.name!r}: dropped {len(converted) - len(keep)} of {len(converted)} rows "
        f"(row numbers count from 1): {summary}."
    )
    return converted.select(keep).remove_columns(_DROP_REASON)


def _row_numbers(rows: list[int]) -> str:
    """``row 4`` / ``rows 2, 3, 4, 5, 6, ...``: a few examples to look up in the file."""
    shown = ", ".join(map(str, rows[:_EXAMPLE_ROWS])) + (", ..." if len(rows) > _EXAMPLE_ROWS else "")
    return f"row{'s' if len(rows) > 1 else ''} {shown}"
