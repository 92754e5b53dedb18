"""Turn tokenised rows into model batches: padded samples, or packed rows whose samples cannot see each other.

Unpacked rows are padded to the longest row of the batch (``DataCollatorForSeq2Seq``, to a multiple of 8 on GPU
for tensor cores). Packed rows (``preprocess/packing.py``; they carry ``position_ids``) rely on what transformers
does natively with position ids that restart at 0 for each sample and no 2D ``attention_mask``:

- sdpa / eager / flex: ``masking_utils`` finds the samples from the positions and builds a block-diagonal causal
  mask, so padding only lengthens the row and attention never crosses a sample boundary;
- flash attention and ``llmtuner_packed_sdpa`` (CPU training, model/packed_attention.py): the batch is flattened
  into one row without padding by ``DataCollatorWithFlattening``, whose ``cu_seq_lens`` make flash attention run
  varlen and the per-sample sdpa run once per sample.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional, Sequence

from ..extras.constants import IGNORE_INDEX, PACKED_SDPA_ATTENTION
from .preprocess.packing import split_packed_row

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizer


def pad_width(longest: int, multiple: Optional[int]) -> int:
    """``longest`` rounded up to a multiple of ``multiple`` (unchanged when ``multiple`` is None)."""
    return longest if not multiple else -(-longest // multiple) * multiple


@dataclass
class SupervisedDataCollator:
    """Batches rows of ``input_ids`` / ``labels`` (plus ``position_ids`` when packed) for causal LM training."""

    tokenizer: "PreTrainedTokenizer"
    pad_to_multiple_of: Optional[int] = None
    attn_implementation: str = "sdpa"
    _padded: Any = field(init=False, repr=False)
    _flattened: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        from transformers import DataCollatorForSeq2Seq, DataCollatorWithFlattening

        self._padded = DataCollatorForSeq2Seq(
            self.tokenizer, pad_to_multiple_of=self.pad_to_multiple_of, label_pad_token_id=IGNORE_INDEX
        )
        self._flattened = DataCollatorWithFlattening(return_flash_attn_kwargs=True, separator_id=IGNORE_INDEX)

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, Any]:
        if "position_ids" not in features[0]:
            return self._padded(list(features))
        # flash_attention_2/3, kernels-hub flash variants, and our per-sample sdpa all run on cu_seq_lens
        if "flash" in self.attn_implementation or self.attn_implementation == PACKED_SDPA_ATTENTION:
            batch = self._flattened([sample for row in features for sample in split_packed_row(row)])
        else:
            batch = self._pad_packed(features)
        # transformers only honours restarting positions when no KV cache is passed; a model whose config still
        # says use_cache=True would build one and silently let packed samples attend to each other.
        batch["use_cache"] = False
        return batch

    def _pad_packed(self, features: Sequence[dict[str, Any]]) -> dict[str, "torch.Tensor"]:
        """Packed rows padded to the longest; the padding gets positions 0, 1, ... so it forms its own segment."""
        import torch

        width = pad_width(max(len(row["input_ids"]) for row in features), self.pad_to_multiple_of)
        pad_id = self.tokenizer.pad_token_id
        input_ids, labels, positions = [], [], []
        for row in features:
            missing = width - len(row["input_ids"])
            input_ids.append(list(row["input_ids"]) + [pad_id] * missing)
            labels.append(list(row["labels"]) + [IGNORE_INDEX] * missing)
            positions.append(list(row["position_ids"]) + list(range(missing)))
        return {
            "input_ids": torch.tensor(input_ids, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long),
            "position_ids": torch.tensor(positions, dtype=torch.long),
        }
