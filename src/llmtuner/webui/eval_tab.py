"""The Evaluate tab: ``llmtuner eval`` (benchmarks) and ``llmtuner forgetting`` (base vs tuned) from a form; the
results table and the forgetting report's radar / drops charts are shown in the page."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from ..extras.errors import LlmtunerError
from .i18n import error_markdown

if TYPE_CHECKING:
    from .context import AppContext

DEMO_TASK_DIR = "data/presets/chinese_capability/benchmarks"  # relative to where the UI runs (the clone)
TABLE_HEADERS = ["task", "level", "name", "before", "after", "delta"]


def eval_config(model: str, adapter: str, template: str, tasks: list[str], task_dir: str, subjects: str,
                n_shot: float, max_samples: Optional[float], save_dir: str, overwrite: bool) -> dict[str, Any]:
    """The arguments of ``llmtuner eval`` / ``forgetting`` for the form (empty fields left to the CLI's defaults)."""
    config: dict[str, Any] = {"model_name_or_path": (model or "").strip(), "task": ",".join(tasks or []),
                              "task_dir": (task_dir or "").strip(), "n_shot": int(n_shot or 0),
                              "save_dir": (save_dir or "").strip()}
    optional = {"adapter_name_or_path": (adapter or "").strip(), "template": (template or "").strip(),
                "subjects": (subjects or "").strip()}
    config.update({key: value for key, value in optional.items() if value})
    if max_samples:
        config["max_samples"] = int(max_samples)
    if overwrite:
        config["overwrite_save_dir"] = True
    return config


def benchmark_rows(results: dict[str, Any], task: str) -> list[list[Any]]:
    """Table rows of one task's results.json: overall, then each category, then each subject."""
    rows = [[task, "overall", task, None, round(results["overall"]["accuracy"], 4), None]]
    rows += [[task, "category", name, None, round(entry["accuracy"], 4), None]
             for name, entry in results["categories"].items()]
    rows += [[task, "subject", entry["name"], None, round(entry["accuracy"], 4), None]
             for entry in results["subjects"].values()]
    return rows


def forgetting_rows(report: dict[str, Any]) -> list[list[Any]]:
    """Table rows of a forgetting report: per task overall, categories, subjects (before, after, delta)."""
    rows = []
    for task, entry in report["tasks"].items():
        levels = (("overall", {task: entry["overall"]}), ("category", entry["categories"]),
                  ("subject", entry["subjects"]))
        for level, items in levels:
            rows += [[task, level, name, round(item["before"], 4), round(item["after"], 4), round(item["delta"], 4)]
                     for name, item in items.items()]
    return rows


def run_evaluation(mode: str, config: dict[str, Any]) -> tuple[str, list[list[Any]], Optional[str], Optional[str]]:
    """(message, table rows, radar.png, drops.png) of a benchmark run (no charts) or a forgetting report."""
    try:
        if mode == "forgetting":
            from ..eval.forgetting import DROPS_PNG, RADAR_PNG, format_headline, run_forgetting

            report = run_forgetting(config)
            save_dir = Path(config["save_dir"])
            return (format_headline(report), forgetting_rows(report), str(save_dir / RADAR_PNG),
                    str(save_dir / DROPS_PNG))
        from ..eval.evaluator import run_eval

        results = run_eval(config)
        tasks = [task for task in config["task"].split(",") if task]
        per_task = {tasks[0]: results} if len(tasks) == 1 else results
        rows = [row for task, result in per_task.items() for row in benchmark_rows(result, task)]
        return f"✔ {config['save_dir']}", rows, None, None
    except LlmtunerError as exc:
        return error_markdown(exc), [], None, None


def build(ctx: "AppContext") -> None:
    import gradio as gr

    from ..hparams.evaluation_args import EVAL_TASKS

    ui = ctx.ui
    mode = ui.add(gr.Radio([(ui.t("mode_bench"), "benchmark"), (ui.t("mode_forget"), "forgetting")],
                           value="benchmark", elem_id="eval_mode", label=ui.t("eval_mode")), "eval_mode")
    with gr.Row():
        model = ui.add(gr.Textbox(scale=2, elem_id="eval_model", **ui.kw("model_name_or_path")), "model_name_or_path")
        adapter = ui.add(gr.Textbox(scale=2, elem_id="eval_adapter", **ui.kw("adapter_name_or_path")),
                         "adapter_name_or_path")
        template = ui.add(gr.Textbox(value="empty", **ui.kw("template")), "template")
    with gr.Row():
        # Defaults: the demo benchmark that ships in the clone (real MMLU / CMMLU rows), so Run works as it opens.
        tasks = ui.add(gr.Dropdown(list(EVAL_TASKS), value=["cmmlu", "mmlu"], multiselect=True, elem_id="eval_tasks",
                                   **ui.kw("task")), "task")
        task_dir = ui.add(gr.Textbox(value=DEMO_TASK_DIR, elem_id="eval_task_dir", **ui.kw("task_dir")), "task_dir")
        subjects = ui.add(gr.Textbox(elem_id="eval_subjects", **ui.kw("subjects")), "subjects")
    with gr.Row():
        n_shot = ui.add(gr.Number(value=5, precision=0, elem_id="eval_n_shot", **ui.kw("n_shot")), "n_shot")
        max_samples = ui.add(gr.Number(value=20, precision=0, elem_id="eval_max_samples",
                                       **ui.kw("eval_max_samples")), "eval_max_samples")
        save_dir = ui.add(gr.Textbox(scale=2, elem_id="eval_save_dir", **ui.kw("save_dir")), "save_dir")
        overwrite = ui.add(gr.Checkbox(value=False, **ui.kw("overwrite_save_dir")), "overwrite_save_dir")
    button = ui.add(gr.Button(ui.t("run_eval"), variant="primary", elem_id="eval_run"), "run_eval", "value")
    message = gr.Markdown(elem_id="eval_message")
    table = ui.add(gr.Dataframe(headers=TABLE_HEADERS, value=[], interactive=False, max_height=300,
                                label=ui.t("results"), elem_id="eval_table"), "results")
    with gr.Row():
        radar = ui.add(gr.Image(type="filepath", interactive=False, label=ui.t("radar"), elem_id="eval_radar"),
                       "radar")
        drops = ui.add(gr.Image(type="filepath", interactive=False, label=ui.t("drops"), elem_id="eval_drops"),
                       "drops")

    def on_run(mode_value: str, *values: Any):
        return run_evaluation(mode_value, eval_config(*values))

    button.click(on_run, [mode, model, adapter, template, tasks, task_dir, subjects, n_shot, max_samples, save_dir,
                          overwrite], [message, table, radar, drops])
