"""The scoring report on hand-made answers: metrics against values worked out by hand, per-dimension parse
failures, the files, the CJK charts, --compare, and the bad inputs of `llmtuner test test_dataset=...` (refused
before the model loads)."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest

from llmtuner.cli import main
from llmtuner.data.registry import DatasetSpec
from llmtuner.data.scoring import ScoringTestItem, format_answer, format_multi_answer
from llmtuner.eval.scoring_report import (
    REPORT_FILES,
    RESULTS_JSON,
    build_report,
    check_report_dir,
    score_answers,
    write_report,
)
from llmtuner.eval.scoring_eval import compare_results
from llmtuner.extras.errors import ConfigError

LABELS = {"competitiveness": "产品竞争力", "innovation": "产品创新性"}
SPEC = DatasetSpec(name="scores_test", path="unused", data_files=(), file_name="unused", file_type="json",
                   registry_path="unused", formatting="scoring",
                   dimensions=tuple(LABELS.items()), score_range=(0.0, 9.0))
# company -> dimension -> (gold, the answer's score: a number, None for an unreadable answer)
HAND_MADE = {
    "甲公司": {"competitiveness": (7, 6), "innovation": (5, 5)},
    "乙公司": {"competitiveness": (2, 4), "innovation": (8, None)},
    "丙公司": {"competitiveness": (5, 5), "innovation": (3, 1)},
    "丁公司": {"competitiveness": (9, 7), "innovation": (6, 8)},
}


def _item(company: str, dimensions: tuple[str, ...]) -> ScoringTestItem:
    gold = {name: {"score": HAND_MADE[company][name][0], "think": "看专利。", "reason": "因此较好。"}
            for name in dimensions}
    return ScoringTestItem(company, dimensions, f"评估{company}", gold)


def _single_answers() -> tuple[list[ScoringTestItem], list[str]]:
    items, answers = [], []
    for company, by_dimension in HAND_MADE.items():
        for name, (_, predicted) in by_dimension.items():
            items.append(_item(company, (name,)))
            answers.append("我不知道。" if predicted is None else
                           format_answer("营业收入增长20%，因此竞争优势明显。", predicted, "专利多。"))
    return items, answers


def _hand_made_report(tmp_path: Path, bins=None) -> tuple[dict, Path]:
    items, answers = _single_answers()
    records = score_answers(items, answers, SPEC, multi=False)
    report = build_report(records, SPEC, bins)
    folder = tmp_path / "report"
    write_report(folder, report, records, SPEC, {"test_dataset": SPEC.name, "scoring_mode": "single"})
    return report, folder


# The report's numbers for HAND_MADE, worked out by hand (pairs gold/predicted; bins of 0-9: [0,3) [3,6) [6,9];
# accuracies over every sample, the unreadable answer counting as wrong; correlations over the parsed pairs).
# competitiveness 7/6 2/4 5/5 9/7: errors 1 2 0 2; the predicted ranks follow the gold ones.
#   pearson = sum(dg*dp) / sqrt(sum dg^2 * sum dp^2) = 11.5 / sqrt(26.75 * 5)
# innovation 5/5 8/- 3/1 6/8: errors 0 2 2 over 3 parsed; pearson = (96/9) / sqrt(42/9 * 222/9)
# overall (7 parsed): sums g=37 p=36 g2=229 p2=216 gp=214 -> Sgp=166/7 Sgg=234/7 Spp=216/7;
#   ranks gold 6 1 3.5 7 3.5 2 5, predicted 5 2 3.5 6 3.5 1 7 -> spearman = 23.5 / 27.5
BY_HAND = {  # num_samples, num_parsed, mae, rmse, pearson, spearman, exact, within 1, binned, parse failures
    "competitiveness": (4, 4, 5 / 4, 1.5, 11.5 / math.sqrt(26.75 * 5), 1.0, 1 / 4, 2 / 4, 3 / 4, 0.0),
    "innovation": (4, 3, 4 / 3, math.sqrt(8 / 3), 96 / math.sqrt(42 * 222), 1.0, 1 / 4, 1 / 4, 2 / 4, 1 / 4),
    "overall": (8, 7, 9 / 7, math.sqrt(17 / 7), 166 / math.sqrt(234 * 216), 47 / 55, 2 / 8, 3 / 8, 5 / 8, 1 / 8),
}
FIELDS = ("num_samples", "num_parsed", "mae", "rmse", "pearson", "spearman", "exact_accuracy",
          "within_tolerance_accuracy", "binned_accuracy", "parse_failure_rate")


def test_metrics_equal_the_hand_computed_values(tmp_path):
    report, folder = _hand_made_report(tmp_path)
    rows = [json.loads(line) for line in (folder / "scoring_predictions.jsonl").read_text("utf-8").splitlines()]
    assert [(r["company"], r["dimension"], r["gold"], r["predicted"]) for r in rows] == [
        (company, name, float(gold), None if predicted is None else float(predicted))
        for company, by_dimension in HAND_MADE.items() for name, (gold, predicted) in by_dimension.items()]
    assert rows[0]["think"] == "营业收入增长20%，因此竞争优势明显。" and rows[0]["reason"] == "专利多。"
    assert set(rows[0]["quality"]) == {"logical_coherence", "terminology", "argument_sufficiency", "specificity",
                                       "overall"}
    for name, entry in [*report["dimensions"].items(), ("overall", report["overall"])]:
        assert [entry[field] for field in FIELDS] == pytest.approx(BY_HAND[name], rel=1e-12), name
    assert report["parse_failures"] == [{"company": "乙公司", "dimension": "innovation", "gold": 8.0,
                                         "answer": "我不知道。"}]
    # consistency: correlation across dimensions over the companies with both scores (pairwise complete)
    predicted = report["consistency"]["predicted"]
    # 甲 丙 丁: competitiveness 6 5 7 (deviations 0 -1 1), innovation 5 1 8 (mean 14/3: 1/3 -11/3 10/3)
    assert predicted["pearson"]["matrix"][0][1] == pytest.approx(7 / math.sqrt(2 * 222 / 9))
    assert predicted["per_dimension"]["innovation"]["variance"] == pytest.approx(111 / 9)  # (222/9) / (3 - 1)
    gold = report["consistency"]["gold"]
    # gold 7 2 5 9 vs 5 8 3 6: deviations 1.25 -3.75 -0.75 3.25 and -0.5 2.5 -2.5 0.5
    assert gold["pearson"]["matrix"][0][1] == pytest.approx(-6.5 / math.sqrt(26.75 * 13))
    assert gold["per_dimension"]["competitiveness"]["histogram"]["7"] == 1
    quality = report["reasoning_quality"]["competitiveness"]["predicted"]
    assert quality["overall"] == pytest.approx(np.mean([r["quality"]["overall"] for r in rows[::2]]))
    for name in REPORT_FILES:
        assert (folder / name).is_file(), name
    text = (folder / "scoring_results.md").read_text("utf-8")
    assert "| 产品竞争力 | 4 | 4 |" in text and "## Unreadable answers (1)" in text and "乙公司 / 产品创新性" in text


def test_undefined_correlations_and_custom_bins(tmp_path):
    items = [_item("甲公司", ("competitiveness",)), _item("乙公司", ("competitiveness",))]
    records = score_answers(items, [format_answer("", 4, ""), format_answer("", 4, "")], SPEC, multi=False)
    report = build_report(records, SPEC, bins=[5])
    entry = report["overall"]
    assert entry["pearson"] is None and entry["pearson_reason"] == "undefined: every predicted score is 4"
    assert list(entry["bins"]) == ["[0, 5)", "[5, 9]"] and entry["binned_accuracy"] == 0.5  # gold 7 and 2


def test_multi_answers_fail_only_the_missing_or_out_of_range_dimension():
    labels = {**LABELS, "diversity": "产品多样性"}
    spec = DatasetSpec(name="multi", path="unused", data_files=(), file_name="unused", file_type="json",
                       registry_path="unused", formatting="scoring",
                       dimensions=tuple(labels.items()), score_range=(0.0, 9.0))
    dims = ("competitiveness", "innovation", "diversity")
    gold = {name: {"score": 5, "think": "", "reason": "好。"} for name in dims}
    items = [ScoringTestItem("甲公司", dims, "p", gold), ScoringTestItem("乙公司", dims, "p", gold)]
    missing = format_multi_answer([("产品竞争力", "想。", 5, "好。"), ("产品多样性", "想。", 4, "好。")])
    out_of_range = format_multi_answer([("产品竞争力", "想。", 12, "好。"), ("产品创新性", "想。", 5, "好。"),
                                        ("产品多样性", "想。", 5, "好。")])
    records = score_answers(items, [missing, out_of_range], spec, multi=True)
    assert [(r.company, r.dimension, r.predicted) for r in records] == [
        ("甲公司", "competitiveness", 5.0), ("甲公司", "innovation", None), ("甲公司", "diversity", 4.0),
        ("乙公司", "competitiveness", None), ("乙公司", "innovation", 5.0), ("乙公司", "diversity", 5.0)]
    report = build_report(records, spec)
    assert {name: entry["parse_failures"] for name, entry in report["dimensions"].items()} == {
        "competitiveness": 1, "innovation": 1, "diversity": 0}
    assert report["overall"]["parse_failures"] == 2 and report["overall"]["num_samples"] == 6


def test_charts_draw_chinese_with_the_bundled_cjk_font(tmp_path):
    from matplotlib import font_manager

    from llmtuner.eval.plots import bundled_cjk_font_file, cjk_font_properties
    from llmtuner.eval.scoring_charts import plot_scatter

    font_file = bundled_cjk_font_file()
    assert font_file is not None and font_file.is_file(), "the CJK font package (mplfonts) is not installed"
    assert Path(font_manager.findfont(cjk_font_properties(), fallback_to_default=False)) == font_file
    items, answers = _single_answers()
    records = score_answers(items, answers, SPEC, multi=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plot_scatter(records, LABELS, 0, 9, tmp_path / "scatter.png")
    assert not [str(w.message) for w in caught if "missing from" in str(w.message) or "Glyph" in str(w.message)]
    assert (tmp_path / "scatter.png").stat().st_size > 10_000


def test_compare_puts_reports_side_by_side(tmp_path, monkeypatch):
    from llmtuner.eval import scoring_charts

    drawn: dict[str, dict[str, list[float]]] = {}  # chart file -> run -> bar heights, read from the drawn figure
    save_figure = scoring_charts.save_figure

    def recording_save(figure, path, **kwargs):
        if Path(path).name.startswith("compare_"):
            [axis] = figure.axes
            drawn[Path(path).name] = {bars.get_label(): [bar.get_height() for bar in bars]
                                      for bars in axis.containers}
        return save_figure(figure, path, **kwargs)

    monkeypatch.setattr(scoring_charts, "save_figure", recording_save)
    report, first = _hand_made_report(tmp_path / "a")
    second = tmp_path / "b" / "report"
    second.mkdir(parents=True)
    changed = json.loads((first / RESULTS_JSON).read_text("utf-8"))
    changed["overall"]["mae"] = 0.25
    (second / RESULTS_JSON).write_text(json.dumps(changed), encoding="utf-8")
    out = tmp_path / "compare"
    assert main(["test", "--compare", str(first), str(second), f"save_dir={out}"]) == 0
    result = json.loads((out / "scoring_compare.json").read_text("utf-8"))
    assert list(result["runs"]) == ["a/report", "b/report"]
    assert result["metrics"]["mae"]["a/report"]["overall"] == pytest.approx(report["overall"]["mae"])
    assert result["metrics"]["mae"]["b/report"]["overall"] == 0.25
    assert result["metrics"]["rmse"]["b/report"]["competitiveness"] == pytest.approx(
        report["dimensions"]["competitiveness"]["rmse"])
    # each chart: per run one bar per group (competitiveness, innovation, overall), the hand-computed values
    for index, metric in enumerate(FIELDS[2:], start=2):
        expected = [BY_HAND[group][index] for group in ("competitiveness", "innovation", "overall")]
        changed_run = [*expected[:2], 0.25] if metric == "mae" else expected
        assert drawn[f"compare_{metric}.png"] == {"a/report": pytest.approx(expected, rel=1e-9),
                                                  "b/report": pytest.approx(changed_run, rel=1e-9)}, metric
        assert (out / f"compare_{metric}.png").stat().st_size > 5_000
    assert "| MAE | overall |" in (out / "scoring_compare.md").read_text("utf-8")
    with pytest.raises(ConfigError, match="two or more result folders"):
        compare_results([str(first)], str(tmp_path / "c"))
    with pytest.raises(ConfigError, match="already holds files"):
        compare_results([str(first), str(second)], str(out))


def _registry(tmp_path: Path, rows: list[dict]) -> Path:
    folder = tmp_path / "data"
    (folder / "scores").mkdir(parents=True)
    (folder / "scores" / "competitiveness.json").write_text(json.dumps(rows, ensure_ascii=False), "utf-8")
    info = {"scores": {"file_name": "scores", "formatting": "scoring", "dimensions": {"competitiveness": "产品竞争力"}},
            "plain": {"file_name": "plain.json"}}
    (folder / "plain.json").write_text(json.dumps([{"instruction": "a", "output": "b"}]), "utf-8")
    (folder / "dataset_info.json").write_text(json.dumps(info, ensure_ascii=False), "utf-8")
    return folder


@pytest.mark.parametrize("case, message", [
    ("not_scoring", "test_dataset=plain is registered with formatting 'alpaca', not a scoring dataset"),
    ("no_scores", "has no score field, so there is nothing to compare answers with"),
    ("bad_score", "row 2 has score not a number in [0, 9]"),
    ("save_dir", "already holds files (scoring_results.json)"),
])
def test_bad_input_is_one_clear_error(case, message, tmp_path, tiny_qwen2_dir, capsys):
    row = {"prompt": "评估。", "company_info": "甲公司，做家具。", "think": "想。", "score": 5, "reason": "好。"}
    rows = {"no_scores": [{k: v for k, v in row.items() if k != "score"}],
            "bad_score": [row, {**row, "score": "高"}]}.get(case, [row])
    folder = _registry(tmp_path, rows)
    save_dir = tmp_path / "out"
    if case == "save_dir":
        save_dir.mkdir()
        (save_dir / RESULTS_JSON).write_text("{}", "utf-8")
    code = main(["test", f"model_name_or_path={tiny_qwen2_dir}", "template=qwen", f"dataset_dir={folder}",
                 f"test_dataset={'plain' if case == 'not_scoring' else 'scores'}", f"save_dir={save_dir}"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "hint:" in err and "Traceback" not in err
    assert not (save_dir / "scoring_predictions.jsonl").exists()


def test_report_dir_check_and_overwrite(tmp_path):
    with pytest.raises(ConfigError, match="needs save_dir"):
        check_report_dir(None, False)
    (tmp_path / RESULTS_JSON).write_text("{}", "utf-8")
    with pytest.raises(ConfigError, match="already holds files"):
        check_report_dir(str(tmp_path), False)
    assert check_report_dir(str(tmp_path), True) == tmp_path
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("x", "utf-8")  # files that are not results do not block a report
    assert check_report_dir(str(other), False) == other
