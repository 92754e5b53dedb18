"""The Blocks app: a language switch and one tab per step of the workflow."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from .context import AppContext
from .i18n import LANGUAGES, Localizer
from .runs import RunManager


def create_app(workdir: str | Path = ".", runs_dir: Optional[str | Path] = None, lang: str = "en") -> Any:
    """The Gradio Blocks of the UI (not launched). ``runs_dir`` holds each run's YAML and console log
    (default ``<workdir>/saves/webui_runs``)."""
    import gradio as gr

    from . import chat_tab, eval_tab, export_tab, train_tab

    workdir = Path(workdir).resolve()
    manager = RunManager(Path(runs_dir) if runs_dir else workdir / "saves" / "webui_runs", workdir)
    ctx = AppContext(Localizer(lang), manager, workdir, workdir / "configs" / "presets")
    ui = ctx.ui
    with gr.Blocks(title="llmtuner", analytics_enabled=False) as demo:
        with gr.Row():
            ui.add(gr.Markdown(ui.t("title")), "title", "value")
            language = ui.add(gr.Radio(list(LANGUAGES), value="中文" if lang == "zh" else "English",
                                       label=ui.t("lang"), elem_id="lang"), "lang")
        with gr.Tabs():
            with ui.add(gr.Tab(ui.t("tab_train"), id="train", elem_id="tab_train"), "tab_train"):
                train_tab.build(ctx)
            with ui.add(gr.Tab(ui.t("tab_eval"), id="eval", elem_id="tab_eval"), "tab_eval"):
                eval_tab.build(ctx)
            with ui.add(gr.Tab(ui.t("tab_chat"), id="chat", elem_id="tab_chat"), "tab_chat"):
                chat_tab.build(ctx)
            with ui.add(gr.Tab(ui.t("tab_export"), id="export", elem_id="tab_export"), "tab_export"):
                export_tab.build(ctx)
        components = ui.components

        def switch(name: str) -> list[Any]:
            ui.lang = LANGUAGES[name]  # messages written from now on (status lines, errors' headers) follow too
            return ui.updates(ui.lang)

        language.change(switch, [language], components)
    demo.llmtuner_context = ctx  # for the launcher (stop runs on exit) and tests
    return demo
