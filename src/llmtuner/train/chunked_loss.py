"""Causal-LM cross-entropy without the full logits tensor (``chunked_loss: true``).

The plain path multiplies every position's hidden state by the output head, keeps the float32 logits
(batch x length x vocabulary: 1.2 GB for 4 x 512 tokens and Qwen's 151,669-token vocabulary), a softmax of the
same size for backward, and a gradient of the same size again. Here the head runs only at positions that are
trained (prompt and padding positions have label -100 and no loss), a chunk of rows at a time, and each chunk's
gradients with respect to the hidden states (and the head's weight, when it trains) are formed right away from
``softmax - one_hot``, so at most one chunk of logits exists at a time. The loss and the gradients equal the plain
path's: the same sum over trained tokens divided by the same count (checked in tests/perf/test_chunked_loss.py).
It is the idea of Liger's fused linear cross-entropy, written with plain PyTorch ops so it runs on CPUs too.

Used by the Trainer only for training steps of one process, with a plain ``nn.Linear`` head on the model types
listed in ``SUPPORTED_MODEL_TYPES`` (others add terms to the loss or scale logits); anything else keeps the
model's own loss, with one log line saying why.
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from ..extras.constants import IGNORE_INDEX
from ..extras.logging import get_logger

logger = get_logger(__name__)

SUPPORTED_MODEL_TYPES = ("qwen2", "qwen3", "llama", "mistral")
# logits per chunk (128 MiB in float32): rows = CHUNK_ELEMENTS // vocabulary. 32 MiB chunks (55 rows of a 151k
# vocabulary) made a step of the tiny Qwen model 20% slower than the full logits (docs/performance.md).
CHUNK_ELEMENTS = 2**25


def linear_cross_entropy_sum(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                             chunk_rows: Optional[int] = None) -> torch.Tensor:
    """Sum over rows of cross_entropy(hidden @ weight.T, targets), in float32, with gradients for ``hidden``
    and ``weight`` (when they require them). ``hidden`` is (rows, hidden size), ``weight`` (vocabulary, hidden
    size), ``targets`` (rows,) of class ids; no ignored rows (select them out first)."""
    rows = chunk_rows or max(1, CHUNK_ELEMENTS // weight.shape[0])
    return _LinearCrossEntropy.apply(hidden, weight, targets, rows)


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk_rows):
        needs_hidden, needs_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.empty_like(hidden) if needs_hidden else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if needs_weight else None
        for start in range(0, hidden.shape[0], chunk_rows):
            chunk, chunk_targets = hidden[start : start + chunk_rows], targets[start : start + chunk_rows]
            logits = (chunk @ weight.T).float()
            log_norm = torch.logsumexp(logits, dim=-1)
            total += (log_norm - logits.gather(1, chunk_targets[:, None]).squeeze(1)).sum()
            if needs_hidden or needs_weight:
                # d(sum of cross-entropy) / d(logits) = softmax - one_hot, built in the logits' own memory
                grad_logits = logits.sub_(log_norm[:, None]).exp_()
                grad_logits[torch.arange(len(chunk_targets), device=hidden.device), chunk_targets] -= 1
                if needs_hidden:
                    grad_hidden[start : start + chunk_rows] = grad_logits.to(hidden.dtype) @ weight
                if needs_weight:
                    grad_weight.addmm_(grad_logits.T, chunk.float())
        ctx.weight_dtype = weight.dtype
        ctx.save_for_backward(grad_hidden, grad_weight)
        return total

    @staticmethod
    def backward(ctx, grad_total):
        grad_hidden, grad_weight = ctx.saved_tensors
        return (
            None if grad_hidden is None else grad_hidden * grad_total.to(grad_hidden.dtype),
            None if grad_weight is None else (grad_weight * grad_total).to(ctx.weight_dtype),
            None,
            None,
        )


def causal_lm_loss_sum(decoder: torch.nn.Module, head: torch.nn.Linear, inputs: dict[str, Any]
                       ) -> tuple[torch.Tensor, int]:
    """(sum of next-token cross-entropy over trained positions, number of them) for one batch: the decoder's
    last hidden states shifted against ``labels``, as transformers' ForCausalLMLoss shifts them."""
    labels = inputs["labels"]
    model_inputs = {"use_cache": False, **{key: value for key, value in inputs.items() if key != "labels"}}
    hidden = decoder(**model_inputs).last_hidden_state
    shifted = labels[:, 1:]
    trained = shifted != IGNORE_INDEX
    selected = hidden[:, :-1][trained]
    return linear_cross_entropy_sum(selected, head.weight, shifted[trained]), int(trained.sum())


def unsupported_reason(model: Any, training_args: Any) -> Optional[str]:
    """Why chunked_loss cannot run for this model and run, or None when it can."""
    from ..extras.processes import world_size

    if world_size() > 1 or training_args.deepspeed:
        return "it runs in one process without DeepSpeed only (the decoder is called directly, past DDP / ZeRO)"
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    model_type = getattr(base.config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        return f"model_type {model_type!r} is not one of {', '.join(SUPPORTED_MODEL_TYPES)}"
    head = base.get_output_embeddings()
    if type(head) is not torch.nn.Linear or head.bias is not None:
        return "the output head is not a plain bias-free nn.Linear (LoRA or modules_to_save on lm_head)"
    return None


class ChunkedLossMixin:
    """Put before a ``transformers.Trainer`` class: when ``self.chunked_loss`` is true, training steps use
    ``causal_lm_loss_sum``; evaluation and prediction keep the model's own loss (they need the logits)."""

    chunked_loss: bool = False

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # noqa: ANN001, ANN201
        if not self.chunked_loss or return_outputs or not model.training or "labels" not in inputs:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        loss_sum, trained = causal_lm_loss_sum(base.get_decoder(), base.get_output_embeddings(), inputs)
        # The Trainer divides by the accumulation steps unless the loss was normalised by num_items_in_batch
        # (which it passes when the model takes loss kwargs): divide as the model's own loss would.
        if self.model_accepts_loss_kwargs and num_items_in_batch is not None:
            return loss_sum / num_items_in_batch
        return loss_sum / max(trained, 1)
