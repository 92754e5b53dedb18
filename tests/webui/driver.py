"""Drive the web UI in headless Chromium (Selenium): shared by tests/webui/test_browser.py and
scripts/webui_screenshots.py, so the docs' screenshots come from the same steps the test checks.

Elements are found by the ``elem_id`` the UI gives its components (``#train_model textarea`` ...).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Optional

WINDOW = (1280, 900)
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome")
DRIVER_NAMES = ("chromedriver",)


def find_browser() -> tuple[Optional[str], Optional[str], str]:
    """(browser, chromedriver, reason): the paths, or Nones and why they are missing."""
    browser = next((shutil.which(name) for name in BROWSER_NAMES if shutil.which(name)), None)
    driver = next((shutil.which(name) for name in DRIVER_NAMES if shutil.which(name)), None)
    if browser and driver:
        return browser, driver, ""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return None, None, "selenium is not installed (pip install selenium)"
    missing = [name for name, path in (("chromium", browser), ("chromium-driver", driver)) if not path]
    return None, None, (f"{' and '.join(missing)} not installed: run scripts/ci_install_browser.sh "
                        "(apt-get install chromium chromium-driver)")


def start_browser(browser: str, driver_path: str, window: tuple[int, int] = WINDOW) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 f"--window-size={window[0]},{window[1]}", "--lang=en-US"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    # --window-size counts the window's frame: make the page itself (and so each screenshot) exactly `window`.
    frame = driver.execute_script(
        "return [window.outerWidth - window.innerWidth, window.outerHeight - window.innerHeight]")
    driver.set_window_size(window[0] + frame[0], window[1] + frame[1])
    return driver


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_ui(workdir: Path, runs_dir: Path, log_file: Path, port: Optional[int] = None,
             extra_args: tuple[str, ...] = ()) -> tuple[subprocess.Popen, str]:
    """``llmtuner webui`` in a subprocess (the real launcher) in ``workdir``; returns it and its URL once it
    answers. The caller's PYTHONPATH is passed on, so the checkout under test is served."""
    port = port or free_port()
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
    with open(log_file, "wb") as log:
        process = subprocess.Popen(  # its own process group, so a test can signal it as a terminal would
            [sys.executable, "-m", "llmtuner.cli", "webui", "--port", str(port), "--runs-dir", str(runs_dir),
             *extra_args], cwd=workdir, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 180
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the web UI exited with code {process.returncode}: {log_file.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return process, url
        except OSError:
            time.sleep(1)
    process.terminate()
    raise RuntimeError(f"the web UI did not answer within 180 s: {log_file.read_text()[-3000:]}")


def stop_ui(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()


class Page:
    """Small actions on the UI page by element id."""

    def __init__(self, driver: Any, timeout: float = 60) -> None:
        self.driver = driver
        self.timeout = timeout

    def open(self, url: str) -> None:
        self.driver.get(url)
        self.wait(lambda: self.driver.find_elements("css selector", "#train_model textarea, #train_model input"))

    def wait(self, condition: Callable[[], Any], timeout: Optional[float] = None, what: str = "") -> Any:
        deadline = time.time() + (timeout or self.timeout)
        while time.time() < deadline:
            try:
                result = condition()
            except Exception:  # an element replaced while Gradio re-renders: try again
                result = None
            if result:
                return result
            time.sleep(0.3)
        raise TimeoutError(f"timed out waiting for {what or condition}")

    def field(self, elem_id: str) -> Any:
        return self.wait(lambda: self.driver.find_element(
            "css selector", f"#{elem_id} textarea, #{elem_id} input"), what=f"#{elem_id}")

    def fill(self, elem_id: str, value: Any) -> None:
        from selenium.webdriver.common.keys import Keys

        element = self.field(elem_id)
        element.send_keys(Keys.CONTROL, "a")
        element.send_keys(Keys.DELETE)
        element.send_keys(str(value))
        element.send_keys(Keys.TAB)  # blur: Gradio commits the value

    def choose(self, elem_id: str, option: str) -> None:
        """Pick ``option`` in a (multiselect) dropdown by typing it and taking the first match."""
        from selenium.webdriver.common.keys import Keys

        element = self.field(elem_id)
        element.click()
        element.send_keys(option)
        time.sleep(0.5)
        element.send_keys(Keys.ENTER)
        element.send_keys(Keys.ESCAPE)

    def click(self, elem_id: str) -> None:
        self.wait(lambda: self.driver.find_element("css selector", f"#{elem_id}"), what=f"#{elem_id}").click()

    def tab(self, label: str) -> None:
        self.wait(lambda: self.driver.find_element(
            "xpath", f"//button[@role='tab' and contains(normalize-space(.), '{label}')]"), what=label).click()
        time.sleep(0.5)

    def value(self, elem_id: str) -> str:
        return self.field(elem_id).get_attribute("value") or ""

    def text(self, elem_id: str) -> str:
        return self.driver.find_element("css selector", f"#{elem_id}").text

    def show(self, elem_id: str, block: str = "start") -> None:
        """Scroll the page so the element is at the top (``start``) or middle (``center``) of the window."""
        self.driver.execute_script(f"document.querySelector('#{elem_id}').scrollIntoView({{block: '{block}'}})")
        time.sleep(0.5)

    def radio(self, elem_id: str, label: str) -> None:
        self.wait(lambda: self.driver.find_element(
            "xpath", f"//*[@id='{elem_id}']//label[contains(normalize-space(.), '{label}')]"), what=label).click()

    def screenshot(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.driver.save_screenshot(str(path))
        return path


# ---- the flows the test checks and the screenshot script records ----

def fill_train_form(page: Page, model_dir: str, output_dir: str, dataset: str = "sft_demo_zh_en", steps: int = 5,
                    samples: int = 16) -> None:
    """The Train tab filled for a few-step LoRA sft run of ``model_dir``; template ``auto`` comes from the
    model folder's own check."""
    page.fill("train_model", model_dir)
    page.wait(lambda: "✔" in page.text("train_model_status"), what="the model folder check")
    page.choose("train_dataset", dataset)
    page.wait(lambda: dataset in page.text("train_dataset"), what=f"dataset {dataset} chosen")
    page.fill("train_max_samples", samples)
    page.fill("train_max_steps", steps)
    page.fill("train_logging_steps", 1)
    page.fill("train_output_dir", output_dir)


# The points a Gradio LinePlot drew: it renders with Vega as SVG, and Vega labels each point mark for screen
# readers "step: 3; loss: 2.25; kind: train" (an empty plot holds only an icon, no marks).
_PLOTTED_POINTS = """
return Array.from(document.querySelectorAll(arguments[0] + ' svg path[aria-roledescription="point"]'))
  .map(mark => mark.getAttribute('aria-label'));
"""


def plotted_points(page: Page, elem_id: str = "train_loss_plot") -> list[dict[str, Any]]:
    """The points drawn in the plot ``elem_id``: ``{"step", "loss", "kind"}`` per point, in drawing order."""
    points = []
    for label in page.driver.execute_script(_PLOTTED_POINTS, f"#{elem_id}") or []:
        fields = dict(part.split(": ", 1) for part in (label or "").split("; ") if ": " in part)
        if {"step", "loss"} <= set(fields):
            points.append({"step": int(float(fields["step"].replace(",", ""))), "loss": float(fields["loss"]),
                           "kind": fields.get("kind", "")})
    return points


def run_training(page: Page, timeout: float = 600) -> str:
    """Start the filled form's run; wait for the loss chart to draw points and the run to end; returns the final
    status."""
    page.click("train_start")
    page.wait(lambda: page.value("train_run_status") in ("running", "finished"), 120, "the run to start")
    page.wait(lambda: plotted_points(page), timeout, "points in the loss chart")
    page.wait(lambda: page.value("train_run_status") not in ("running", "stopping", ""), timeout,
              "the run to end")
    return page.value("train_run_status")


# Every text the chat reply showed while it was generated (a MutationObserver sees each streamed update).
_WATCH_REPLIES = """
window.__replies = [];
const root = document.querySelector('#chat_bot');
new MutationObserver(() => {
  const bots = root.querySelectorAll('[data-testid="bot"]');
  if (bots.length) { window.__replies.push(bots[bots.length - 1].innerText); }
}).observe(root, {subtree: true, childList: true, characterData: true});
"""


def chat_once(page: Page, model_dir: str, adapter_dir: str, message: str = "你好，介绍一下你自己。",
              max_new_tokens: Optional[int] = None, timeout: float = 180) -> list[str]:
    """Load base + adapter in the Chat tab, send ``message``; returns the reply's texts as they were shown."""
    if max_new_tokens:
        page.fill("chat_max_new_tokens", max_new_tokens)
    page.fill("chat_model", model_dir)
    page.fill("chat_adapter", adapter_dir)
    page.click("chat_load")
    page.wait(lambda: "(chat)" in page.text("chat_status"), timeout, "the model to load")
    page.driver.execute_script(_WATCH_REPLIES)
    page.fill("chat_message", message)
    page.click("chat_send")
    page.wait(lambda: page.driver.execute_script("return window.__replies.filter(t => t.trim()).length") >= 2
              and not page.driver.find_elements("css selector", "#chat_bot .pending, #chat_bot .generating"),
              timeout, "a streamed reply")
    time.sleep(1)
    return page.driver.execute_script("return window.__replies")


def forgetting_report(page: Page, model_dir: str, adapter_dir: str, task_dir: str, save_dir: str,
                      subjects: str = "law,logic,college_economics,high_school_physics,anatomy,philosophy",
                      questions: int = 5, timeout: float = 900) -> None:
    """Evaluate tab: base vs base + adapter on a few C-Eval and MMLU questions, 0-shot; waits for the radar."""
    page.radio("eval_mode", "Forgetting")
    page.choose("eval_tasks", "mmlu")
    page.fill("eval_model", model_dir)
    page.fill("eval_adapter", adapter_dir)
    page.fill("eval_task_dir", task_dir)
    page.fill("eval_subjects", subjects)
    page.fill("eval_n_shot", 0)
    page.fill("eval_max_samples", questions)
    page.fill("eval_save_dir", save_dir)
    page.click("eval_run")
    page.wait(lambda: page.driver.find_elements("css selector", "#eval_radar img")
              or "error" in page.text("eval_message"), timeout, "the forgetting report")


def export_merged(page: Page, model_dir: str, adapter_dir: str, export_dir: str, timeout: float = 300) -> str:
    """Export tab: merge the adapter into ``export_dir``; returns the message shown."""
    page.fill("export_model", model_dir)
    page.fill("export_adapter", adapter_dir)
    page.fill("export_dir", export_dir)
    page.click("export_run")
    page.wait(lambda: page.text("export_result").strip(), timeout, "the export")
    return page.text("export_result")
