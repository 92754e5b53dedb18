"""llmtuner: fine-tune large language models (pt / sft) with LoRA, freeze or full tuning, offline."""

__version__ = "0.1.0"
