"""``llmtuner doctor``: the command's arguments, errors, report files and exit codes; train's first-run tip."""

from __future__ import annotations

import json

import pytest

from llmtuner import cli
from llmtuner.train.doctor import runner
from llmtuner.train.doctor.report import Check, format_table

from ..test_cli import run_main_and_list_heavy_imports
from .conftest import REPO_ROOT

CONFIG = str(REPO_ROOT / "configs" / "sft_lora_tiny.yaml")


def test_bad_input_gives_trains_error_before_anything_loads_and_writes_nothing(tmp_path):
    out = tmp_path / "report"
    result = run_main_and_list_heavy_imports(["doctor", CONFIG, "lora_rnk=4", "--out", str(out)])
    assert result.stdout.strip() == "heavy: [] exit: 2"
    assert result.stderr.splitlines() == [
        "error: Unknown argument: lora_rnk (did you mean lora_rank or local_rank?) (set on the command line).",
        "hint: Fix the spelling or remove it. Valid names are the fields of ModelArguments, DataArguments, "
        "Seq2SeqTrainingArguments, FinetuningArguments, GeneratingArguments (listed with `python "
        "scripts/flag_reference.py`)."]
    assert not out.exists()


@pytest.mark.parametrize(("argv", "code", "error"), [
    (["doctor"], 2, None), (["doctor", "--help"], 0, None),
    (["doctor", CONFIG, "--rows", "0"], 2, "error: --rows 0 is not a positive number of rows."),
    (["doctor", CONFIG, "--out"], 2, "error: --out needs a value."),
    (["doctor", CONFIG, "stage=eval"], 2, "error: stage: eval evaluates a model; the doctor checks a training config."),
])
def test_usage_and_option_errors(argv, code, error, capsys):
    assert cli.main(argv) == code
    captured = capsys.readouterr()
    if error is None:
        assert captured.out.startswith("usage: llmtuner doctor <config.yaml>")
    else:
        assert captured.err.splitlines()[0] == error and captured.out == ""


def test_a_report_folder_holding_a_users_file_is_refused(tiny_qwen2_dir, tmp_path, capsys):
    (tmp_path / "doctor.md").write_text("my notes\n", encoding="utf-8")
    assert cli.main(["doctor", CONFIG, f"model_name_or_path={tiny_qwen2_dir}", "--out", str(tmp_path)]) == 2
    assert "is not a report of `llmtuner doctor`" in capsys.readouterr().err
    assert (tmp_path / "doctor.md").read_text(encoding="utf-8") == "my notes\n"


def test_the_report_is_written_and_a_failed_check_exits_1(tiny_qwen2_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(runner, "CHECK_MODULES", runner.ROW_CHECK_MODULES)  # no model: the row checks only
    prepared = []
    monkeypatch.setattr(cli, "prepare_process", lambda **kwargs: prepared.append(kwargs))
    out = tmp_path / "report"
    argv = ["doctor", CONFIG, f"model_name_or_path={tiny_qwen2_dir}", f"dataset_dir={REPO_ROOT / 'data'}",
            f"output_dir={tmp_path / 'run'}", "--out", str(out), "--rows", "4"]
    assert cli.main(argv) == 0 and prepared == [{"uses_deepspeed": False, "use_cpu": True}]
    printed = capsys.readouterr().out
    assert "[1/4] template ..." in printed and "8 pass, 0 warn, 0 fail, 0 skip" in printed
    assert f"report: {out / 'doctor.json'}, {out / 'doctor.md'}" in printed

    # run again into the same folder (its own report is replaced) with a cutoff that cuts every answer
    assert cli.main([*argv, "cutoff_len=24"]) == 1
    report = json.loads((out / "doctor.json").read_text(encoding="utf-8"))
    assert report["llmtuner_doctor"]["exit_code"] == 1
    failed = [(check["name"], check["title"], check["value"]) for check in report["checks"]
              if check["status"] == "fail"]
    assert failed == [("masks", "answers cut by cutoff_len", "4/4")]
    warned = [(check["name"], check["value"]) for check in report["checks"] if check["status"] == "warn"]
    assert warned == [("special_tokens", "0/0")]  # no whole answer is left to train <|im_end|>
    markdown = (out / "doctor.md").read_text(encoding="utf-8")
    assert "| fail | masks: answers cut by cutoff_len | 4/4 |" in markdown
    assert "## masks: first_example" in markdown and "[MASKED: <|im_start|>system" in markdown
    assert not (tmp_path / "run").exists()  # the doctor leaves the run's output_dir to the training


def test_the_default_report_folder_is_beside_output_dir():
    assert runner.default_out_dir("saves/x/lora/sft") == "saves/x/lora/sft-doctor"


def test_a_crashing_check_is_a_fail_and_the_others_still_run(doctor_context, monkeypatch):
    from llmtuner.extras.errors import DatasetError
    from llmtuner.train.doctor import masks_check, special_tokens_check

    def unreadable(ctx):
        raise DatasetError("Cannot decode rows.json.", "Set its encoding.")

    monkeypatch.setattr(masks_check, "run", lambda ctx: 1 / 0)
    monkeypatch.setattr(special_tokens_check, "run", unreadable)
    modules = ("masks_check", "special_tokens_check", "data_mix_check")
    checks = runner.run_checks(doctor_context(rows=2), modules, progress=lambda _: None)
    assert [(check.name, check.status) for check in checks] == [
        ("masks", "fail"), ("special_tokens", "fail"), ("data_mix", "pass")]
    assert checks[0].message == "ZeroDivisionError: division by zero" and "traceback" in checks[0].details
    assert (checks[1].message, checks[1].fix) == ("Cannot decode rows.json.", "Set its encoding.")


def test_the_table_shows_the_fix_under_a_failed_check():
    table = format_table([Check("masks", "answers cut", "fail", "3/4", "most answers cut", "Set cutoff_len: 900."),
                          Check("template", "ids equal", "pass", "4/4", "equal")])
    lines = table.splitlines()
    assert lines[0].split() == ["status", "check", "value", "message"]
    assert lines[1].startswith("FAIL") and lines[2].strip() == "fix: Set cutoff_len: 900."
    assert lines[-1] == "1 pass, 0 warn, 1 fail, 0 skip"


def test_train_suggests_the_doctor_on_a_first_run_only(tmp_path):
    run = tmp_path / "run"
    assert "llmtuner doctor" in runner.first_run_hint({"output_dir": str(run)})
    (tmp_path / "run-doctor").mkdir()
    (tmp_path / "run-doctor" / "doctor.json").write_text("{}", encoding="utf-8")
    assert runner.first_run_hint({"output_dir": str(run)}) is None  # the doctor ran on it
    run.mkdir()
    assert runner.first_run_hint({"output_dir": str(tmp_path / "other")}) is not None
    assert runner.first_run_hint({"output_dir": str(run)}) is None  # not a first run


def test_train_prints_the_tip_once_its_config_passed(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "prepare_training_process", lambda raw: None)
    cli._prepare_first_run({"output_dir": str(tmp_path / "run")})  # what run_exp calls after the config's checks
    assert capsys.readouterr().err.startswith("tip: First run into this output_dir: `llmtuner doctor")
    cli._prepare_first_run({"output_dir": str(tmp_path)})
    assert capsys.readouterr().err == ""
