"""The Chat tab: load base + adapter (or an export) into ``ChatEngine`` and chat with streaming; a cls run's
classifier instead answers with its label probabilities."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator

from ..extras.errors import LlmtunerError
from .i18n import error_markdown

if TYPE_CHECKING:
    from .context import AppContext


def model_args(model: str, adapter: str, template: str) -> dict[str, Any]:
    """The inference arguments of the form, as ``llmtuner chat`` / ``predict`` take them."""
    args: dict[str, Any] = {"model_name_or_path": (model or "").strip()}
    if adapter and adapter.strip():
        args["adapter_name_or_path"] = adapter.strip()
    if template and template.strip():
        args["template"] = template.strip()
    return args


def load_model(args: dict[str, Any]) -> tuple[str, Any]:
    """("classifier", TextClassifier) for a stage cls run, else ("chat", ChatEngine); the CLI's own choice."""
    from ..chat.classify import TextClassifier, points_at_classifier

    if points_at_classifier(args):
        return "classifier", TextClassifier.from_args({k: v for k, v in args.items() if k != "template"})
    from ..model.engine import ChatEngine

    return "chat", ChatEngine.from_args(args)


def stream_reply(engine: Any, history: list[dict[str, Any]], system: str, settings: dict[str, Any]
                 ) -> Iterator[list[dict[str, Any]]]:
    """The history with the assistant's reply growing as it is generated (the last turn must be the user's)."""
    messages = [{"role": turn["role"], "content": _plain_content(turn["content"])} for turn in history]
    reply = ""
    for piece in engine.stream(messages, system or None, **settings):
        reply += piece
        yield [*history, {"role": "assistant", "content": reply}]
    yield [*history, {"role": "assistant", "content": reply}]


def _plain_content(content: Any) -> str:
    """Gradio may hand a message's content back as a list of parts; the engine takes text."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") if isinstance(part, dict) else str(part) for part in content)
    return str(content)


def build(ctx: "AppContext") -> None:
    import gradio as gr

    ui = ctx.ui
    with gr.Row():
        model = ui.add(gr.Textbox(scale=3, elem_id="chat_model", **ui.kw("model_name_or_path")), "model_name_or_path")
        adapter = ui.add(gr.Textbox(scale=3, elem_id="chat_adapter", **ui.kw("adapter_name_or_path")),
                         "adapter_name_or_path")
        template = ui.add(gr.Textbox(value="auto", elem_id="chat_template", **ui.kw("template")), "template")
    with gr.Row():
        load = ui.add(gr.Button(ui.t("load"), variant="primary", elem_id="chat_load"), "load", "value")
        unload = ui.add(gr.Button(ui.t("unload")), "unload", "value")
    status = gr.Markdown(elem_id="chat_status")
    with gr.Column(visible=True) as chat_view:
        system = ui.add(gr.Textbox(**ui.kw("system")), "system")
        with gr.Row():
            temperature = ui.add(gr.Slider(0.01, 2.0, value=0.95, **ui.kw("temperature")), "temperature")
            top_p = ui.add(gr.Slider(0.01, 1.0, value=0.7, **ui.kw("top_p")), "top_p")
            max_new_tokens = ui.add(gr.Slider(1, 4096, value=512, step=1, elem_id="chat_max_new_tokens",
                                              **ui.kw("max_new_tokens")), "max_new_tokens")
            do_sample = ui.add(gr.Checkbox(value=True, **ui.kw("do_sample")), "do_sample")
        chatbot = ui.add(gr.Chatbot(label=ui.t("chatbot"), elem_id="chat_bot", height=360), "chatbot")
        with gr.Row():
            message = ui.add(gr.Textbox(scale=4, elem_id="chat_message", **ui.kw("message")), "message")
            send = ui.add(gr.Button(ui.t("send"), variant="primary", elem_id="chat_send"), "send", "value")
            clear = ui.add(gr.Button(ui.t("clear"), elem_id="chat_clear"), "clear", "value")
    with gr.Column(visible=False) as classify_view:
        text = ui.add(gr.Textbox(elem_id="chat_classify_text", **ui.kw("classify_text")), "classify_text")
        classify = ui.add(gr.Button(ui.t("classify"), variant="primary", elem_id="chat_classify"), "classify", "value")
        bars = ui.add(gr.BarPlot(x="label", y="probability", label=ui.t("probabilities"), elem_id="chat_bars",
                                 y_lim=[0, 1]), "probabilities")

    def on_load(model_path: str, adapter_path: str, template_name: str):
        ctx.loaded.clear()
        try:
            kind, loaded = load_model(model_args(model_path, adapter_path, template_name))
        except LlmtunerError as exc:
            return error_markdown(exc), gr.update(visible=True), gr.update(visible=False)
        ctx.loaded[kind] = loaded
        where = " + ".join(part for part in (model_path, adapter_path) if part)
        return (ui.t("loaded").format(f"{where} ({kind})"), gr.update(visible=kind == "chat"),
                gr.update(visible=kind == "classifier"))

    def on_unload():
        ctx.loaded.clear()
        return ""

    def on_send(text_in: str, history: list[dict[str, Any]], system_prompt: str, temp: float, p: float,
                tokens: float, sample: bool):
        engine = ctx.loaded.get("chat")
        if engine is None:
            raise gr.Error(ui.t("not_loaded"))
        history = [*(history or []), {"role": "user", "content": text_in}]
        yield "", history
        settings = {"temperature": temp, "top_p": p, "max_new_tokens": int(tokens), "do_sample": sample}
        for updated in stream_reply(engine, history, system_prompt, settings):
            yield "", updated

    def on_classify(text_in: str):
        import pandas as pd

        classifier = ctx.loaded.get("classifier")
        if classifier is None:
            raise gr.Error(ui.t("not_loaded"))
        probabilities = classifier.predict(text_in)["probabilities"]
        return pd.DataFrame({"label": list(probabilities), "probability": list(probabilities.values())})

    load.click(on_load, [model, adapter, template], [status, chat_view, classify_view])
    unload.click(on_unload, None, [status])
    chat_inputs = [message, chatbot, system, temperature, top_p, max_new_tokens, do_sample]
    send.click(on_send, chat_inputs, [message, chatbot])
    message.submit(on_send, chat_inputs, [message, chatbot])
    clear.click(lambda: [], None, [chatbot])
    classify.click(on_classify, [text], [bars])
