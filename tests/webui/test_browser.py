"""The web UI in a real browser (headless Chromium driven by Selenium): train the tiny model a few steps from the
Train tab, watch the loss chart and the run finish, then chat with the result in the Chat tab (streamed).

Screenshots of every tab are written under the test's tmp folder (the path is printed)."""

from __future__ import annotations

import os
import shutil

import pytest

from .driver import Page, chat_once, fill_train_form, find_browser, run_training, start_browser, start_ui, stop_ui

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def browser():
    pytest.importorskip("gradio")
    path, driver_path, reason = find_browser()
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the browser test: {reason}")
        pytest.skip(reason)
    driver = start_browser(path, driver_path)
    yield driver
    driver.quit()


def test_train_then_chat_in_the_browser(browser, tiny_qwen2_dir, repo_root, tmp_path):
    shots = tmp_path / "screenshots"
    output_dir = tmp_path / "run"
    process, url = start_ui(repo_root, tmp_path / "webui_runs", tmp_path / "webui.log")
    page = Page(browser)
    try:
        page.open(url)
        fill_train_form(page, tiny_qwen2_dir, str(output_dir))
        assert page.value("train_template") == "auto"  # suggested: the tiny model's tokenizer has a chat template
        page.wait(lambda: "✔" in page.text("train_error_output"), what="the form to pass the CLI's checks")
        page.fill("train_max_samples", -1)  # the CLI's error appears next to the data fields, then goes away
        page.wait(lambda: "max_samples" in page.text("train_error_data"), what="the max_samples error")
        page.fill("train_max_samples", 16)
        page.wait(lambda: not page.text("train_error_data") and "✔" in page.text("train_error_output"),
                  what="the error to clear")
        status = run_training(page)
        page.show("train_loss_plot", "center")
        page.screenshot(shots / "train.png")
        log = (tmp_path / "webui_runs").glob("*/console.log")
        assert status == "finished", "\n".join(path.read_text()[-3000:] for path in log)
        assert (output_dir / "adapter_model.safetensors").is_file() and (output_dir / "trainer_log.jsonl").is_file()
        assert "current_steps" in (output_dir / "trainer_log.jsonl").read_text()
        # the YAML the UI ran is shown and is a config `llmtuner train` accepts as it is
        assert "max_steps: 5" in page.text("train_yaml") and "train.yaml" in page.value("train_command")

        page.tab("Evaluate")
        page.screenshot(shots / "evaluate.png")
        page.tab("Export")
        page.screenshot(shots / "export.png")

        page.tab("Chat")
        seen = [text for text in chat_once(page, tiny_qwen2_dir, str(output_dir)) if text.strip()]
        page.screenshot(shots / "chat.png")
        assert len(set(seen)) >= 2, f"the reply did not stream: {seen}"
        assert all(later.startswith(earlier.rstrip()) for earlier, later in zip(seen, seen[1:])), seen

        page.radio("lang", "中文")  # every label follows the language switch

        def tab_names() -> list[str]:
            return [element.text for element in page.driver.find_elements("css selector", "button[role=tab]")]

        page.wait(lambda: tab_names() == ["训练", "评测", "对话", "导出"], what=f"the Chinese tab names: {tab_names()}")
        page.tab("训练")
        page.wait(lambda: page.text("train_start") == "开始", what="the Chinese button labels")
    finally:
        stop_ui(process)
        print(f"\nweb UI screenshots: {shots}")
    assert sorted(path.name for path in shots.glob("*.png")) == ["chat.png", "evaluate.png", "export.png", "train.png"]
    shutil.rmtree(output_dir, ignore_errors=True)
