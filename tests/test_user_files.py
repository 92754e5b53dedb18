"""Row files named on the command line (test_file, input_file): text and JSON records, with exact errors."""

from __future__ import annotations

import pytest

from llmtuner.extras.errors import DatasetError
from llmtuner.extras.user_files import parse_json_records, read_user_text


def test_utf8_with_a_byte_order_mark_and_the_errors_name_field_and_file(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes("\ufeff{\"text\": \"你好\"}\n".encode("utf-8"))
    assert read_user_text(str(path), "input_file") == '{"text": "你好"}\n'
    with pytest.raises(DatasetError) as missing:
        read_user_text(str(tmp_path / "none.json"), "test_file")
    assert missing.value.message == f"test_file={tmp_path / 'none.json'} does not exist."
    (tmp_path / "gbk.json").write_bytes("你好".encode("gbk"))
    with pytest.raises(DatasetError, match=r"input_file=.*gbk.json is not UTF-8 text\."):
        read_user_text(str(tmp_path / "gbk.json"), "input_file")


def test_json_list_or_json_lines_with_the_line_of_an_error():
    assert parse_json_records('  [{"a": 1}, "b"]', "f.json", "input_file") == [{"a": 1}, "b"]
    assert parse_json_records('{"a": 1}\n\n"b"\n', "f.jsonl", "input_file") == [{"a": 1}, "b"]
    with pytest.raises(DatasetError) as broken_list:
        parse_json_records('[\n{"a": 1},\n{"a": }\n]', "f.json", "test_file")
    assert broken_list.value.message == "test_file=f.json is not a valid JSON list: Expecting value at line 3."
    with pytest.raises(DatasetError) as broken_line:
        parse_json_records('{"a": 1}\n{"a": 2', "f.jsonl", "input_file")
    assert broken_line.value.message.startswith("input_file=f.jsonl is neither a JSON list nor JSON lines: line 2:")
