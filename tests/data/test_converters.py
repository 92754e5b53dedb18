"""Raw rows -> {"messages", "system", "_dataset"}: each format, each stage, and every way a row can be dropped."""

from __future__ import annotations

import logging
from typing import Callable, Iterator

import datasets
import pytest

from llmtuner.data.converters import CONVERSATION_FEATURES, check_stage, convert_dataset
from llmtuner.data.registry import DatasetColumns, DatasetSpec, MessageTags
from llmtuner.extras.errors import ConfigError, DatasetError

ALPACA = DatasetColumns(prompt="instruction", query="input", response="output")
SHAREGPT = DatasetColumns(messages="conversations")
OPENAI_TAGS = MessageTags("role", "content", "user", "assistant", "system", "tool", "function")


def _spec(formatting: str = "alpaca", columns: DatasetColumns = ALPACA, **fields) -> DatasetSpec:
    return DatasetSpec(
        name="demo", file_name="demo.jsonl", path="/data/demo.jsonl", data_files=("/data/demo.jsonl",),
        file_type="jsonl", registry_path="/data/dataset_info.json", formatting=formatting, columns=columns, **fields,
    )


def _convert(rows: list[dict], spec: DatasetSpec, stage: str = "sft") -> list[dict]:
    return convert_dataset(datasets.Dataset.from_list(rows), spec, stage).to_list()


def _turns(*contents: str) -> list[dict]:
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": c} for i, c in enumerate(contents)]


def _sharegpt(*pairs: tuple[str, str]) -> dict:
    return {"conversations": [{"from": role, "value": value} for role, value in pairs]}


@pytest.fixture
def logged_warnings(caplog: pytest.LogCaptureFixture) -> Iterator[Callable[[], list[str]]]:
    """Warnings from llmtuner loggers; their root does not propagate, so caplog's handler is attached to it."""
    root = logging.getLogger("llmtuner")
    root.addHandler(caplog.handler)
    caplog.set_level(logging.WARNING, logger="llmtuner")
    yield lambda: [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    root.removeHandler(caplog.handler)


# --- alpaca ----------------------------------------------------------------------------------------------------


def test_alpaca_joins_prompt_and_query_with_a_newline() -> None:
    rows = [
        {"instruction": "Translate to English.", "input": "你好", "output": "Hello"},
        {"instruction": "Say hi.", "input": "", "output": "Hi!"},
        {"instruction": "Count.", "input": None, "output": "1 2 3"},
    ]
    assert _convert(rows, _spec()) == [
        {"messages": _turns("Translate to English.\n你好", "Hello"), "system": None, "_dataset": "demo"},
        {"messages": _turns("Say hi.", "Hi!"), "system": None, "_dataset": "demo"},
        {"messages": _turns("Count.", "1 2 3"), "system": None, "_dataset": "demo"},
    ]


def test_alpaca_system_and_history_columns() -> None:
    columns = DatasetColumns(prompt="instruction", query="input", response="output", system="system", history="history")
    rows = [
        {"instruction": "And day two?", "input": "", "output": "Museums.", "system": "Be brief.",
         "history": [["Plan day one.", "Walk the old town."]]},
        {"instruction": "Hi", "input": "", "output": "Hello", "system": "", "history": None},
    ]
    assert _convert(rows, _spec(columns=columns)) == [
        {"messages": _turns("Plan day one.", "Walk the old town.", "And day two?", "Museums."),
         "system": "Be brief.", "_dataset": "demo"},
        {"messages": _turns("Hi", "Hello"), "system": None, "_dataset": "demo"},
    ]


def test_alpaca_default_input_column_is_optional() -> None:
    # Undeclared columns fall back to LLaMA-Factory's defaults; a file without "input" is still fine.
    assert _convert([{"instruction": "Q", "output": "A"}], _spec()) == [
        {"messages": _turns("Q", "A"), "system": None, "_dataset": "demo"}
    ]


def test_declared_column_missing_from_the_file_names_what_is_there() -> None:
    with pytest.raises(DatasetError) as caught:
        _convert([{"instruction": "Q", "output": "A"}], _spec(columns_declared=True))
    assert caught.value.message == (
        "Dataset 'demo': the query column 'input' is not in /data/demo.jsonl; the file has columns: instruction, output."
    )
    assert caught.value.hint == (
        'Name the right column in "columns" of \'demo\' in /data/dataset_info.json: '
        '"query": "<one of the columns above>", or remove it.'
    )


def test_missing_prompt_column_suggests_the_closest_column() -> None:
    with pytest.raises(DatasetError) as caught:
        _convert([{"question": "Q", "answer": "A"}], _spec(columns=DatasetColumns(prompt="questions", response="answer")))
    assert caught.value.message == (
        "Dataset 'demo': the prompt column 'questions' is not in /data/demo.jsonl; the file has columns: question, answer."
    )
    assert caught.value.hint.endswith('"prompt": "question"?')


def test_sft_needs_a_response_column() -> None:
    with pytest.raises(DatasetError) as caught:
        _convert([{"text": "x"}], _spec(columns=DatasetColumns(prompt="text"), columns_declared=True))
    assert caught.value.message == "Dataset 'demo' names no response column, which sft needs."


def test_ranked_response_lists_are_refused() -> None:
    with pytest.raises(DatasetError) as caught:
        _convert([{"instruction": "Q", "input": "", "output": ["best", "worse"]}], _spec())
    assert caught.value.message == (
        "Dataset 'demo': the response column 'output' holds lists (ranked responses), not one response per row."
    )


def test_a_dataset_without_rows_is_an_error() -> None:
    raw = datasets.Dataset.from_dict({"instruction": [], "output": []})
    with pytest.raises(DatasetError) as caught:
        convert_dataset(raw, _spec(), "sft")
    assert caught.value.message == "Dataset 'demo' has no rows (/data/demo.jsonl)."


# --- pt --------------------------------------------------------------------------------------------------------


def test_pt_rows_are_one_user_turn_of_text() -> None:
    spec = _spec(columns=DatasetColumns(prompt="text"), columns_declared=True)
    assert _convert([{"text": "First paragraph."}, {"text": "第二段。"}], spec, stage="pt") == [
        {"messages": [{"role": "user", "content": "First paragraph."}], "system": None, "_dataset": "demo"},
        {"messages": [{"role": "user", "content": "第二段。"}], "system": None, "_dataset": "demo"},
    ]


def test_pt_on_alpaca_rows_reads_prompt_and_query_only() -> None:
    rows = [{"instruction": "Title", "input": "Body", "output": "ignored"}]
    assert _convert(rows, _spec(), stage="pt")[0]["messages"] == [{"role": "user", "content": "Title\nBody"}]


def test_pt_refuses_conversation_formats() -> None:
    with pytest.raises(DatasetError) as caught:
        check_stage(_spec("sharegpt", SHAREGPT), "pt")
    assert caught.value.message == "Dataset 'demo' is sharegpt conversations, but stage pt reads plain text."


def test_unknown_stage() -> None:
    with pytest.raises(ConfigError) as caught:
        check_stage(_spec(), "ppo")
    assert caught.value.message == "stage='ppo' has no data converter."


# --- sharegpt / openai -----------------------------------------------------------------------------------------


def test_sharegpt_multi_turn_with_leading_system_turn() -> None:
    row = _sharegpt(("system", "Be kind."), ("human", "Hi"), ("gpt", "Hello!"), ("human", "Bye"), ("gpt", "See you."))
    assert _convert([row], _spec("sharegpt", SHAREGPT)) == [
        {"messages": _turns("Hi", "Hello!", "Bye", "See you."), "system": "Be kind.", "_dataset": "demo"}
    ]


def test_sharegpt_system_column_and_system_turn_override() -> None:
    columns = DatasetColumns(messages="conversations", system="system")
    rows = [
        {**_sharegpt(("human", "Hi"), ("gpt", "Hello")), "system": "From the column."},
        {**_sharegpt(("system", "From the turn."), ("human", "Hi"), ("gpt", "Hello")), "system": "From the column."},
    ]
    assert [row["system"] for row in _convert(rows, _spec("sharegpt", columns))] == ["From the column.", "From the turn."]


def test_sharegpt_custom_tags() -> None:
    tags = MessageTags(role_tag="speaker", content_tag="text", user_tag="customer", assistant_tag="agent")
    row = {"dialog": [{"speaker": "customer", "text": "Where is my parcel?"}, {"speaker": "agent", "text": "On its way."}]}
    converted = _convert([row], _spec("sharegpt", DatasetColumns(messages="dialog"), tags=tags))
    assert converted[0]["messages"] == _turns("Where is my parcel?", "On its way.")


def test_openai_messages() -> None:
    row = {"messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "<think>\nadd\n</think>\n\n4"},
    ]}
    converted = _convert([row], _spec("openai", DatasetColumns(messages="messages"), tags=OPENAI_TAGS))
    assert converted == [
        {"messages": _turns("2+2?", "<think>\nadd\n</think>\n\n4"), "system": "You are terse.", "_dataset": "demo"}
    ]


def test_messages_column_holding_text_is_refused() -> None:
    with pytest.raises(DatasetError) as caught:
        _convert([{"conversations": "human: hi"}], _spec("sharegpt", SHAREGPT))
    assert caught.value.message == (
        "Dataset 'demo': the messages column 'conversations' holds Value('string'), not lists of turns."
    )


# --- dropped rows ----------------------------------------------------------------------------------------------


def test_bad_rows_are_dropped_with_counts_reasons_and_row_numbers(logged_warnings: Callable[[], list[str]]) -> None:
    rows = [_sharegpt(("human", "Hi"), ("gpt", "Hello"))]
    rows += [_sharegpt(("human", f"Q{i}"), ("gpt", "")) for i in range(7)]  # rows 2-8: empty answers
    rows += [_sharegpt(("gpt", "Hello"), ("human", "Hi"))]  # row 9
    rows += [_sharegpt(("human", "Hi"), ("bot", "Hello"))]  # row 10
    converted = _convert(rows, _spec("sharegpt", SHAREGPT))
    assert converted == [{"messages": _turns("Hi", "Hello"), "system": None, "_dataset": "demo"}]
    assert logged_warnings() == [
        "Dataset 'demo': dropped 9 of 10 rows (row numbers count from 1): "
        "7 × empty assistant turn (rows 2, 3, 4, 5, 6, ...); "
        "1 × turns do not alternate user/assistant starting with user (row 9); "
        "1 × unknown role 'bot' (expected 'human' or 'gpt') (row 10)."
    ]


def test_clean_data_logs_no_warning(logged_warnings: Callable[[], list[str]]) -> None:
    assert len(_convert([_sharegpt(("human", "Hi"), ("gpt", "Hello"))], _spec("sharegpt", SHAREGPT))) == 1
    assert logged_warnings() == []


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (_sharegpt(("gpt", "Hello"), ("human", "Hi")), "turns do not alternate user/assistant starting with user"),
        (_sharegpt(("human", "Hi"), ("gpt", "   ")), "empty assistant turn"),
        (_sharegpt(("human", ""), ("gpt", "Hello")), "empty user turn"),
        (_sharegpt(("human", "Hi"), ("human", "Anyone?")), "turns do not alternate user/assistant starting with user"),
        (_sharegpt(("human", "Hi")), "the last turn is not an assistant turn"),
        (_sharegpt(("human", "Hi"), ("bot", "Hello")), "unknown role 'bot' (expected 'human' or 'gpt')"),
        (_sharegpt(("human", "Weather?"), ("function_call", "{}")), "tool turns ('function_call') are not supported yet"),
        (_sharegpt(("human", "Weather?"), ("observation", "{}")), "tool turns ('observation') are not supported yet"),
        (_sharegpt(("human", "Hi"), ("gpt", "Hello"), ("system", "x")), "a system turn is not the first turn"),
        ({"conversations": []}, "no turns"),
        ({"conversations": None}, "'conversations' is not a list of turns"),
    ],
)
def test_each_sharegpt_drop_reason(row: dict, reason: str) -> None:
    # One bad row next to a good one: the good row survives, the bad one is reported with its reason.
    good = _sharegpt(("human", "Hi"), ("gpt", "Hello"))
    with pytest.raises(DatasetError) as caught:
        _convert([row], _spec("sharegpt", SHAREGPT))
    assert f"Most common reason: {reason} (1 row)." in caught.value.message
    assert len(_convert([good, row], _spec("sharegpt", SHAREGPT))) == 1


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({"instruction": "Q", "input": "", "output": ""}, "empty assistant turn"),
        ({"instruction": "Q", "input": "", "output": None}, "empty assistant turn"),
        ({"instruction": "", "input": "", "output": "A"}, "empty user turn"),
        ({"instruction": "Q", "input": "", "output": "A", "history": [["only the question"]]},
         "history is not a list of [user, assistant] pairs"),
    ],
)
def test_each_alpaca_drop_reason(row: dict, reason: str) -> None:
    spec = _spec(columns=DatasetColumns(prompt="instruction", query="input", response="output", history="history"))
    good = {"instruction": "Q", "input": "", "output": "A", "history": None}
    assert len(_convert([good, {"history": None, **row}], spec)) == 1
    with pytest.raises(DatasetError) as caught:
        _convert([{"history": None, **row}], spec)
    assert f"Most common reason: {reason} (1 row)." in caught.value.message


def test_non_text_value_in_a_mixed_column_is_dropped() -> None:
    # datasets reads a JSON field holding both strings and numbers as a Json column of mixed values.
    raw = datasets.Dataset.from_dict(
        {"instruction": ["Q", "Q"], "output": ["A", 42]},
        features=datasets.Features({"instruction": datasets.Value("string"), "output": datasets.Json()}),
    )
    assert convert_dataset(raw, _spec(), "sft").to_list() == [{"messages": _turns("Q", "A"), "system": None, "_dataset": "demo"}]
    with pytest.raises(DatasetError) as caught:
        convert_dataset(raw.select([1]), _spec(), "sft")
    assert "Most common reason: 'output' holds int, not text (1 row)." in caught.value.message


def test_pt_drops_empty_text() -> None:
    spec = _spec(columns=DatasetColumns(prompt="text"), columns_declared=True)
    assert _convert([{"text": "Some prose."}, {"text": " "}, {"text": None}], spec, stage="pt") == [
        {"messages": [{"role": "user", "content": "Some prose."}], "system": None, "_dataset": "demo"}
    ]


def test_all_rows_bad_names_the_dataset_and_most_common_reason() -> None:
    rows = [_sharegpt(("human", "Hi"), ("bot", "Hello"))] * 3 + [_sharegpt(("human", "Hi"))]
    with pytest.raises(DatasetError) as caught:
        _convert(rows, _spec("sharegpt", SHAREGPT))
    assert caught.value.message == (
        "Dataset 'demo' has no usable rows: all 4 were dropped. "
        "Most common reason: unknown role 'bot' (expected 'human' or 'gpt') (3 rows). "
        "All reasons: 3 × unknown role 'bot' (expected 'human' or 'gpt') (rows 1, 2, 3); "
        "1 × the last turn is not an assistant turn (row 4)."
    )
    assert caught.value.hint.startswith('Check that "formatting", "columns" and "tags" of \'demo\' in /data/dataset_info.json')


# --- output shape and scale ------------------------------------------------------------------------------------


def test_output_schema_is_exactly_the_internal_shape() -> None:
    raw = datasets.Dataset.from_list([{"instruction": "Q", "input": "", "output": "A", "extra": 1}])
    converted = convert_dataset(raw, _spec(), "sft")
    assert converted.features == CONVERSATION_FEATURES
    assert converted.column_names == ["messages", "system", "_dataset"]


def test_ten_thousand_rows_convert_in_order() -> None:
    turns = (("human", "question {}"), ("gpt", "answer {}"), ("human", "more?"), ("gpt", "no"))
    rows = [_sharegpt(*((role, text.format(i)) for role, text in turns)) for i in range(10_000)]
    raw = datasets.Dataset.from_list(rows)
    converted = convert_dataset(raw, _spec("sharegpt", SHAREGPT), "sft")
    assert len(converted) == 10_000
    assert converted[9_999]["messages"][0] == {"role": "user", "content": "question 9999"}
