"""Fixtures of the web UI tests, shared with the evaluation and cls tests (built once per session)."""

from ..cls.conftest import lora_run, tiny_bert_dir  # noqa: F401  (a trained tiny classifier run)
from ..eval.conftest import benchmarks_dir, lora_adapter_dir  # noqa: F401  (benchmark files, a random adapter)
