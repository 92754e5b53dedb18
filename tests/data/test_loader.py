"""Files -> raw rows (every file type and encoding), and the full registry -> conversations pipeline on real corpora."""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path

import datasets
import pytest

from llmtuner.data.loader import load_conversations, load_dataset_file
from llmtuner.data.registry import get_dataset_specs
from llmtuner.extras.errors import ConfigError, DatasetError
from llmtuner.hparams import DataArguments


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A private datasets cache, so tests never read stale entries from ~/.cache or leave files there."""
    return str(tmp_path_factory.mktemp("datasets-cache"))


def _write_registry(folder: Path, entries: dict) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dataset_info.json").write_text(json.dumps(entries, ensure_ascii=False), encoding="utf-8")
    return str(folder)


def _load(folder: Path, entry: dict, cache_dir: str) -> list[dict]:
    (spec,) = get_dataset_specs(["d"], _write_registry(folder, {"d": entry}))
    return load_dataset_file(spec, cache_dir).to_list()


def _load_error(folder: Path, entry: dict, cache_dir: str) -> DatasetError:
    with pytest.raises(DatasetError) as caught:
        _load(folder, entry, cache_dir)
    return caught.value


ROWS = [{"instruction": "问候", "input": "", "output": "你好！"}, {"instruction": "Count", "input": "1-3", "output": "1 2 3"}]


# --- file types ------------------------------------------------------------------------------------------------


def test_json_list(tmp_path: Path, cache_dir: str) -> None:
    (tmp_path / "a.json").write_text(json.dumps(ROWS, ensure_ascii=False, indent=2), encoding="utf-8")
    assert _load(tmp_path, {"file_name": "a.json"}, cache_dir) == ROWS


def test_json_file_with_json_lines_content(tmp_path: Path, cache_dir: str) -> None:
    (tmp_path / "a.json").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in ROWS), encoding="utf-8")
    assert _load(tmp_path, {"file_name": "a.json"}, cache_dir) == ROWS


def test_jsonl(tmp_path: Path, cache_dir: str) -> None:
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS), encoding="utf-8")
    assert _load(tmp_path, {"file_name": "a.jsonl"}, cache_dir) == ROWS


@pytest.mark.parametrize("file_name", ["a.json", "a.jsonl"])
def test_gb18030_json_is_decoded_not_garbled(tmp_path: Path, cache_dir: str, file_name: str) -> None:
    # datasets' own json builder garbles a GB18030 JSON list without an error; the loader must not.
    text = json.dumps(ROWS, ensure_ascii=False) if file_name == "a.json" else "\n".join(
        json.dumps(r, ensure_ascii=False) for r in ROWS)
    (tmp_path / file_name).write_bytes(text.encode("gb18030"))
    assert _load(tmp_path, {"file_name": file_name, "encoding": "gb18030"}, cache_dir) == ROWS
    assert os.listdir(Path(cache_dir) / "llmtuner_utf8")  # the UTF-8 copy lives in the cache


def test_csv_keeps_every_cell_as_text(tmp_path: Path, cache_dir: str) -> None:
    (tmp_path / "a.csv").write_text('ask,answer\n"two\nlines",NA\n007,\nnull,3.0\n', encoding="utf-8")
    assert _load(tmp_path, {"file_name": "a.csv"}, cache_dir) == [
        {"ask": "two\nlines", "answer": "NA"}, {"ask": "007", "answer": ""}, {"ask": "null", "answer": "3.0"},
    ]


def test_csv_with_excel_byte_order_mark(tmp_path: Path, cache_dir: str) -> None:
    (tmp_path / "a.csv").write_text("ask,answer\nhi,hello\n", encoding="utf-8-sig")
    assert _load(tmp_path, {"file_name": "a.csv"}, cache_dir) == [{"ask": "hi", "answer": "hello"}]


def test_gb18030_csv_with_declared_encoding(tmp_path: Path, cache_dir: str) -> None:
    (tmp_path / "a.csv").write_bytes("科室,问题\n内科,头疼怎么办？\n".encode("gb18030"))
    assert _load(tmp_path, {"file_name": "a.csv", "encoding": "gb18030"}, cache_dir) == [{"科室": "内科", "问题": "头疼怎么办？"}]


def test_txt_one_sample_per_line(tmp_path: Path, cache_dir: str) -> None:
    (tmp_path / "a.txt").write_bytes("第一段。\nSecond paragraph.\n".encode("gb18030"))
    assert _load(tmp_path, {"file_name": "a.txt", "encoding": "gb18030"}, cache_dir) == [
        {"text": "第一段。"}, {"text": "Second paragraph."},
    ]


def test_parquet(tmp_path: Path, cache_dir: str) -> None:
    datasets.Dataset.from_list(ROWS).to_parquet(str(tmp_path / "a.parquet"))
    assert _load(tmp_path, {"file_name": "a.parquet"}, cache_dir) == ROWS


def test_folder_of_files_in_name_order(tmp_path: Path, cache_dir: str) -> None:
    (tmp_path / "parts").mkdir()
    for index, row in enumerate(ROWS):
        (tmp_path / "parts" / f"part-{index}.jsonl").write_text(json.dumps(row, ensure_ascii=False), encoding="utf-8")
    assert _load(tmp_path, {"file_name": "parts"}, cache_dir) == ROWS


def test_file_type_overrides_the_extension(tmp_path: Path, cache_dir: str) -> None:
    (tmp_path / "export.dat").write_text(json.dumps(ROWS, ensure_ascii=False), encoding="utf-8")
    assert _load(tmp_path, {"file_name": "export.dat", "file_type": "json"}, cache_dir) == ROWS


def test_split_slice(tmp_path: Path, cache_dir: str) -> None:
    (tmp_path / "a.json").write_text(json.dumps(ROWS, ensure_ascii=False), encoding="utf-8")
    assert _load(tmp_path, {"file_name": "a.json", "split": "train[:1]"}, cache_dir) == ROWS[:1]


def test_nothing_is_written_next_to_the_data(tmp_path: Path, cache_dir: str) -> None:
    (tmp_path / "a.json").write_text(json.dumps(ROWS), encoding="utf-8")
    _load(tmp_path, {"file_name": "a.json"}, cache_dir)
    assert sorted(os.listdir(tmp_path)) == ["a.json", "dataset_info.json"]


# --- file errors -----------------------------------------------------------------------------------------------


def test_gb18030_csv_read_as_utf8_names_file_encoding_and_fix(shared_dir: Path, tmp_path: Path, cache_dir: str) -> None:
    toyhom = shared_dir / "corpora" / "toyhom_sample.csv"
    error = _load_error(tmp_path, {"file_name": str(toyhom), "columns": {"prompt": "ask", "response": "answer"}}, cache_dir)
    assert error.message == f"Cannot decode {toyhom} (dataset 'd') as utf-8: line 2: invalid continuation byte."
    assert error.hint == (
        f'The file is not utf-8 text (it decodes as gb18030): set "encoding": "gb18030" in its dataset_info.json '
        f"entry ({tmp_path / 'dataset_info.json'})."
    )


def test_gb18030_json_read_as_utf8_is_an_error_not_garbage(tmp_path: Path, cache_dir: str) -> None:
    (tmp_path / "a.json").write_bytes(("[\n" + json.dumps(ROWS[0], ensure_ascii=False) + "\n]").encode("gb18030"))
    error = _load_error(tmp_path, {"file_name": "a.json"}, cache_dir)
    assert error.message == f"Cannot decode {tmp_path / 'a.json'} (dataset 'd') as utf-8: line 2: invalid continuation byte."
    assert '"encoding": "gb18030"' in error.hint


def test_bad_json_line_is_named(tmp_path: Path, cache_dir: str) -> None:
    (tmp_path / "a.jsonl").write_text('{"instruction": "a"}\n{"instruction": "b"\n{"instruction": "c"}\n', encoding="utf-8")
    error = _load_error(tmp_path, {"file_name": "a.jsonl"}, cache_dir)
    assert error.message == (
        f"{tmp_path / 'a.jsonl'} (dataset 'd') is not valid JSON: line 2, column 20: Expecting ',' delimiter."
    )


def test_bad_json_list_is_located(tmp_path: Path, cache_dir: str) -> None:
    (tmp_path / "a.json").write_text('[\n  {"instruction": "a"},\n  {"instruction": "b" "x"}\n]', encoding="utf-8")
    error = _load_error(tmp_path, {"file_name": "a.json"}, cache_dir)
    assert error.message == (
        f"{tmp_path / 'a.json'} (dataset 'd') is not valid JSON: line 3, column 23: Expecting ',' delimiter."
    )


def test_empty_file(tmp_path: Path, cache_dir: str) -> None:
    (tmp_path / "a.jsonl").write_text("", encoding="utf-8")
    error = _load_error(tmp_path, {"file_name": "a.jsonl"}, cache_dir)
    assert error.message == f"The data file {tmp_path / 'a.jsonl'} of dataset 'd' is empty."


def test_unknown_split(tmp_path: Path, cache_dir: str) -> None:
    (tmp_path / "a.json").write_text(json.dumps(ROWS), encoding="utf-8")
    error = _load_error(tmp_path, {"file_name": "a.json", "split": "validation"}, cache_dir)
    assert error.message == (
        "\"split\": 'validation' of dataset 'd' does not exist: local files form one split, \"train\"."
    )


# --- the real corpora through a registry -----------------------------------------------------------------------


def _turns(user: str, assistant: str) -> list[dict]:
    return [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]


def _expected_alpaca(rows: list[dict]) -> list[list[dict]]:
    return [_turns("\n".join(p for p in (r["instruction"], r["input"]) if p), r["output"]) for r in rows]


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def corpora_registry(repo_root: Path, shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The registry documented in data/README.md for the real corpora, so the docs stay true: its entries, with
    the files of ../shared/corpora placed in the dataset folder as the README tells users to."""
    readme = (repo_root / "data" / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Real corpora (not in the repository)", 1)[1]
    block = section.split("```jsonc\n", 1)[1].split("```", 1)[0]
    entries = json.loads(re.sub(r"\s*//.*$", "", block, flags=re.MULTILINE))
    folder = tmp_path_factory.mktemp("registry")
    for file_name in {entry["file_name"] for entry in entries.values()}:
        (folder / file_name).symlink_to(shared_dir / "corpora" / file_name)
    return _write_registry(folder, entries)


def _conversations(registry: str, names: list[str], cache_dir: str, stage: str = "sft", **data_args) -> datasets.Dataset:
    return load_conversations(names, DataArguments(dataset_dir=registry, **data_args), stage, cache_dir=cache_dir)


def test_alpaca_zh_demo(corpora_registry: str, shared_dir: Path, cache_dir: str) -> None:
    converted = _conversations(corpora_registry, ["alpaca_zh_demo"], cache_dir)
    assert len(converted) == 1000  # no row is dropped
    assert converted[0]["messages"][0] == {"role": "user", "content": "识别并解释给定列表中的两个科学理论：细胞理论和日心说。"}
    assert converted[1]["messages"][0]["content"] == "输入三支篮球队的名称并生成一个适当的口号。\n输入：俄克拉荷马城雷霆队，芝加哥公牛队，布鲁克林网队。"
    raw = json.loads((shared_dir / "corpora" / "alpaca_zh_demo.json").read_text(encoding="utf-8"))
    assert converted["messages"] == _expected_alpaca(raw)
    assert set(converted["system"]) == {None} and set(converted["_dataset"]) == {"alpaca_zh_demo"}


def test_medicalgpt_sharegpt(corpora_registry: str, shared_dir: Path, cache_dir: str) -> None:
    converted = _conversations(corpora_registry, ["medical_sft_sharegpt"], cache_dir)
    assert len(converted) == 1000
    assert converted[2] == {"messages": _turns("精子生成减少的病因是什么？", "支持细胞错位"), "system": None,
                            "_dataset": "medical_sft_sharegpt"}
    raw = _read_jsonl(shared_dir / "corpora" / "medicalgpt_medical_sft_1K_format.jsonl")
    assert converted["messages"] == [_turns(r["conversations"][0]["value"], r["conversations"][1]["value"]) for r in raw]


def test_huatuo_alpaca_jsonl(corpora_registry: str, shared_dir: Path, cache_dir: str) -> None:
    converted = _conversations(corpora_registry, ["huatuo_alpaca"], cache_dir)
    assert len(converted) == 8658
    assert converted[0]["messages"] == _turns(
        "一名年龄在70岁的女性，出现了晕厥、不自主颤抖、情绪不稳等症状，请详细说明其手术治疗和术前准备。",
        "该病需要进行电极导线、脉冲发生器和永久心脏起搏器置入术，并需要使用镇静药物和局麻对病人进行手术治疗。"
        "术前准备包括1-3天的时间进行术前检查和生活方式的调整。",
    )
    assert converted["messages"] == _expected_alpaca(_read_jsonl(shared_dir / "corpora" / "huatuo_llama_data.jsonl"))


def test_toyhom_gb18030_csv(corpora_registry: str, shared_dir: Path, cache_dir: str) -> None:
    converted = _conversations(corpora_registry, ["toyhom_dialogue", "toyhom_by_department"], cache_dir)
    assert len(converted) == 2 * 7644  # no row is dropped from either entry
    assert converted[0]["messages"][0] == {
        "role": "user", "content": "我有高血压这两天女婿来的时候给我拿了些党参泡水喝，您好高血压可以吃党参吗？"}
    assert converted[0]["system"] is None
    assert converted[7644]["system"] == "心血管科"  # the department column as system prompt
    with open(shared_dir / "corpora" / "toyhom_sample.csv", encoding="gb18030", newline="") as handle:
        raw = list(csv.DictReader(handle))
    assert converted["messages"][:7644] == [_turns(r["ask"], r["answer"]) for r in raw]
    assert converted["system"][7644:] == [r["department"] for r in raw]


# --- the pipeline ----------------------------------------------------------------------------------------------


def test_repository_demo_datasets(repo_root: Path, cache_dir: str) -> None:
    registry = str(repo_root / "data")
    sft = _conversations(registry, ["sft_demo_zh_en", "sft_demo_sharegpt"], cache_dir)
    assert sft.column_names == ["messages", "system", "_dataset"]
    assert sft["_dataset"] == ["sft_demo_zh_en"] * 82 + ["sft_demo_sharegpt"] * 30
    assert sft[0]["messages"] == [
        {"role": "user", "content": "把下面这句话翻译成英文。\n今天下午三点我们在图书馆门口见面。"},
        {"role": "assistant", "content": "Let's meet at the library entrance at three o'clock this afternoon."},
    ]
    assert sum(len(m) > 2 for m in sft["messages"][:82]) == 3  # the rows with a history column
    assert sum(s is not None for s in sft["system"][82:]) == 10  # conversations that open with a system turn
    pt = _conversations(registry, ["pt_demo"], cache_dir, stage="pt")
    assert len(pt) == 60 and all(len(m) == 1 and m[0]["role"] == "user" for m in pt["messages"])


def test_max_samples_keeps_the_first_rows(corpora_registry: str, cache_dir: str) -> None:
    converted = _conversations(corpora_registry, ["alpaca_zh_demo", "huatuo_alpaca"], cache_dir, max_samples=3)
    full = _conversations(corpora_registry, ["alpaca_zh_demo"], cache_dir)
    assert converted["_dataset"] == ["alpaca_zh_demo"] * 3 + ["huatuo_alpaca"] * 3
    assert converted["messages"][:3] == full["messages"][:3]


def test_num_samples_subsamples_and_oversamples_reproducibly(tmp_path: Path, cache_dir: str) -> None:
    rows = [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(10)]
    (tmp_path / "a.json").write_text(json.dumps(rows), encoding="utf-8")
    registry = _write_registry(tmp_path, {
        "few": {"file_name": "a.json", "num_samples": 4}, "many": {"file_name": "a.json", "num_samples": 25},
    })

    def prompts(name: str, seed: int) -> list[str]:
        data = load_conversations([name], DataArguments(dataset_dir=registry), "sft", seed=seed, cache_dir=cache_dir)
        return [m[0]["content"] for m in data["messages"]]

    few = prompts("few", 42)
    assert len(few) == 4 and len(set(few)) == 4
    assert prompts("few", 42) == few
    assert prompts("few", 7) != few
    many = prompts("many", 42)
    assert len(many) == 25
    assert set(many[:10]) == {f"q{i}" for i in range(10)}  # every row once, then random repeats


def test_no_dataset_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_conversations(None, DataArguments(dataset_dir=str(tmp_path)), "sft")
    assert caught.value.message == "No dataset given."


def test_stage_mismatch_fails_before_any_file_is_read(tmp_path: Path) -> None:
    # The file is not even valid UTF-8: the stage check must come first.
    (tmp_path / "chat.jsonl").write_bytes("对话".encode("gb18030"))
    registry = _write_registry(tmp_path, {"chat": {"file_name": "chat.jsonl", "formatting": "sharegpt"}})
    with pytest.raises(DatasetError) as caught:
        load_conversations(["chat"], DataArguments(dataset_dir=registry), "pt")
    assert caught.value.message == "Dataset 'chat' is sharegpt conversations, but stage pt reads plain text."


def test_mixing_arguments_are_checked_before_loading(corpora_registry: str) -> None:
    args = DataArguments(dataset_dir=corpora_registry, mix_strategy="interleave_under", interleave_probs="0.5,0.3,0.2")
    with pytest.raises(ConfigError) as caught:
        load_conversations(["alpaca_zh_demo", "huatuo_alpaca"], args, "sft")
    assert caught.value.message == "interleave_probs has 3 values for 2 datasets."


def test_interleave_over_through_the_pipeline(corpora_registry: str, cache_dir: str) -> None:
    args = DataArguments(dataset_dir=corpora_registry, max_samples=5, mix_strategy="interleave_over")
    mixed = load_conversations(["alpaca_zh_demo", "medical_sft_sharegpt"], args, "sft", cache_dir=cache_dir)
    assert mixed["_dataset"] == ["alpaca_zh_demo", "medical_sft_sharegpt"] * 5
