"""Benchmark readers on the real files in ../shared/benchmarks, and their refusals."""

from __future__ import annotations

import csv
import json
import shutil

import pytest

from llmtuner.eval.benchmarks import load_benchmark, load_mapping, sample_questions, subjects_per_task
from llmtuner.extras.errors import ConfigError, DatasetError


@pytest.mark.parametrize("task", ["mmlu", "ceval", "cmmlu"])
def test_our_mappings_cover_every_subject_with_the_published_category(task, benchmarks_dir):
    shared = json.loads((benchmarks_dir / task / "mapping.json").read_text(encoding="utf-8"))
    ours = load_mapping(task)
    assert set(ours) == set(shared)
    assert {s: v["category"] for s, v in ours.items()} == {s: v["category"] for s, v in shared.items()}
    assert {v["category"] for v in ours.values()} == {"STEM", "Humanities", "Social Sciences", "Other"}


@pytest.mark.parametrize("task, split, subjects, questions", [
    ("mmlu", "test", 57, 14042), ("ceval", "val", 52, 1346), ("cmmlu", "test", 67, 11582), ("gsm8k", "test", 1, 1319),
])
def test_whole_splits_have_the_published_counts(task, split, subjects, questions, benchmarks_dir):
    benchmark = load_benchmark(task, str(benchmarks_dir), split, n_shot=5)
    assert (benchmark.split, len(benchmark.subjects), benchmark.num_questions) == (split, subjects, questions)
    assert all(len(subject.shots) == 5 for subject in benchmark.subjects)


def test_mmlu_rows_read_exactly_and_shots_are_the_first_dev_rows(benchmarks_dir):
    benchmark = load_benchmark("mmlu", str(benchmarks_dir / "mmlu"), subjects=["abstract_algebra", "anatomy"],
                               n_shot=2)
    assert [s.name for s in benchmark.subjects] == ["abstract_algebra", "anatomy"]
    algebra, anatomy = benchmark.subjects
    first = algebra.questions[0]
    assert first.id == "abstract_algebra/0" and first.answer == "B"
    assert first.question == "Find the degree for the given field extension Q(sqrt(2), sqrt(3), sqrt(18)) over Q."
    assert first.options == {"A": "0", "B": "4", "C": "2", "D": "6"}
    assert (algebra.display_name, algebra.category, len(algebra.questions)) == ("abstract algebra", "STEM", 100)
    assert (anatomy.category, len(anatomy.questions)) == ("Other", 135)
    assert [shot.question for shot in anatomy.shots] == [
        "What is the embryological origin of the hyoid bone?",
        "Which of these branches of the trigeminal nerve contain somatic motor processes?",
    ]
    assert [shot.answer for shot in anatomy.shots] == ["D", "D"]


def test_ceval_and_cmmlu_read_their_headers(benchmarks_dir):
    ceval = load_benchmark("ceval", str(benchmarks_dir), subjects=["law"], n_shot=1).subjects[0]
    with open(benchmarks_dir / "ceval" / "val" / "law_val.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(ceval.questions) == len(rows) == 24
    assert [(q.question, q.answer, q.options["C"]) for q in ceval.questions] == [
        (r["question"].strip(), r["answer"], r["C"].strip()) for r in rows]
    assert (ceval.display_name, ceval.category) == ("法学", "Humanities")
    cmmlu = load_benchmark("cmmlu", str(benchmarks_dir), subjects=["arts"], n_shot=0).subjects[0]
    assert len(cmmlu.questions) == 160 and cmmlu.shots == [] and cmmlu.display_name == "艺术学"


def test_gsm8k_gold_numbers_and_clean_exemplars(benchmarks_dir):
    benchmark = load_benchmark("gsm8k", str(benchmarks_dir / "gsm8k"), n_shot=2)
    subject = benchmark.subjects[0]
    assert subject.questions[0].answer == "18" and subject.questions[0].id == "gsm8k/0"
    first_shot = subject.shots[0]
    assert first_shot.solution.endswith("#### 72") and "<<" not in first_shot.solution
    assert first_shot.question.startswith("Natalia sold clips to 48 of her friends in April")


def test_max_samples_is_a_seeded_per_subject_sample_in_file_order(benchmarks_dir):
    def ids(subjects, seed=42):
        benchmark = load_benchmark("mmlu", str(benchmarks_dir), subjects=subjects, n_shot=0, max_samples=5, seed=seed)
        return {s.name: [q.id for q in s.questions] for s in benchmark.subjects}

    alone = ids(["anatomy"])["anatomy"]
    assert len(alone) == 5 and alone == sorted(alone, key=lambda qid: int(qid.split("/")[1]))
    assert ids(["astronomy", "anatomy"])["anatomy"] == alone  # other subjects do not shift the sample
    assert ids(["anatomy"], seed=7)["anatomy"] != alone
    questions = load_benchmark("mmlu", str(benchmarks_dir), subjects=["anatomy"], n_shot=0).subjects[0].questions
    assert sample_questions(questions, None, 42, "anatomy") == questions


def _ceval_copy(benchmarks_dir, tmp_path, test_rows):
    folder = tmp_path / "ceval"
    (folder / "dev").mkdir(parents=True)
    (folder / "test").mkdir()
    shutil.copy(benchmarks_dir / "ceval" / "dev" / "law_dev.csv", folder / "dev")
    (folder / "test" / "law_test.csv").write_text(test_rows, encoding="utf-8")
    return folder


def test_a_split_without_answers_is_refused(benchmarks_dir, tmp_path):
    folder = _ceval_copy(benchmarks_dir, tmp_path, "id,question,A,B,C,D\n0,问题,甲,乙,丙,丁\n")
    with pytest.raises(DatasetError, match="no answer column.*C-Eval withholds its test answers") as info:
        load_benchmark("ceval", str(folder), "test")
    assert "split: val" in info.value.hint
    (folder / "test" / "law_test.csv").write_text("id,question,A,B,C,D,answer\n0,问题,甲,乙,丙,丁,\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"law_test.csv, data row 1: answer '' .*no answers"):
        load_benchmark("ceval", str(folder), "test")


def test_input_mistakes_name_the_value_and_the_fix(benchmarks_dir, tmp_path):
    with pytest.raises(ConfigError, match="'anatomyy' is not a mmlu subject") as info:
        load_benchmark("mmlu", str(benchmarks_dir), subjects=["anatomyy"])
    assert "anatomy" in info.value.hint
    with pytest.raises(ConfigError, match="n_shot=6, but .*anatomy_dev.csv holds only 5"):
        load_benchmark("mmlu", str(benchmarks_dir), subjects=["anatomy"], n_shot=6)
    with pytest.raises(DatasetError, match="holds no cmmlu files"):
        load_benchmark("cmmlu", str(tmp_path))
    with pytest.raises(DatasetError, match="there is no val split .*found: dev, test"):
        load_benchmark("cmmlu", str(benchmarks_dir), "val")
    with pytest.raises(DatasetError, match="not ceval subjects"):  # a CMMLU folder passed as C-Eval
        shutil.copytree(benchmarks_dir / "cmmlu" / "dev", tmp_path / "fake" / "dev")
        shutil.copytree(benchmarks_dir / "cmmlu" / "dev", tmp_path / "fake" / "val")
        for path in (tmp_path / "fake" / "val").glob("*.csv"):
            path.rename(path.with_name(path.stem + "_val.csv"))
        load_benchmark("ceval", str(tmp_path / "fake"), n_shot=0)
    with pytest.raises(ConfigError, match="task_dir is not set"):
        load_benchmark("mmlu", None)


def test_subjects_are_shared_out_between_tasks():
    assert subjects_per_task(["mmlu", "ceval", "gsm8k"], ["anatomy", "law"]) == {
        "mmlu": ["anatomy"], "ceval": ["law"], "gsm8k": None}
    assert subjects_per_task(["mmlu"], ["anything"]) == {"mmlu": ["anything"]}  # one task: its reader checks
    with pytest.raises(ConfigError, match="belong to none of the tasks"):
        subjects_per_task(["mmlu", "ceval"], ["anatomy", "law", "lawyer"])
    with pytest.raises(ConfigError, match="names no ceval subject"):
        subjects_per_task(["mmlu", "ceval"], ["anatomy"])


@pytest.mark.parametrize("task", ["mmlu", "ceval", "cmmlu", "gsm8k"])
def test_a_task_dir_without_the_layout_names_the_layout_and_where_the_files_come_from(task, tmp_path):
    from llmtuner.eval.benchmarks import _layout_text, resolve_task_dir

    for task_dir in (tmp_path / "missing", tmp_path):  # not a folder; a folder without the files
        with pytest.raises((ConfigError, DatasetError)) as caught:
            resolve_task_dir(task, str(task_dir))
        assert _layout_text(task) in caught.value.message + caught.value.hint
        assert "docs/evaluation.md" in caught.value.hint
