"""The Train tab: the form, its live checks, data previews, presets, and start / stop / resume of runs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..extras.errors import LlmtunerError
from . import config as cfg
from .i18n import error_markdown
from .preview import DOCTOR_HEADERS, doctor_table, first_rendered_example, first_rows, rows_as_text

if TYPE_CHECKING:
    from .context import AppContext

SCHEDULERS = ("cosine", "linear", "constant", "constant_with_warmup", "polynomial")
REFRESH_SECONDS = 1.0


def group_messages(found: Any) -> list[str]:
    """One message per form group (``cfg.FIELD_GROUPS`` order): the error in its group, empty elsewhere."""
    return [error_markdown(found[1]) if found and found[0] == group else "" for group in cfg.FIELD_GROUPS]


def check_form(form: dict[str, Any]) -> tuple[dict[str, Any] | None, list[str]]:
    """(config or None, the per-group messages) for the form, by the CLI's checks."""
    try:
        config = cfg.build_train_config(form)
    except LlmtunerError as exc:
        return None, group_messages(("output", exc))
    found = cfg.check_train_config(config)
    return (None if found else config), group_messages(found)


def build(ctx: "AppContext") -> None:
    """Lay out the tab inside the current Blocks context and wire its events."""
    import gradio as gr

    ui, manager = ctx.ui, ctx.manager
    d = cfg.DEFAULT_FORM
    fields: dict[str, Any] = {}
    errors: dict[str, Any] = {}

    def field(key: str, component: Any) -> Any:
        fields[key] = ui.add(component, key)
        return component

    with gr.Row():
        presets = cfg.list_presets(ctx.presets_dir)
        preset = ui.add(gr.Dropdown(presets, value=None, scale=3, **ui.kw("preset")), "preset")
        load_preset = ui.add(gr.Button(ui.t("load_preset"), scale=1), "load_preset", "value")
    with gr.Group():
        with gr.Row():
            field("model_name_or_path", gr.Textbox(value=d["model_name_or_path"], scale=3,
                                                   elem_id="train_model", **ui.kw("model_name_or_path")))
            from ..data.templates import list_templates

            field("template", gr.Dropdown(list(list_templates()), value=d["template"], allow_custom_value=True,
                                          elem_id="train_template", **ui.kw("template")))
        model_status = gr.Markdown(elem_id="train_model_status")
        errors["model"] = gr.Markdown(elem_id="train_error_model")
    with gr.Group():
        with gr.Row():
            field("stage", gr.Dropdown(list(cfg.available_stages()), value=d["stage"], **ui.kw("stage")))
            field("finetuning_type", gr.Dropdown(list(cfg.finetuning_types()), value=d["finetuning_type"],
                                                 **ui.kw("finetuning_type")))
            field("lora_rank", gr.Number(value=d["lora_rank"], precision=0, **ui.kw("lora_rank")))
            field("lora_alpha", gr.Number(value=d["lora_alpha"], precision=0, **ui.kw("lora_alpha")))
            field("lora_dropout", gr.Number(value=d["lora_dropout"], **ui.kw("lora_dropout")))
            field("lora_target", gr.Textbox(value=d["lora_target"], **ui.kw("lora_target")))
        errors["method"] = gr.Markdown(elem_id="train_error_method")
    with gr.Group():
        with gr.Row():
            field("dataset_dir", gr.Textbox(value=d["dataset_dir"], **ui.kw("dataset_dir")))
            field("dataset", gr.Dropdown(cfg.list_datasets(ctx.workdir / d["dataset_dir"]), value=[],
                                         multiselect=True, scale=2, elem_id="train_dataset", **ui.kw("dataset")))
            field("cutoff_len", gr.Number(value=d["cutoff_len"], precision=0, **ui.kw("cutoff_len")))
            field("val_size", gr.Number(value=d["val_size"], **ui.kw("val_size")))
            field("max_samples", gr.Number(value=d["max_samples"], precision=0, elem_id="train_max_samples",
                                           **ui.kw("max_samples")))
        errors["data"] = gr.Markdown(elem_id="train_error_data")
        preview_data = ui.add(gr.Button(ui.t("preview_data"), size="sm"), "preview_data", "value")
        with gr.Row():
            raw_rows = ui.add(gr.Code(language="json", lines=6, max_lines=12, label=ui.t("first_rows")),
                              "first_rows")
            rendered = ui.add(gr.Textbox(lines=6, max_lines=12, label=ui.t("first_example"),
                                         elem_id="train_first_example"), "first_example")
    with gr.Group():
        with gr.Row():
            field("learning_rate", gr.Number(value=d["learning_rate"], **ui.kw("learning_rate")))
            field("num_train_epochs", gr.Number(value=d["num_train_epochs"], **ui.kw("num_train_epochs")))
            field("max_steps", gr.Number(value=d["max_steps"], precision=0, elem_id="train_max_steps",
                                         **ui.kw("max_steps")))
            field("per_device_train_batch_size", gr.Number(value=d["per_device_train_batch_size"], precision=0,
                                                           **ui.kw("per_device_train_batch_size")))
            field("gradient_accumulation_steps", gr.Number(value=d["gradient_accumulation_steps"], precision=0,
                                                           **ui.kw("gradient_accumulation_steps")))
        with gr.Row():
            field("lr_scheduler_type", gr.Dropdown(list(SCHEDULERS), value=d["lr_scheduler_type"],
                                                   **ui.kw("lr_scheduler_type")))
            field("warmup_steps", gr.Number(value=d["warmup_steps"], precision=0, **ui.kw("warmup_steps")))
            field("logging_steps", gr.Number(value=d["logging_steps"], precision=0, elem_id="train_logging_steps",
                                             **ui.kw("logging_steps")))
            field("save_steps", gr.Number(value=d["save_steps"], precision=0, **ui.kw("save_steps")))
            field("seed", gr.Number(value=d["seed"], precision=0, **ui.kw("seed")))
        errors["hparams"] = gr.Markdown(elem_id="train_error_hparams")
    with gr.Group():
        with gr.Row():
            field("output_dir", gr.Textbox(value=d["output_dir"], scale=2, elem_id="train_output_dir",
                                           **ui.kw("output_dir")))
            field("overwrite_output_dir", gr.Checkbox(value=d["overwrite_output_dir"], elem_id="train_overwrite",
                                                      **ui.kw("overwrite_output_dir")))
            field("resume", gr.Checkbox(value=d["resume"], **ui.kw("resume")))
        field("extra", gr.Code(value=d["extra"], language="yaml", lines=3, label=ui.t("extra")))
        ui.add(gr.Markdown(ui.t("extra.info")), "extra.info", "value")
        errors["output"] = gr.Markdown(elem_id="train_error_output")
    with gr.Row():
        preview_yaml = ui.add(gr.Button(ui.t("preview_yaml"), elem_id="train_preview"), "preview_yaml", "value")
        check = ui.add(gr.Button(ui.t("doctor"), elem_id="train_doctor"), "doctor", "value")
        start = ui.add(gr.Button(ui.t("start"), variant="primary", elem_id="train_start"), "start", "value")
        resume = ui.add(gr.Button(ui.t("resume_run"), elem_id="train_resume"), "resume_run", "value")
        stop = ui.add(gr.Button(ui.t("stop"), variant="stop", elem_id="train_stop"), "stop", "value")
    stop_message = gr.Markdown(elem_id="train_stop_message")
    doctor_view = ui.add(gr.Dataframe(headers=DOCTOR_HEADERS, value=[], interactive=False, wrap=True,
                                      label=ui.t("doctor_table"), elem_id="train_doctor_table"), "doctor_table")
    doctor_summary = gr.Markdown(elem_id="train_doctor_summary")
    with gr.Row():
        yaml_view = ui.add(gr.Code(language="yaml", lines=8, label=ui.t("yaml"), elem_id="train_yaml"), "yaml")
        command_view = ui.add(gr.Textbox(label=ui.t("command"), lines=2, elem_id="train_command"), "command")
    with gr.Row():
        run_choice = ui.add(gr.Dropdown([], value=None, label=ui.t("run"), elem_id="train_run"), "run")
        run_status = ui.add(gr.Textbox(label=ui.t("run_status"), elem_id="train_run_status"), "run_status")
    with gr.Row():
        loss_plot = ui.add(gr.LinePlot(x="step", y="loss", color="kind", label=ui.t("loss"),
                                       elem_id="train_loss_plot"), "loss")
        log_view = ui.add(gr.Textbox(lines=14, max_lines=14, autoscroll=True, label=ui.t("log"),
                                     elem_id="train_log"), "log")
    runs_table = ui.add(gr.Dataframe(headers=["run", "status", "output_dir", "config"], value=[],
                                     interactive=False, label=ui.t("runs"), elem_id="train_runs"), "runs")

    inputs = [fields[key] for key in cfg.FORM_KEYS]
    error_views = [errors[group] for group in cfg.FIELD_GROUPS]

    def form_of(values: tuple[Any, ...]) -> dict[str, Any]:
        return dict(zip(cfg.FORM_KEYS, values))

    def on_model(path: str, template: str):
        ok, message = cfg.check_model_folder(path)
        if not path:
            return "", gr.update()
        if not ok:
            return f"**error:** {message}", gr.update()
        suggested = cfg.suggest_template(path)
        return ui.t("model_ok").format(message), gr.update(value=suggested or template)

    def checked(form: dict[str, Any]) -> tuple[dict[str, Any] | None, list[str]]:
        """check_form, with the "passes" line under the output settings when nothing is wrong."""
        config, messages = check_form(form)
        return config, (messages[:-1] + [ui.t("valid")] if config is not None else messages)

    def on_validate(*values: Any) -> list[str]:
        return checked(form_of(values))[1]

    def on_dataset_dir(dataset_dir: str, chosen: list[str]):
        names = cfg.list_datasets(ctx.workdir / (dataset_dir or "data"))
        return gr.update(choices=names, value=[name for name in chosen or [] if name in names])

    def on_preview_yaml(*values: Any):
        config, messages = checked(form_of(values))
        try:
            text = cfg.config_yaml(cfg.build_train_config(form_of(values)))
        except LlmtunerError:
            text = ""
        command = "llmtuner train <run folder>/train.yaml" if config is not None else ""
        return [text, command, *messages]

    def on_preview_data(*values: Any):
        form = form_of(values)
        if not form["dataset"]:
            return "", "", *checked(form)[1]
        try:
            rows = rows_as_text(first_rows(form["dataset_dir"], form["dataset"][0]))
            example = first_rendered_example(cfg.build_train_config(form))
        except LlmtunerError as exc:
            return "", "", *group_messages((cfg.error_group(exc.message), exc))
        return rows, example, *[""] * len(error_views)

    def on_doctor(*values: Any):
        """The doctor's table for the form's config (the CLI's error next to its fields when it has one)."""
        config, messages = checked(form_of(values))
        if config is None:
            return [[], "", *messages]
        try:
            rows, line = doctor_table(config)
        except LlmtunerError as exc:
            return [[], "", *group_messages((cfg.error_group(exc.message), exc))]
        return [rows, line, *messages]

    def on_start(resume_run: bool, *values: Any):
        form = form_of(values)
        if resume_run:
            form["resume"] = True
        config, messages = checked(form)
        if config is None:
            return [gr.update(), "", "", *messages, ""]
        try:
            run = manager.start(config)
        except LlmtunerError as exc:
            return [gr.update(), "", "", *group_messages(("output", exc)), ""]
        import sys

        command = " ".join([sys.executable, *cfg.train_command(run.config_path)])
        return [gr.update(choices=[r.run_id for r in manager.runs()], value=run.run_id),
                cfg.config_yaml(config), command, *messages, ""]

    def on_stop(run_id: str) -> str:
        """One line under the buttons: what Stop did (the status box keeps following the run)."""
        run = manager.get(run_id)
        if run is None:
            return ui.t("no_run")
        if run.process.poll() is not None:
            return ui.t("not_running").format(run.run_id, run.status)
        run.stop()
        return ui.t("stopping").format(run.run_id)

    def on_tick(run_id: str):
        import pandas as pd

        run = manager.get(run_id)
        table = manager.table()
        if run is None:
            return gr.update(), gr.update(), gr.update(), table
        rows = run.loss_rows()
        plot = pd.DataFrame(rows, columns=["step", "loss", "kind"]) if rows else None
        return run.status, plot, run.console_tail(), table

    fields["model_name_or_path"].change(on_model, [fields["model_name_or_path"], fields["template"]],
                                        [model_status, fields["template"]])
    fields["dataset_dir"].change(on_dataset_dir, [fields["dataset_dir"], fields["dataset"]], [fields["dataset"]])
    for component in inputs:
        component.change(on_validate, inputs, error_views, trigger_mode="always_last", show_progress="hidden")
    preview_yaml.click(on_preview_yaml, inputs, [yaml_view, command_view, *error_views])
    preview_data.click(on_preview_data, inputs, [raw_rows, rendered, *error_views])
    check.click(on_doctor, inputs, [doctor_view, doctor_summary, *error_views])
    start_outputs = [run_choice, yaml_view, command_view, *error_views, stop_message]  # a start clears Stop's line
    start.click(lambda *v: on_start(False, *v), inputs, start_outputs)
    resume.click(lambda *v: on_start(True, *v), inputs, start_outputs)
    stop.click(on_stop, [run_choice], [stop_message])

    def on_load_preset(name: str):
        if not name:
            return [gr.update() for _ in inputs]
        form = cfg.form_from_config(cfg.load_preset(ctx.presets_dir, name))
        return [form[key] for key in cfg.FORM_KEYS]

    load_preset.click(on_load_preset, [preset], inputs)
    timer = gr.Timer(REFRESH_SECONDS)
    timer.tick(on_tick, [run_choice], [run_status, loss_plot, log_view, runs_table], show_progress="hidden")
