"""Load the tokenizer and the model from a local folder and apply LoRA / freeze / full tuning.

Importing this package stays free of torch; the heavy imports happen when a loader function runs.
"""

from .loader import check_adapter_path, check_model_path, load_model, load_tokenizer

__all__ = ["check_adapter_path", "check_model_path", "load_model", "load_tokenizer"]
