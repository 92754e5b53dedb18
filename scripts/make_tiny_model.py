"""Write a tiny randomly initialised model with the real Qwen tokenizer (offline), for tests and smoke runs.

Usage: python scripts/make_tiny_model.py --arch qwen2|qwen3|llama|bert --out DIR [--seed N] [--overwrite]
(bert: a tiny encoder with a WordPiece vocabulary counted from data/, for stage cls)
Same as `llmtuner make-tiny-model`; both call llmtuner.model.tiny.main.
"""

from llmtuner.model.tiny import main

if __name__ == "__main__":
    raise SystemExit(main())
