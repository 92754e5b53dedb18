"""The Export tab: ``llmtuner export`` from a form; its refusals (non-empty folder, quantized base, ...) are shown
as the CLI's error and hint."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..extras.errors import LlmtunerError
from .i18n import error_markdown

if TYPE_CHECKING:
    from .context import AppContext

DTYPES = ("auto", "float32", "float16", "bfloat16")


def export_config(model: str, adapter: str, template: str, export_dir: str, size: float, dtype: str,
                  overwrite: bool) -> dict[str, Any]:
    """The arguments of ``llmtuner export`` for the form (empty fields left out, so the CLI's defaults apply)."""
    config: dict[str, Any] = {"model_name_or_path": (model or "").strip(), "export_dir": (export_dir or "").strip(),
                              "export_size": size, "export_dtype": dtype}
    if adapter and adapter.strip():
        config["adapter_name_or_path"] = adapter.strip()
    if template and template.strip():
        config["template"] = template.strip()
    if overwrite:
        config["overwrite_export_dir"] = True
    return config


def run_export(config: dict[str, Any]) -> str:
    """Export and return a message: where it went, or the CLI's error and hint."""
    from ..model.export import export_model
    try:
        target = export_model(config)
    except LlmtunerError as exc:
        return error_markdown(exc)
    shards = sorted(path.name for path in target.glob("*.safetensors"))
    return f"✔ {target} ({len(shards)} safetensors shard(s): {', '.join(shards)})"


def build(ctx: "AppContext") -> None:
    import gradio as gr

    ui = ctx.ui
    with gr.Row():
        model = ui.add(gr.Textbox(scale=2, elem_id="export_model", **ui.kw("model_name_or_path")), "model_name_or_path")
        adapter = ui.add(gr.Textbox(scale=2, elem_id="export_adapter", **ui.kw("adapter_name_or_path")),
                         "adapter_name_or_path")
        template = ui.add(gr.Textbox(value="", **ui.kw("template")), "template")
    with gr.Row():
        export_dir = ui.add(gr.Textbox(scale=2, elem_id="export_dir", **ui.kw("export_dir")), "export_dir")
        size = ui.add(gr.Number(value=5.0, **ui.kw("export_size")), "export_size")
        dtype = ui.add(gr.Dropdown(list(DTYPES), value="auto", **ui.kw("export_dtype")), "export_dtype")
        overwrite = ui.add(gr.Checkbox(value=False, **ui.kw("overwrite_export_dir")), "overwrite_export_dir")
    button = ui.add(gr.Button(ui.t("export"), variant="primary", elem_id="export_run"), "export", "value")
    result = gr.Markdown(elem_id="export_result")
    button.click(lambda *values: run_export(export_config(*values)),
                 [model, adapter, template, export_dir, size, dtype, overwrite], [result])
