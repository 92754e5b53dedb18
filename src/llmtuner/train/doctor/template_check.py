"""Template: our rendered ids of the first rows equal ``tokenizer.apply_chat_template`` of the model's own Jinja.

The same comparison as the template parity tests (tests/data/test_template.py): the ids of
``encode_multiturn``'s (prompt, reply) pairs joined, against the model's template with ``tokenize=True``; a
conversation that ends with a user turn (a prompt-only row) is compared as a generation prompt. Qwen3-style
templates are compared with thinking on and off.
"""

from __future__ import annotations

from typing import Any, Optional

from .report import Check, DoctorContext

NAME, TITLE = "template", "our template renders the ids of the model's own chat template"
CONTEXT_TOKENS = 8  # tokens shown before the first difference


def our_ids(ctx: DoctorContext, messages: list[dict], system: Optional[str], thinking: bool) -> list[int]:
    """The ids training sees for this conversation (what data/preprocess renders, before truncation)."""
    if messages[-1]["role"] == "user":
        return ctx.template.encode_prompt(ctx.tokenizer, messages, system, enable_thinking=thinking)
    pairs = ctx.template.encode_multiturn(ctx.tokenizer, messages, system, enable_thinking=thinking)
    return [token for prompt, reply in pairs for token in prompt + reply]


def reference_ids(tokenizer: Any, chat_template: str, messages: list[dict], system: Optional[str],
                  thinking: bool) -> list[int]:
    """The model's own render: ``apply_chat_template`` with the tokenizer's Jinja, tokenised by it."""
    conversation = ([{"role": "system", "content": system}] if system else []) + list(messages)
    out = tokenizer.apply_chat_template(conversation, chat_template=chat_template, tokenize=True,
                                        add_generation_prompt=messages[-1]["role"] == "user",
                                        enable_thinking=thinking)
    return list(out["input_ids"] if hasattr(out, "keys") else out)


def first_difference(tokenizer: Any, ours: list[int], theirs: list[int]) -> dict[str, Any]:
    """Where two id lists part: the position, the token on each side decoded, and the text before it."""
    position = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))

    def token(ids: list[int]) -> str:
        return repr(tokenizer.decode(ids[position:position + 1])) if position < len(ids) else "(end)"

    return {"position": position, "ours": token(ours), "model": token(theirs),
            "context": tokenizer.decode(ours[max(0, position - CONTEXT_TOKENS):position]),
            "lengths": [len(ours), len(theirs)]}


def model_chat_template(tokenizer: Any) -> Optional[str]:
    chat_template = getattr(tokenizer, "chat_template", None)
    return chat_template.get("default") if isinstance(chat_template, dict) else chat_template


def run(ctx: DoctorContext) -> list[Check]:
    skipped = ctx.chat_stage_skip(NAME, TITLE)
    if skipped:
        return [skipped]
    chat_template = model_chat_template(ctx.tokenizer)
    if not chat_template:
        return [Check(NAME, TITLE, "skip", message="the model ships no chat template (no chat_template in its "
                                                   "tokenizer files): nothing to compare with.")]
    from jinja2.exceptions import TemplateError

    thinking_values = (True, False) if ctx.template.thinking else (ctx.data_args.enable_thinking,)
    compared, differences = 0, []
    for dataset in ctx.data_args.dataset:
        for row, (messages, system) in enumerate(ctx.conversations(dataset), start=1):
            for thinking in thinking_values:
                compared += 1
                ours = our_ids(ctx, messages, system, thinking)
                try:
                    theirs = reference_ids(ctx.tokenizer, chat_template, messages, system, thinking)
                except TemplateError as exc:
                    differences.append({"dataset": dataset, "row": row, "thinking": thinking,
                                        "error": f"the model's template refused the conversation: {exc}"})
                    continue
                if ours != theirs:
                    differences.append({"dataset": dataset, "row": row, "thinking": thinking,
                                        **first_difference(ctx.tokenizer, ours, theirs)})
    value = f"{compared - len(differences)}/{compared}"
    rows = sum(len(ctx.first_rows(dataset)) for dataset in ctx.data_args.dataset)
    where = f"template={ctx.template.name}, the first {rows} rows of {', '.join(ctx.data_args.dataset)}"
    if not differences:
        return [Check(NAME, TITLE, "pass", value, f"every rendered conversation equals the model's ({where}).")]
    first = differences[0]
    shown = first.get("error") or (f"first difference at token {first['position']}: ours {first['ours']}, the "
                                   f"model's {first['model']}, after {first['context']!r}")
    return [Check(NAME, TITLE, "fail", value,
                  f"{len(differences)} of {compared} differ ({where}); {first['dataset']} row {first['row']}"
                  f"{'' if len(thinking_values) == 1 else ' thinking ' + ('on' if first['thinking'] else 'off')}: "
                  f"{shown}.",
                  "Use the named template that mirrors this model (or template: auto to render its own Jinja); "
                  "training on another format teaches the model a prompt it will not see when served.",
                  {"differences": differences[:20]})]
