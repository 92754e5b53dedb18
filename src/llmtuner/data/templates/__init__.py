"""Chat templates: named formats as data, plus ``auto`` (the tokenizer's own Jinja template).

``get_template(name, tokenizer)`` returns a ``Template`` whose ``encode_multiturn`` gives one (prompt_ids,
reply_ids) pair per assistant turn, token for token what ``tokenizer.apply_chat_template`` gives with the model's
official template. The implementation lives in this package: ``base.py`` (the dataclass and the
turn-by-turn encoding), ``thinking.py`` (Qwen3 reasoning rules), ``jinja.py`` (``auto``), ``registry.py`` (the
named templates) and ``display.py``.
"""

from .base import Template
from .display import format_example_for_display
from .registry import TEMPLATES, check_template_name, get_template, list_templates

__all__ = ["TEMPLATES", "Template", "check_template_name", "format_example_for_display", "get_template",
           "list_templates"]
