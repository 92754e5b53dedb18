"""Attention per sample for packed rows on CPU: ``llmtuner_packed_sdpa``.

With sdpa, a packed row is attended as a whole: ``masking_utils`` builds a block-diagonal causal mask and every
layer computes all L x L scores, most of them masked. This implementation runs causal sdpa once per sample instead,
on the boundaries the collator sends as ``cu_seq_lens_q`` (the flash-attention varlen keyword arguments of
``DataCollatorWithFlattening``, which transformers passes through to the attention function). Measured by
``scripts/bench_packed_attention.py`` (docs/performance.md).

Without ``cu_seq_lens_q`` (unpacked rows, generation) it *is* sdpa: the same function with the mask of
transformers' own ``sdpa_mask``, which is always the right mask (packed rows included), so this fallback can never
let samples see each other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from ..extras.constants import PACKED_SDPA_ATTENTION
from ..extras.logging import get_logger

if TYPE_CHECKING:
    import torch

logger = get_logger(__name__)


def packed_sdpa_attention_forward(
    module: "torch.nn.Module",
    query: "torch.Tensor",
    key: "torch.Tensor",
    value: "torch.Tensor",
    attention_mask: Optional["torch.Tensor"],
    dropout: float = 0.0,
    scaling: Optional[float] = None,
    cu_seq_lens_q: Optional["torch.Tensor"] = None,
    **kwargs: Any,
) -> tuple["torch.Tensor", None]:
    """Causal sdpa per sample of a flattened packed row (query: 1 x heads x tokens x dim); plain sdpa otherwise."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    tokens = query.shape[2]
    if cu_seq_lens_q is None or query.shape[0] != 1 or int(cu_seq_lens_q[-1]) != tokens:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    bounds = cu_seq_lens_q.tolist()
    parts = [
        torch.nn.functional.scaled_dot_product_attention(
            query[:, :, start:end], key[:, :, start:end], value[:, :, start:end],
            dropout_p=dropout, scale=scaling, is_causal=True, enable_gqa=key.shape[1] != query.shape[1],
        )
        for start, end in zip(bounds, bounds[1:])
    ]
    return torch.cat(parts, dim=2).transpose(1, 2).contiguous(), None


def register_packed_attention() -> str:
    """Register ``llmtuner_packed_sdpa`` with transformers (attention and mask function); returns its name."""
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import sdpa_mask

    AttentionInterface.register(PACKED_SDPA_ATTENTION, packed_sdpa_attention_forward)
    AttentionMaskInterface.register(PACKED_SDPA_ATTENTION, sdpa_mask)
    return PACKED_SDPA_ATTENTION


def attention_for_training(requested: str, packed_rows: bool) -> str:
    """Per-sample sdpa for packed rows trained with sdpa on CPU; the requested implementation otherwise (eager and
    flash attention are honoured, and a GPU keeps sdpa's own kernels)."""
    import torch

    if not packed_rows or requested != "sdpa" or torch.cuda.is_available():
        return requested
    logger.info("packed rows: attention per sample (llmtuner_packed_sdpa: causal sdpa once per sample on CPU, "
                "instead of the whole row under a block-diagonal mask).")
    return register_packed_attention()
