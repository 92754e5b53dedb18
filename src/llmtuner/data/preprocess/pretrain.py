"""pt: texts joined with EOS and cut into cutoff_len blocks; every token is trained."""

from __future__ import annotations

from itertools import chain
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizer

    from ...hparams import DataArguments


def preprocess_pretrain_dataset(
    examples: dict[str, list[Any]],
    tokenizer: "PreTrainedTokenizer",
    data_args: "DataArguments",
) -> dict[str, list[Any]]:
    """Batched ``datasets.map`` function.

    Each document ends with EOS so the model learns where documents stop; documents start with BOS when the
    tokenizer has one (Llama-style). The tail shorter than ``cutoff_len`` is kept as a last, shorter block
    rather than dropped, so small corpora are not silently lost.
    """
    bos = tokenizer.bos_token or ""
    texts = [
        bos + "\n".join(message["content"] for message in messages) + tokenizer.eos_token
        for messages in examples["messages"]
    ]
    token_ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    stream = list(chain.from_iterable(token_ids))
    block = data_args.cutoff_len
    blocks = [stream[start : start + block] for start in range(0, len(stream), block)]
    return {"input_ids": blocks, "attention_mask": [[1] * len(b) for b in blocks], "labels": [list(b) for b in blocks]}
