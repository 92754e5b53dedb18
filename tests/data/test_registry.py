"""dataset_info.json -> DatasetSpec: LLaMA-Factory defaults, path rules, and one error test per user mistake."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmtuner.data.registry import DatasetColumns, MessageTags, get_dataset_specs
from llmtuner.extras.errors import DatasetError


def _registry(folder: Path, entries: dict, files: tuple[str, ...] = ("data.json",)) -> str:
    """A dataset folder holding ``entries`` as dataset_info.json plus empty placeholder data files."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in files:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("[]", encoding="utf-8")
    (folder / "dataset_info.json").write_text(json.dumps(entries), encoding="utf-8")
    return str(folder)


def _error(folder: str, name: str = "d") -> DatasetError:
    with pytest.raises(DatasetError) as caught:
        get_dataset_specs([name], folder)
    return caught.value


# --- defaults and resolution -----------------------------------------------------------------------------------


def test_alpaca_defaults_follow_llamafactory(tmp_path: Path) -> None:
    folder = _registry(tmp_path, {"d": {"file_name": "data.json"}})
    (spec,) = get_dataset_specs(["d"], folder)
    assert spec.name == "d"
    assert spec.formatting == "alpaca"
    assert spec.columns == DatasetColumns(prompt="instruction", query="input", response="output")
    assert spec.columns_declared is False
    assert spec.path == str(tmp_path / "data.json")
    assert spec.data_files == (str(tmp_path / "data.json"),)
    assert spec.file_type == "json"
    assert (spec.split, spec.num_samples, spec.encoding) == ("train", None, "utf-8")
    assert spec.registry_path == str(tmp_path / "dataset_info.json")


def test_sharegpt_and_openai_defaults(tmp_path: Path) -> None:
    folder = _registry(
        tmp_path,
        {"s": {"file_name": "data.json", "formatting": "sharegpt"}, "o": {"file_name": "data.json", "formatting": "openai"}},
    )
    sharegpt, openai = get_dataset_specs(["s", "o"], folder)
    assert sharegpt.columns == DatasetColumns(messages="conversations")
    assert sharegpt.tags == MessageTags("from", "value", "human", "gpt", "system", "observation", "function_call")
    assert openai.columns == DatasetColumns(messages="messages")
    assert openai.tags == MessageTags("role", "content", "user", "assistant", "system", "tool", "function")


def test_declared_columns_replace_the_defaults(tmp_path: Path) -> None:
    # LLaMA-Factory's rule: with a "columns" object only the named columns are used (pt data names just the text).
    folder = _registry(tmp_path, {"pt": {"file_name": "data.json", "columns": {"prompt": "text"}}})
    (spec,) = get_dataset_specs(["pt"], folder)
    assert spec.columns == DatasetColumns(prompt="text")
    assert spec.columns_declared is True


def test_partial_tags_keep_the_other_defaults(tmp_path: Path) -> None:
    entry = {"file_name": "data.json", "formatting": "sharegpt", "tags": {"user_tag": "user", "assistant_tag": "bot"}}
    (spec,) = get_dataset_specs(["d"], _registry(tmp_path, {"d": entry}))
    assert spec.tags == MessageTags("from", "value", "user", "bot", "system", "observation", "function_call")


def test_txt_file_reads_its_text_column_as_prompt(tmp_path: Path) -> None:
    (spec,) = get_dataset_specs(["t"], _registry(tmp_path, {"t": {"file_name": "notes.txt"}}, ("notes.txt",)))
    assert spec.file_type == "txt"
    assert spec.columns == DatasetColumns(prompt="text")


def test_every_key_is_read(tmp_path: Path) -> None:
    entry = {
        "file_name": "raw.dat", "file_type": "csv", "encoding": "GB18030", "split": "train[:10]", "num_samples": 5,
        "columns": {"prompt": "ask", "response": "answer", "system": "department"}, "ranking": False,
    }
    (spec,) = get_dataset_specs(["d"], _registry(tmp_path, {"d": entry}, ("raw.dat",)))
    assert (spec.file_type, spec.encoding, spec.split, spec.num_samples) == ("csv", "gb18030", "train[:10]", 5)
    assert spec.columns == DatasetColumns(prompt="ask", response="answer", system="department")


def test_folder_lists_its_visible_files_sorted(tmp_path: Path) -> None:
    folder = _registry(tmp_path, {"d": {"file_name": "parts"}}, ("parts/b.jsonl", "parts/a.jsonl", "parts/.hidden"))
    (spec,) = get_dataset_specs(["d"], folder)
    assert spec.file_type == "jsonl"
    assert spec.data_files == (str(tmp_path / "parts" / "a.jsonl"), str(tmp_path / "parts" / "b.jsonl"))


def test_absolute_path_outside_the_folder_is_allowed(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere" / "data.jsonl"
    outside.parent.mkdir()
    outside.write_text("", encoding="utf-8")
    (spec,) = get_dataset_specs(["d"], _registry(tmp_path / "reg", {"d": {"file_name": str(outside)}}))
    assert spec.data_files == (str(outside),)


def test_repository_registry_resolves(repo_root: Path) -> None:
    specs = get_dataset_specs(["sft_demo_zh_en", "sft_demo_sharegpt", "pt_demo"], str(repo_root / "data"))
    assert [(s.formatting, s.file_type, Path(s.path).name) for s in specs] == [
        ("alpaca", "json", "sft_demo.json"),
        ("sharegpt", "jsonl", "sft_demo_sharegpt.jsonl"),
        ("alpaca", "jsonl", "pt_demo.jsonl"),
    ]
    assert specs[0].columns.history == "history" and specs[0].columns.system == "system"


# --- errors ----------------------------------------------------------------------------------------------------


def test_missing_registry_names_folder_and_flag(tmp_path: Path) -> None:
    error = _error(str(tmp_path))
    assert error.message == f"The dataset folder {tmp_path} has no dataset_info.json."
    assert "--dataset_dir" in error.hint


def test_missing_dataset_folder(tmp_path: Path) -> None:
    error = _error(str(tmp_path / "nope"))
    assert error.message == f"The dataset folder {tmp_path / 'nope'} does not exist."


def test_registry_with_bad_json_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "dataset_info.json").write_text('{\n  "d": {"file_name": "a.json",}\n}', encoding="utf-8")
    error = _error(str(tmp_path))
    assert error.message.startswith(f"{tmp_path / 'dataset_info.json'} is not valid JSON (line 2, column")


def test_unknown_dataset_lists_close_names(tmp_path: Path) -> None:
    folder = _registry(tmp_path, {n: {"file_name": "data.json"} for n in ("sft_demo_zh_en", "sft_demo_sharegpt", "pt_demo")})
    error = _error(folder, "sft_demo")
    assert error.message == f"Dataset 'sft_demo' is not registered in {tmp_path / 'dataset_info.json'}."
    assert error.hint.startswith("Did you mean: sft_demo_sharegpt, sft_demo_zh_en, pt_demo?")
    assert str(tmp_path / "dataset_info.json") in error.hint


def test_unknown_dataset_without_close_names_lists_the_registry(tmp_path: Path) -> None:
    error = _error(_registry(tmp_path, {"alpha": {"file_name": "data.json"}}), "zzz")
    assert error.hint.startswith("Registered datasets: alpha.")


def test_unknown_dataset_suggests_no_name_that_only_shares_a_suffix(tmp_path: Path) -> None:
    # The docs name alpaca_zh_demo; in a folder without it, "pt_demo" (same "_demo") is no answer: say how to add it.
    folder = _registry(tmp_path, {n: {"file_name": "data.json"} for n in ("pt_demo", "medical_alpaca", "zh_instruct")})
    error = _error(folder, "alpaca_zh_demo")
    assert error.hint.startswith("Registered datasets: medical_alpaca, pt_demo, zh_instruct.")
    assert f"Add an entry for 'alpaca_zh_demo' to {tmp_path / 'dataset_info.json'} ({{\"file_name\": " in error.hint
    assert _error(folder, "zh_instruc").hint.startswith("Did you mean: zh_instruct?")  # a real typo still is


def test_registered_corpus_that_is_not_shipped_says_where_to_get_it(repo_root: Path, tmp_path: Path) -> None:
    # data/dataset_info.json registers alpaca_zh_demo (the docs use it) without its file: the user downloads it.
    entry = json.loads((repo_root / "data" / "dataset_info.json").read_text(encoding="utf-8"))["alpaca_zh_demo"]
    error = _error(_registry(tmp_path, {"alpaca_zh_demo": entry}, files=()), "alpaca_zh_demo")
    assert error.message.startswith(f"Data file of dataset 'alpaca_zh_demo' not found: {tmp_path / 'alpaca_zh_demo.json'}")
    assert error.hint == (
        "This data is not shipped with llmtuner: get it from https://raw.githubusercontent.com/hiyouga/LLaMA-Factory/"
        "main/data/alpaca_zh_demo.json (LLaMA-Factory's demo data, 1,000 rows, Apache-2.0) and save it as "
        f"{tmp_path / 'alpaca_zh_demo.json'}."
    )
    (tmp_path / "alpaca_zh_demo.json").write_text("[]", encoding="utf-8")
    assert get_dataset_specs(["alpaca_zh_demo"], str(tmp_path))[0].file_type == "json"  # placed: it resolves
    error = _error(_registry(tmp_path / "bad", {"d": {"file_name": "data.json", "source": ["https://x"]}}))
    assert error.message.startswith('"source": [\'https://x\'] of dataset \'d\'') and "must be text" in error.message


def test_unknown_entry_key_suggests_the_close_one(tmp_path: Path) -> None:
    error = _error(_registry(tmp_path, {"d": {"file_name": "data.json", "formating": "alpaca"}}))
    assert error.message == f"Unknown key 'formating' in dataset 'd' in {tmp_path / 'dataset_info.json'}."
    assert "(did you mean 'formatting'" in error.hint  # first and closest; 'ranking' may follow


def test_hub_url_is_refused_with_the_reason(tmp_path: Path) -> None:
    error = _error(_registry(tmp_path, {"d": {"hf_hub_url": "llamafactory/alpaca_en"}}))
    assert error.message.startswith("Key 'hf_hub_url' of dataset 'd'")
    assert "reads local files only" in error.message


def test_ranking_true_reads_chosen_and_rejected(tmp_path: Path) -> None:
    (spec,) = get_dataset_specs(["d"], _registry(tmp_path, {"d": {"file_name": "data.json", "ranking": True}}))
    assert spec.ranking
    assert (spec.columns.prompt, spec.columns.chosen, spec.columns.rejected) == ("instruction", "chosen", "rejected")
    assert spec.columns.response is None


def test_missing_file_name_key(tmp_path: Path) -> None:
    error = _error(_registry(tmp_path, {"d": {"formatting": "alpaca"}}))
    assert error.message == f'Dataset \'d\' in {tmp_path / "dataset_info.json"} has no "file_name".'


def test_wrong_formatting_value(tmp_path: Path) -> None:
    error = _error(_registry(tmp_path, {"d": {"file_name": "data.json", "formatting": "sharegtp"}}))
    assert error.message == (
        f"\"formatting\": 'sharegtp' of dataset 'd' in {tmp_path / 'dataset_info.json'} is not a known format."
    )
    assert error.hint == "Use one of: alpaca, sharegpt, openai, scoring (did you mean 'sharegpt'?)."


def test_missing_file_names_dataset_and_path(tmp_path: Path) -> None:
    error = _error(_registry(tmp_path, {"d": {"file_name": "gone.json"}}))
    assert error.message.startswith(f"Data file of dataset 'd' not found: {tmp_path / 'gone.json'}")


def test_relative_path_may_not_escape_the_folder(tmp_path: Path) -> None:
    (tmp_path / "secret.json").write_text("[]", encoding="utf-8")
    error = _error(_registry(tmp_path / "reg", {"d": {"file_name": "../secret.json"}}))
    assert error.message == (
        f"\"file_name\": '../secret.json' of dataset 'd' in {tmp_path / 'reg' / 'dataset_info.json'} "
        f"points outside the dataset folder {tmp_path / 'reg'}."
    )
    assert "absolute path" in error.hint


@pytest.mark.parametrize(
    ("columns", "expected"),
    [
        ("instruction", "\"columns\" of dataset 'd' in {registry} must be a JSON object, not str 'instruction'."),
        ({"prompt": 3}, "\"columns\" of dataset 'd' in {registry}: 'prompt' must name a column as a non-empty string, not 3."),
        ({"chosen": "c"}, "\"columns\" of dataset 'd' in {registry}: column 'chosen' holds pairwise preference "
                          "data, which needs \"ranking\": true."),
        ({"messages": "m"}, "\"columns\" of dataset 'd' in {registry}: column 'messages' does not apply to "
                            "formatting 'alpaca' (it takes prompt, query, response, history, system, kto_tag)."),
        ({"promt": "q"}, "\"columns\" of dataset 'd' in {registry}: unknown column key 'promt'."),
    ],
)
def test_bad_columns(tmp_path: Path, columns: object, expected: str) -> None:
    error = _error(_registry(tmp_path, {"d": {"file_name": "data.json", "columns": columns}}))
    assert error.message == expected.format(registry=tmp_path / "dataset_info.json")


def test_unknown_column_key_suggests_the_close_one(tmp_path: Path) -> None:
    error = _error(_registry(tmp_path, {"d": {"file_name": "data.json", "columns": {"promt": "q"}}}))
    assert error.hint == "Valid column keys for alpaca: prompt, query, response, history, system, kto_tag (did you mean 'prompt'?)."


@pytest.mark.parametrize(
    ("formatting", "tags", "expected"),
    [
        ("alpaca", {"role_tag": "r"},
         "\"tags\" of dataset 'd' in {registry} only apply to formatting sharegpt or openai, but the entry is alpaca."),
        ("sharegpt", ["from"], "\"tags\" of dataset 'd' in {registry} must be a JSON object, not list ['from']."),
        ("sharegpt", {"user": "human"}, "Unknown tag 'user' in \"tags\" of dataset 'd' in {registry}."),
        ("sharegpt", {"user_tag": None},
         "\"tags\" of dataset 'd' in {registry}: 'user_tag' must name a value as a non-empty string, not None."),
    ],
)
def test_bad_tags(tmp_path: Path, formatting: str, tags: object, expected: str) -> None:
    error = _error(_registry(tmp_path, {"d": {"file_name": "data.json", "formatting": formatting, "tags": tags}}))
    assert error.message == expected.format(registry=tmp_path / "dataset_info.json")


def test_unknown_encoding(tmp_path: Path) -> None:
    error = _error(_registry(tmp_path, {"d": {"file_name": "data.json", "encoding": "utf-9"}}))
    assert error.message.startswith("\"encoding\": 'utf-9' of dataset 'd'")
    assert '"gb18030"' in error.hint


def test_unknown_extension_asks_for_file_type(tmp_path: Path) -> None:
    error = _error(_registry(tmp_path, {"d": {"file_name": "data.dat"}}, ("data.dat",)))
    assert error.message.startswith("Cannot tell the file type of dataset 'd'")
    assert "from the extension .dat" in error.message
    assert error.hint == 'Add "file_type": one of json, jsonl, csv, txt, parquet.'


def test_bad_file_type_value(tmp_path: Path) -> None:
    error = _error(_registry(tmp_path, {"d": {"file_name": "data.json", "file_type": "jsonlines"}}))
    assert error.message.startswith("\"file_type\": 'jsonlines' of dataset 'd'")
    assert error.hint == "Use one of: json, jsonl, csv, txt, parquet (did you mean 'jsonl' or 'json'?)."


def test_folder_mixing_file_types(tmp_path: Path) -> None:
    error = _error(_registry(tmp_path, {"d": {"file_name": "parts"}}, ("parts/a.json", "parts/b.csv")))
    assert error.message == (
        f"The data folder {tmp_path / 'parts'} of dataset 'd' in {tmp_path / 'dataset_info.json'} "
        "mixes file types: csv, json."
    )


@pytest.mark.parametrize("num_samples", [0, -3, "10", True, 2.5])
def test_bad_num_samples(tmp_path: Path, num_samples: object) -> None:
    error = _error(_registry(tmp_path, {"d": {"file_name": "data.json", "num_samples": num_samples}}))
    assert error.message.startswith(f'"num_samples": {num_samples!r} of dataset \'d\'')
    assert error.message.endswith("must be a positive whole number.")


def test_only_requested_entries_are_validated(tmp_path: Path) -> None:
    # A registry copied from LLaMA-Factory may hold hub entries; they must not block the local ones.
    folder = _registry(tmp_path, {"hub": {"hf_hub_url": "x/y"}, "d": {"file_name": "data.json"}})
    assert [spec.name for spec in get_dataset_specs(["d"], folder)] == ["d"]


def test_json_keys_are_read_for_the_json_reward(tmp_path: Path) -> None:
    folder = _registry(tmp_path, {"j": {"file_name": "data.json", "json_keys": ["score", "reason"]},
                                  "d": {"file_name": "data.json"}})
    declared, plain = get_dataset_specs(["j", "d"], folder)
    assert (declared.json_keys, plain.json_keys) == (("score", "reason"), None)


@pytest.mark.parametrize("json_keys", [[], "score", ["score", ""], ["score", 3], ["score", "score"]])
def test_bad_json_keys(tmp_path: Path, json_keys: object) -> None:
    error = _error(_registry(tmp_path, {"d": {"file_name": "data.json", "json_keys": json_keys}}))
    assert error.message.startswith(f'"json_keys": {json_keys!r} of dataset \'d\'')
    assert error.hint.startswith('Write e.g. "json_keys": ["score", "reason"]')


def test_tasks_keep_only_the_listed_tasks(tmp_path: Path) -> None:
    from llmtuner.data.loader import load_conversations
    from llmtuner.hparams import DataArguments

    rows = [{"q": f"问题{i}", "a": label, "t": task} for i, (label, task) in
            enumerate([("是", "判断"), ("否", "判断"), ("长答案", "问答")])]
    columns = {"prompt": "q", "response": "a"}
    folder = _registry(tmp_path, {"labels": {"file_name": "data.json", "task_tag": "t", "tasks": ["判断"],
                                             "columns": columns},
                                  "typo": {"file_name": "data.json", "task_tag": "t", "tasks": ["判段"],
                                           "columns": columns}})
    (tmp_path / "data.json").write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    converted = load_conversations(["labels"], DataArguments(dataset_dir=str(folder)), "grpo")
    assert [m[-1]["content"] for m in converted["messages"]] == ["是", "否"]
    with pytest.raises(DatasetError, match="names 判段, which no row of .* has in its 't' column"):
        load_conversations(["typo"], DataArguments(dataset_dir=str(folder)), "grpo")


@pytest.mark.parametrize("entry", [{"tasks": ["a"]}, {"task_tag": "t", "tasks": "a"}, {"task_tag": "t", "tasks": []}])
def test_bad_tasks(tmp_path: Path, entry: dict) -> None:
    error = _error(_registry(tmp_path, {"d": {"file_name": "data.json", **entry}}))
    assert '"tasks"' in error.message and '"task_tag": "task", "tasks"' in error.hint
