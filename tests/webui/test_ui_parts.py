"""The UI's pieces that need no browser: strings in both languages, the switch, the data preview."""

from __future__ import annotations

import pytest

from llmtuner.webui import config as cfg
from llmtuner.webui.i18n import STRINGS, accepts, text

from ..shared_files import require_package


def test_every_string_has_both_languages():
    for key, (english, chinese) in STRINGS.items():
        assert english.strip() and chinese.strip(), key
    assert text("start", "zh") == "开始" and text("start", "en") == "Start"


def test_language_switch_updates_every_registered_component(repo_root):
    require_package("gradio", "the web UI's packages (pip install -e \".[webui]\")")
    from llmtuner.webui.app import create_app

    demo = create_app(repo_root)
    ui = demo.llmtuner_context.ui
    updates = ui.updates("zh")
    assert len(updates) == len(ui.components) > 50
    for component, update in zip(ui.components, updates):  # Gradio rebuilds each component from these keys
        assert all(accepts(component, key) for key in update if key != "__type__"), (component, update)
    labels = {update.get("label") for update in updates} | {update.get("value") for update in updates}
    assert {"模型文件夹", "开始", "训练", "对话", "导出", "评测"} <= labels


def test_first_example_rendered_with_masks(tiny_qwen2_dir, repo_root, monkeypatch, tmp_path):
    from llmtuner.webui.preview import first_rendered_example, first_rows

    monkeypatch.chdir(repo_root)
    rows = first_rows("data", "sft_demo_zh_en", 2)
    assert len(rows) == 2 and rows[0]["instruction"]
    form = {**cfg.DEFAULT_FORM, "model_name_or_path": tiny_qwen2_dir, "dataset": ["sft_demo_zh_en"],
            "output_dir": str(tmp_path / "out")}
    shown = first_rendered_example(cfg.build_train_config(form))
    # the prompt is masked, the reply (the first row's output) is trained
    assert shown.startswith("[MASKED: <|im_start|>system")
    assert shown.endswith(f"]{rows[0]['output']}<|im_end|>\n")


def test_check_button_shows_the_doctors_table_for_the_tabs_config(tiny_qwen2_dir, repo_root, monkeypatch, tmp_path):
    from llmtuner.train.doctor import runner
    from llmtuner.webui.preview import DOCTOR_HEADERS, doctor_table

    monkeypatch.chdir(repo_root)
    monkeypatch.setattr(runner, "CHECK_MODULES", runner.ROW_CHECK_MODULES)  # no model: the row checks only
    form = {**cfg.DEFAULT_FORM, "model_name_or_path": tiny_qwen2_dir, "dataset": ["sft_demo_zh_en"],
            "max_samples": 4, "output_dir": str(tmp_path / "out")}
    rows, line = doctor_table(cfg.build_train_config(form))
    assert all(len(row) == len(DOCTOR_HEADERS) for row in rows)
    assert [row[:2] for row in rows[:2]] == [["pass", "template: our template renders the ids of the model's own "
                                              "chat template"], ["pass", "masks: share of tokens that are trained"]]
    assert line == f"8 pass, 0 warn, 0 fail, 0 skip. Report: {tmp_path / 'out-doctor' / 'doctor.md'}"
    assert (tmp_path / "out-doctor" / "doctor.json").is_file() and not (tmp_path / "out").exists()
