"""The scoring formatting: registry entry, per-dimension prompts, multi-dimension prompts, and reading answers back."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from llmtuner.data.loader import load_split_conversations
from llmtuner.data.registry import get_dataset_specs
from llmtuner.data.scoring import (
    ScoringAnswer,
    build_multi_prompt,
    build_single_prompt,
    format_answer,
    format_multi_answer,
    parse_multi_scoring_answer,
    parse_scoring_answer,
)
from llmtuner.extras.errors import ConfigError, DatasetError
from llmtuner.hparams import DataArguments

REPO_DATA = Path(__file__).resolve().parents[2] / "data"
LABELS = {"competitiveness": "产品竞争力", "innovation": "产品创新性"}


def _row(company: str, score, reason: str = "理由。", think: str = "分析。") -> dict:
    return {"prompt": "请评估。", "company_info": company, "think": think, "score": score, "reason": reason}


def _scoring_dir(tmp_path: Path, files: dict[str, list[dict]], dimensions: dict[str, str] = LABELS, **entry) -> str:
    folder = tmp_path / "scores" / "train"
    folder.mkdir(parents=True)
    for name, rows in files.items():
        (folder / f"{name}.json").write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    info = {"scores": {"file_name": "scores/train", "formatting": "scoring", "dimensions": dimensions, **entry}}
    (tmp_path / "dataset_info.json").write_text(json.dumps(info, ensure_ascii=False), encoding="utf-8")
    return str(tmp_path)


def _load(folder: str, **data_args):
    args = DataArguments(dataset="scores", dataset_dir=folder, **data_args)
    train, _ = load_split_conversations(args.dataset, args, "sft", cache_dir=str(Path(folder) / "cache"))
    return train


def test_single_mode_one_conversation_per_row_in_the_documented_layout(tmp_path):
    folder = _scoring_dir(tmp_path, {
        "competitiveness": [_row("甲公司", 7, "壁垒高。", "专利多。"), _row("乙公司", "3")],
        "innovation": [_row("甲公司", 8.5)],
    })
    train = _load(folder)
    pairs = sorted((messages[0]["content"], messages[1]["content"]) for messages in train["messages"])
    assert pairs == [
        ("请评估。\n\n评估维度：产品创新性\n\n企业信息：\n甲公司\n\n请先写分析过程，再给出0-9的评分（0分最低，9分最高）和理由。",
         "分析过程：分析。\n\n评分：8.5/9\n\n理由：理由。"),
        ("请评估。\n\n评估维度：产品竞争力\n\n企业信息：\n乙公司\n\n请先写分析过程，再给出0-9的评分（0分最低，9分最高）和理由。",
         "分析过程：分析。\n\n评分：3/9\n\n理由：理由。"),  # "3" in the file is a score too
        ("请评估。\n\n评估维度：产品竞争力\n\n企业信息：\n甲公司\n\n请先写分析过程，再给出0-9的评分（0分最低，9分最高）和理由。",
         "分析过程：专利多。\n\n评分：7/9\n\n理由：壁垒高。"),
    ]
    assert set(train["_dataset"]) == {"scores"}


def test_multi_mode_joins_a_company_across_dimensions_in_entry_order(tmp_path):
    folder = _scoring_dir(tmp_path, {"innovation": [_row("甲公司", 8, "新品多。"), _row("乙公司", 2)],
                                     "competitiveness": [_row("甲公司", 6, "份额高。")]})
    train = _load(folder, scoring_mode="multi")
    assert len(train) == 2  # two companies
    by_company = {row["messages"][0]["content"].split("企业信息：\n")[1].split("\n")[0]: row["messages"]
                  for row in train}
    prompt, answer = by_company["甲公司"][0]["content"], by_company["甲公司"][1]["content"]
    assert prompt == build_multi_prompt("甲公司", ["产品竞争力", "产品创新性"])
    assert prompt.startswith("作为风控专家，请对以下企业在产品竞争力、产品创新性等维度进行全面评估。")
    assert prompt.endswith("评估维度：\n1. 产品竞争力\n2. 产品创新性")
    assert answer == ("1. 产品竞争力评估：\n\n分析过程：分析。\n\n评分：6/9\n\n理由：份额高。\n\n"
                      "2. 产品创新性评估：\n\n分析过程：分析。\n\n评分：8/9\n\n理由：新品多。")
    assert by_company["乙公司"][1]["content"].startswith("1. 产品创新性评估：")  # only the dimension it has
    # scoring_dimensions picks dimensions without touching the files
    train = _load(folder, scoring_mode="multi", scoring_dimensions="innovation")
    assert all("产品竞争力" not in row["messages"][1]["content"] for row in train)


def test_answers_read_back_to_the_scores_they_hold():
    answer = format_multi_answer([("产品竞争力", "看份额。", 6, "份额高。"),
                                  ("产品创新性", "看专利。", 8.5, "专利多。")])
    parsed = parse_multi_scoring_answer(answer, LABELS)
    assert parsed == {"competitiveness": ScoringAnswer("看份额。", 6.0, "份额高。"),
                      "innovation": ScoringAnswer("看专利。", 8.5, "专利多。")}
    assert parse_scoring_answer(format_answer("想。", 4, "因为。")) == ScoringAnswer("想。", 4.0, "因为。")
    # what generation gets wrong is a parse failure, never a guess
    assert parse_scoring_answer("分析过程：好。\n\n评分：12/9\n\n理由：很好。").score is None
    assert parse_scoring_answer("分析过程：好。理由：没有评分。").score is None
    assert parse_scoring_answer("评分: 7\n理由: 简写也认。") == ScoringAnswer("", 7.0, "简写也认。")
    assert parse_scoring_answer("评分：9/10", low=1, high=10).score == 9.0
    missing = parse_multi_scoring_answer("1. 产品竞争力评估：\n\n评分：5/9\n\n理由：一般。", LABELS)
    assert list(missing) == ["competitiveness"]


def test_rows_with_bad_scores_are_dropped_and_counted(tmp_path, llmtuner_logs):
    rows = [_row("甲", 5), _row("乙", 10), _row("丙", "高"), _row("丁", 4, reason=""), _row("戊", None)]
    folder = _scoring_dir(tmp_path, {"competitiveness": rows}, score_range=[1, 9])
    train = _load(folder)
    assert len(train) == 1
    assert "dropped 4 of 5 rows: 3 × score not a number in [1, 9]; 1 × empty reason" in llmtuner_logs.text
    assert "1-9的评分（1分最低，9分最高）" in train[0]["messages"][0]["content"]


def test_a_new_dimension_needs_a_file_and_a_label_only(tmp_path):
    source = REPO_DATA / "presets" / "risk_scoring" / "train"
    target = tmp_path / "risk"
    shutil.copytree(source, target)
    companies = [row["company_info"] for row in json.loads((source / "innovation.json").read_text(encoding="utf-8"))]
    (target / "esg.json").write_text(json.dumps([_row(company, 5) for company in companies], ensure_ascii=False),
                                     encoding="utf-8")
    info = json.loads((REPO_DATA / "dataset_info.json").read_text(encoding="utf-8"))["risk_scoring_train"]
    info = {**info, "file_name": "risk", "dimensions": {**info["dimensions"], "esg": "ESG表现"}}
    (tmp_path / "dataset_info.json").write_text(json.dumps({"risk": info}, ensure_ascii=False), encoding="utf-8")
    args = DataArguments(dataset="risk", dataset_dir=str(tmp_path), scoring_mode="multi",
                         scoring_dimensions="innovation,esg")
    train, _ = load_split_conversations(args.dataset, args, "sft", cache_dir=str(tmp_path / "cache"))
    assert len(train) == len(companies)
    assert all(row["messages"][1]["content"].split("\n")[0] == "1. 产品创新性评估：" for row in train)
    assert all("2. ESG表现评估：" in row["messages"][1]["content"] for row in train)


def test_registry_and_argument_errors(tmp_path):
    folder = _scoring_dir(tmp_path, {"competitiveness": [_row("甲", 5)], "growth": [_row("甲", 5)]})
    with pytest.raises(DatasetError) as info:
        get_dataset_specs(["scores"], folder)
    assert "holds files for dimensions not listed in \"dimensions\": growth" in info.value.message
    assert '"growth": "<中文名>"' in info.value.hint

    other = tmp_path / "other"
    other.mkdir()
    folder = _scoring_dir(other, {"competitiveness": [_row("甲", 5)]}, dimensions={})
    with pytest.raises(DatasetError) as info:
        get_dataset_specs(["scores"], folder)
    assert "has no \"dimensions\" mapping" in info.value.message

    third = tmp_path / "third"
    third.mkdir()
    folder = _scoring_dir(third, {"competitiveness": [_row("甲", 5)]})
    with pytest.raises(ConfigError) as info:
        _load(folder, scoring_dimensions="innovaton")
    assert info.value.message == "scoring_dimensions names innovaton, which dataset 'scores' does not list."
    with pytest.raises(DatasetError) as info:
        _load(folder, scoring_dimensions="innovation")  # listed, but no file for it
    assert info.value.message.startswith("Dataset 'scores' has no file for the dimensions innovation")


def test_prompt_builders_use_the_score_range():
    assert build_single_prompt("甲", "市场地位", 1, 10, "").startswith("请对该企业进行评估。\n\n评估维度：市场地位")
    assert "给出1-10的评分（1分最低，10分最高）" in build_single_prompt("甲", "市场地位", 1, 10)
    assert "1. 对每个维度给出0-9的评分（0分最低，9分最高）" in build_multi_prompt("甲", ["市场地位"])
