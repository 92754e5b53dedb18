"""Write a tiny randomly initialised model with the real Qwen tokenizer (offline), for tests and smoke runs.

Usage: python scripts/make_tiny_model.py --arch qwen2|qwen3|llama|bert --out DIR [--seed N] [--overwrite]
                                         [--corpus FILE ...]
(bert: a tiny encoder with a WordPiece vocabulary counted from data/, shipped as src/llmtuner/model/vocab/tiny_bert.txt,
for stage cls; --corpus counts one from other files)
Same as `llmtuner make-tiny-model`; both call llmtuner.model.tiny.main.

Maintainers, after the sample data in data/ changed (tests/cls/test_tiny_bert.py says when):
    python scripts/make_tiny_model.py --refresh-bert-vocab
recounts the shipped vocabulary from data/ (this needs the checkout, which is why it is not a CLI option).
"""

import sys
from pathlib import Path

from llmtuner.model.tiny import main
from llmtuner.model.tiny_tokenizer import BERT_CORPUS_FILES, BERT_VOCAB_RESOURCE, count_bert_vocab

REPO = Path(__file__).resolve().parents[1]


def refresh_bert_vocab() -> Path:
    """Recount the tiny BERT's vocabulary from the repository's sample data into the package data file."""
    tokens = count_bert_vocab([str(REPO / "data" / name) for name in BERT_CORPUS_FILES])
    target = REPO.joinpath("src", "llmtuner", "model", *BERT_VOCAB_RESOURCE)
    target.parent.mkdir(exist_ok=True)
    target.write_text("".join(f"{token}\n" for token in tokens), encoding="utf-8")
    return target


if __name__ == "__main__":
    if sys.argv[1:] == ["--refresh-bert-vocab"]:
        print(f"wrote {refresh_bert_vocab()}")
        raise SystemExit(0)
    raise SystemExit(main())
