"""Write the screenshots of docs/webui.md (docs/images/webui_<tab>.png, 1280x900) by driving the UI in headless
Chromium with the same steps as the browser test (tests/webui/driver.py).

    python scripts/webui_screenshots.py [--task-dir ../shared/benchmarks] [--out docs/images]

Builds the tiny model in a temporary folder, trains it a few steps from the Train tab, runs a forgetting report,
exports the adapter and chats with it. Needs chromium + chromium-driver (scripts/ci_install_browser.sh) and selenium.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the shared browser steps live with the test: tests/webui/driver.py

from tests.webui.driver import (Page, chat_once, export_merged, fill_train_form, find_browser,  # noqa: E402
                                forgetting_report, run_training, start_browser, start_ui, stop_ui)


def shrink(path: Path) -> None:
    """Re-save with a palette: UI screenshots have few colours, so the PNG gets several times smaller."""
    from PIL import Image

    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task-dir", default=str(REPO.parent / "shared" / "benchmarks"))
    parser.add_argument("--out", default=str(REPO / "docs" / "images"))
    args = parser.parse_args()
    browser, driver_path, reason = find_browser()
    if browser is None:
        print(f"error: {reason}", file=sys.stderr)
        return 2
    from llmtuner.model.tiny import make_tiny_model

    out = Path(args.out)
    work = Path(tempfile.mkdtemp(prefix="webui-shots-"))
    model = make_tiny_model("qwen2", str(work / "tiny-qwen2"))
    adapter = work / "saves" / "tiny-qwen2-lora"
    process, url = start_ui(REPO, work / "runs", work / "webui.log")
    driver = start_browser(browser, driver_path)
    page = Page(driver)
    shots = []
    try:
        page.open(url)
        fill_train_form(page, model, str(adapter))
        page.click("train_preview")
        page.driver.find_element("xpath", "//button[contains(., 'Preview data')]").click()
        page.wait(lambda: "[MASKED:" in page.value("train_first_example"), 120, "the first example")
        page.show("train_dataset", "start")
        shots.append(page.screenshot(out / "webui_train.png"))
        run_training(page)
        page.show("train_yaml")
        shots.append(page.screenshot(out / "webui_train_run.png"))

        page.tab("Evaluate")
        forgetting_report(page, model, str(adapter), args.task_dir, str(work / "forgetting"))
        page.show("eval_message", "start")  # the headline, the results table and the charts
        shots.append(page.screenshot(out / "webui_evaluate.png"))

        page.tab("Chat")
        chat_once(page, model, str(adapter), max_new_tokens=48)  # a short reply: the whole exchange fits
        page.show("chat_status", "start")
        shots.append(page.screenshot(out / "webui_chat.png"))

        page.tab("Export")
        export_merged(page, model, str(adapter), str(work / "export"))
        page.show("tab_export", "start")
        shots.append(page.screenshot(out / "webui_export.png"))

        page.radio("lang", "中文")
        page.tab("训练")
        page.driver.execute_script("window.scrollTo(0, 0)")
        shots.append(page.screenshot(out / "webui_train_zh.png"))
    finally:
        driver.quit()
        stop_ui(process)
    for path in shots:
        shrink(path)
        print(f"wrote {path} ({path.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
