"""``Template``: a chat format as data, rendered turn by turn into (prompt, reply) token pairs.

A template is a handful of format strings with three placeholders: ``{content}`` (the message text), ``{bos}`` and
``{eos}`` (the tokenizer's bos/eos strings, or "" when it has none, which is what a Jinja template sees).
The user format carries the assistant header too, so every prompt ends exactly where the reply starts and the
generation prompt is the same text. Masks come from where the rendered pieces start and end, never from
searching the text for the reply.
"""

from __future__ import annotations

import functools
from bisect import bisect_left
from dataclasses import dataclass
from itertools import accumulate
from typing import TYPE_CHECKING, Optional

from ...extras.errors import DatasetError
from ...extras.logging import get_logger
from . import thinking

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = get_logger(__name__)
warn_once = functools.lru_cache(maxsize=None)(logger.warning)

# eos given to a tokenizer that has none and a template that names no end-of-turn word (Qwen's base-model eos).
FALLBACK_EOS = "<|endoftext|>"


@dataclass(frozen=True)
class Template:
    """A named chat format. Every field is plain data; ``mirrors`` names the official Jinja file it matches."""

    name: str
    user_format: str = "{content}"  # one user turn plus the header the assistant reply follows
    assistant_format: str = "{content}{eos}"  # one reply plus its end-of-turn marker (trained)
    system_format: str = "{content}"
    prefix: str = ""  # written once, before everything else (usually "{bos}")
    # llama2/mistral have no system turn: the rendered system text is put in front of the first user message.
    system_in_first_user: bool = False
    strip_content: bool = False  # llama2 .strip() / llama3 | trim on every message
    default_system: Optional[str] = None
    stop_words: tuple[str, ...] = ()  # end-of-turn tokens generation stops at, besides eos
    special_tokens: tuple[str, ...] = ()  # control tokens the formats write; each must be one token
    thinking: bool = False  # Qwen3 reasoning rules (see thinking.py)
    mirrors: Optional[str] = None  # official chat template (file name) this one renders token for token

    def encode_multiturn(
        self,
        tokenizer: "PreTrainedTokenizerBase",
        messages: list[dict],
        system: Optional[str] = None,
        enable_thinking: bool = True,
    ) -> list[tuple[list[int], list[int]]]:
        """One ``(prompt_ids, reply_ids)`` pair per assistant turn; all pairs joined == the official render's ids.

        ``messages`` alternate user/assistant and end with an assistant turn; ``system`` None (or "") means the
        template's default system prompt, if it has one. (``auto`` may return fewer pairs: see jinja.py.)

        Raises:
            DatasetError: roles do not alternate user/assistant, or the conversation does not end with a reply.
        """
        _check_conversation(messages, last_role="assistant")
        pieces = self._render_pieces(tokenizer, messages, system, enable_thinking)
        ids = tokenize_pieces(tokenizer, pieces)
        return [(ids[i], ids[i + 1]) for i in range(0, len(ids), 2)]

    def encode_prompt(
        self,
        tokenizer: "PreTrainedTokenizerBase",
        messages: list[dict],
        system: Optional[str] = None,
        enable_thinking: bool = True,
    ) -> list[int]:
        """Prompt ids for generation (messages end with a user turn) == ``add_generation_prompt=True`` ids.

        Raises:
            DatasetError: roles do not alternate user/assistant, or the conversation does not end with a user turn.
        """
        return tokenizer(self.render_prompt(tokenizer, messages, system, enable_thinking),
                         add_special_tokens=False)["input_ids"]

    def render_prompt(
        self,
        tokenizer: "PreTrainedTokenizerBase",
        messages: list[dict],
        system: Optional[str] = None,
        enable_thinking: bool = True,
    ) -> str:
        """The text ``encode_prompt`` tokenizes; callers that score a continuation append it to this text.

        Raises:
            DatasetError: roles do not alternate user/assistant, or the conversation does not end with a user turn.
        """
        _check_conversation(messages, last_role="user")
        return "".join(self._render_pieces(tokenizer, messages, system, enable_thinking))

    def stop_token_ids(self, tokenizer: "PreTrainedTokenizerBase") -> list[int]:
        """eos plus the template's end-of-turn tokens (e.g. ``<|im_end|>``), without duplicates or unknowns."""
        added = tokenizer.get_added_vocab()
        ids = [tokenizer.eos_token_id] + [added.get(word) for word in self.stop_words]
        return list(dict.fromkeys(token_id for token_id in ids if token_id is not None))

    def fix_tokenizer(self, tokenizer: "PreTrainedTokenizerBase") -> list[str]:
        """Make sure eos, pad and the template's control tokens exist; returns the tokens added to the vocab.

        Missing control tokens are added as special tokens (so they are never split), which means the caller
        must resize the model's embeddings when the returned list is not empty. A missing eos becomes the
        template's first stop word; a missing pad becomes eos. ``chat_template`` is left alone.
        """
        added: list[str] = []
        if tokenizer.eos_token is None:
            eos = self.stop_words[0] if self.stop_words else FALLBACK_EOS
            added += add_special_tokens(tokenizer, [eos])
            tokenizer.eos_token = eos
            logger.info("template %s: the tokenizer has no eos token; using %s", self.name, eos)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
            logger.info("template %s: the tokenizer has no pad token; using eos %s", self.name, tokenizer.eos_token)
        added += add_special_tokens(tokenizer, [*self.special_tokens, *self.stop_words])
        return added

    def _render_pieces(
        self, tokenizer: "PreTrainedTokenizerBase", messages: list[dict], system: Optional[str], enable_thinking: bool
    ) -> list[str]:
        """Text pieces prompt, reply, prompt, reply, ... (then the generation prompt if the last turn is a user's).

        Their concatenation is the whole rendered conversation, character for character.
        """
        specials = {"bos": tokenizer.bos_token or "", "eos": tokenizer.eos_token or ""}
        system = system or self.default_system
        prompt = self.prefix.format(**specials)
        if system and not self.system_in_first_user:
            prompt += self.system_format.format(content=self._clean(system), **specials)
        last_query = thinking.last_query_index(messages) if self.thinking else -1
        pieces: list[str] = []
        for index, message in enumerate(messages):
            content = message["content"]
            if message["role"] == "user":
                if index == 0 and system and self.system_in_first_user:
                    content = self.system_format.format(content=system, **specials) + content
                prompt += self.user_format.format(content=self._clean(content), **specials)
                continue
            if self.thinking:
                is_last = index == len(messages) - 1
                prompt_tail, content = thinking.render_reply(content, index > last_query, is_last, enable_thinking)
                prompt += prompt_tail
            pieces += [prompt, self.assistant_format.format(content=self._clean(content), **specials)]
            prompt = ""
        if messages[-1]["role"] == "user":
            pieces.append(prompt + self._generation_tail(enable_thinking))
        return pieces

    def _generation_tail(self, enable_thinking: bool) -> str:
        """Text after the assistant header in a generation prompt: Qwen3 pre-fills an empty think block when off."""
        return thinking.EMPTY_THINK_BLOCK if self.thinking and not enable_thinking else ""

    def _clean(self, content: str) -> str:
        return content.strip() if self.strip_content else content


def tokenize_pieces(tokenizer: "PreTrainedTokenizerBase", pieces: list[str]) -> list[list[int]]:
    """Token ids of each piece, cut out of ONE tokenization of the joined text.

    Tokenizing the pieces one by one can give other ids than the whole text: BPE merges across a boundary
    ("assistant\\n" + "\\nHi" is one "\\n\\n" token in the whole text) and SentencePiece adds a prefix space at the
    start of every call. Cutting the whole text's ids at the pieces' character offsets keeps the ids exactly
    those of ``apply_chat_template``; a token that straddles a boundary goes with the piece it starts in, so a
    reply never trains on prompt text.
    """
    text = "".join(pieces)
    if not getattr(tokenizer, "is_fast", False):
        warn_once(f"{type(tokenizer).__name__} gives no character offsets; pieces are tokenized one by one")
        return [tokenizer(piece, add_special_tokens=False)["input_ids"] for piece in pieces]
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    # Offsets only ever grow, but a token with an empty span may report (0, 0); the running max keeps them sorted.
    starts = list(accumulate((start for start, _ in encoding["offset_mapping"]), max))
    ends = list(accumulate(len(piece) for piece in pieces))
    cuts = [0] + [bisect_left(starts, end) for end in ends[:-1]] + [len(starts)]
    ids = encoding["input_ids"]
    return [ids[a:b] for a, b in zip(cuts, cuts[1:])]


def add_special_tokens(tokenizer: "PreTrainedTokenizerBase", tokens: list[str]) -> list[str]:
    """Add the tokens that are not already added tokens of ``tokenizer`` as special tokens; returns those added.

    A string that is only an ordinary BPE entry (Qwen's vocab has "<s>") is still split in running text, so
    "already in the vocab" is not enough: it must be an added token.
    """
    known = tokenizer.get_added_vocab()
    missing = [token for token in dict.fromkeys(tokens) if token not in known]
    if missing:
        tokenizer.add_special_tokens({"extra_special_tokens": missing}, replace_extra_special_tokens=False)
        logger.info("added special tokens %s", missing)
    return missing


def _check_conversation(messages: list[dict], last_role: str) -> None:
    """Templates take alternating user/assistant turns starting with a user turn (system travels separately)."""
    if not messages:
        raise DatasetError("A conversation has no messages.", "Drop empty rows from the dataset.")
    for index, message in enumerate(messages):
        expected = "user" if index % 2 == 0 else "assistant"
        if message.get("role") != expected or not isinstance(message.get("content"), str):
            raise DatasetError(
                f"Message {index} of a conversation has role {message.get('role')!r} and content of type "
                f"{type(message.get('content')).__name__}; expected role {expected!r} with string content.",
                "Conversations must alternate user/assistant turns, starting with user; the system prompt goes "
                "in the separate `system` column. Check the dataset's columns/tags in dataset_info.json.",
            )
    if messages[-1]["role"] != last_role:
        raise DatasetError(
            f"A conversation ends with role {messages[-1]['role']!r} where {last_role!r} was expected.",
            "Training rows must end with an assistant reply; generation prompts must end with a user turn.",
        )
