"""The web UI in a real browser (headless Chromium driven by Selenium): train the tiny model a few steps from the
Train tab, check the loss chart draws the logged steps and the run finishes, chat with the result in the Chat tab
(streamed); then the refusals each show one message, and SIGTERM to the UI stops the training it started.

Screenshots of every tab are written under the test's tmp folder (the path is printed)."""

from __future__ import annotations

import os
import shutil
import signal

import psutil
import pytest

from llmtuner.webui.config import FIELD_GROUPS
from llmtuner.webui.runs import read_loss

from ..shared_files import missing, require_package
from .driver import (Page, chat_once, fill_train_form, find_browser, plotted_points, run_training, start_browser,
                     start_ui, stop_ui)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def browser():
    require_package("gradio", "the web UI's packages (pip install -e \".[webui]\")")
    path, driver_path, reason = find_browser()
    if path is None:
        missing(reason, f"CI must run the browser test: {reason}")
    driver = start_browser(path, driver_path)
    yield driver
    driver.quit()


def shown_errors(page: Page) -> list[str]:
    """The error messages the Train tab shows now (one place per form group)."""
    texts = [page.text(f"train_error_{group}") for group in FIELD_GROUPS]
    return [text for text in texts if text.startswith("error:")]


def one_error(page: Page, words: str) -> bool:
    """Exactly one error is shown, it contains ``words``, and no traceback is anywhere in the page."""
    errors = shown_errors(page)
    body = page.driver.find_element("css selector", "body").text
    return len(errors) == 1 and words in errors[0] and "Traceback" not in body


def test_train_then_chat_in_the_browser(browser, tiny_qwen2_dir, repo_root, tmp_path):
    shots = tmp_path / "screenshots"
    output_dir = tmp_path / "run"
    log_file = tmp_path / "webui.log"
    process, url = start_ui(repo_root, tmp_path / "webui_runs", log_file)
    page = Page(browser)
    trainings: list[psutil.Process] = []
    try:
        page.open(url)
        page.click("train_stop")  # nothing runs yet: one line says so
        page.wait(lambda: page.text("train_stop_message") == "No run selected: nothing to stop.",
                  what="the nothing-to-stop message")
        fill_train_form(page, tiny_qwen2_dir, str(output_dir))
        assert page.value("train_template") == "auto"  # suggested: the tiny model's tokenizer has a chat template
        page.wait(lambda: "✔" in page.text("train_error_output"), what="the form to pass the CLI's checks")
        page.fill("train_max_samples", -1)  # the CLI's error appears next to the data fields, then goes away
        page.wait(lambda: "max_samples" in page.text("train_error_data") and one_error(page, "max_samples"),
                  what=f"one max_samples error: {shown_errors(page)}")
        page.fill("train_max_samples", 16)
        page.wait(lambda: not page.text("train_error_data") and "✔" in page.text("train_error_output"),
                  what="the error to clear")
        page.click("train_doctor")  # the doctor on the same form's config, before the run (docs/doctor.md)
        page.wait(lambda: "0 fail" in page.text("train_doctor_summary"), 300, "the doctor's table with no failure")
        assert not output_dir.exists() and (tmp_path / "run-doctor" / "doctor.json").is_file()
        status = run_training(page)
        page.show("train_loss_plot", "center")
        page.screenshot(shots / "train.png")
        log = (tmp_path / "webui_runs").glob("*/console.log")
        assert status == "finished", "\n".join(path.read_text()[-3000:] for path in log)
        assert (output_dir / "adapter_model.safetensors").is_file() and (output_dir / "trainer_log.jsonl").is_file()
        # the chart draws exactly the steps the run logged (the last refresh may come a second after the end)
        logged = sorted((row["kind"], row["step"], row["loss"]) for row in read_loss(output_dir))
        assert [step for kind, step, _ in logged if kind == "train"] == [1, 2, 3, 4, 5], logged

        def drawn() -> list[tuple[str, int, float]]:
            return sorted((point["kind"], point["step"], point["loss"]) for point in plotted_points(page))

        page.wait(lambda: [point[:2] for point in drawn()] == [row[:2] for row in logged],
                  what=f"the logged steps {logged} in the chart, not {drawn()}")
        assert [point[2] for point in drawn()] == pytest.approx([row[2] for row in logged], rel=1e-3)
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

        # the same folder again: the CLI's refusal of a folder that holds a run, as one message
        page.click("train_start")
        page.wait(lambda: one_error(page, "overwrite_output_dir"), what=f"one refusal: {shown_errors(page)}")
        # a long run into a new folder; once it trains, a second start into that folder is refused too
        long_dir = tmp_path / "long_run"
        page.fill("train_output_dir", str(long_dir))
        page.fill("train_max_steps", 2000)
        page.wait(lambda: "✔" in page.text("train_error_output"), what="the long run's form to pass")
        page.click("train_start")
        page.wait(lambda: read_loss(long_dir), 300, "the long run's first logged step")
        page.driver.find_element("css selector", "#train_overwrite input").click()  # past the folder check, to the rule that one folder has one run at a time
        page.click("train_start")
        page.wait(lambda: one_error(page, "still training"), what=f"the still-training refusal: {shown_errors(page)}")
        trainings = psutil.Process(process.pid).children()
        assert len(trainings) == 1, trainings

        # SIGTERM to the UI's process group (a service manager, a closed terminal): the UI asks the run for a
        # graceful stop, waits for it to save a checkpoint, says so and exits
        os.killpg(process.pid, signal.SIGTERM)
        assert process.wait(300) == 0, log_file.read_text()[-3000:]
        assert not trainings[0].is_running(), "the training outlived the UI"
        console = next(path for path in (tmp_path / "webui_runs").glob("*/console.log")
                       if "long_run" in (path.parent / "train.yaml").read_text())
        assert "SIGINT received: finishing this step, saving a checkpoint" in console.read_text()
        assert "again: stopping at once" not in console.read_text()  # one stop signal: no stop without saving
        assert sorted(long_dir.glob("checkpoint-*")), console.read_text()[-3000:]
        assert ": stopped, last checkpoint " in log_file.read_text(), log_file.read_text()[-3000:]
    finally:
        stop_ui(process)
        for training in trainings:  # a failed check must not leave a training running
            if training.is_running():
                training.kill()
        print(f"\nweb UI screenshots: {shots}")
    assert sorted(path.name for path in shots.glob("*.png")) == ["chat.png", "evaluate.png", "export.png", "train.png"]
    shutil.rmtree(long_dir, ignore_errors=True)
    shutil.rmtree(output_dir, ignore_errors=True)
