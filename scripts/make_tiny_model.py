"""Write a tiny randomly initialised model with the real Qwen tokenizer (offline), for tests and smoke runs.

Usage: python scripts/make_tiny_model.py --arch qwen2|qwen3|llama --out DIR [--seed N] [--overwrite]
Same as `llmtuner make-tiny-model`; both call llmtuner.model.tiny.main.
"""

from llmtuner.model.tiny import main

if __name__ == "__main__":
    raise SystemExit(main())
