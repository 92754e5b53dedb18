"""The memorised tiny model (see memorise.py) for the chat, engine and test-tool tests."""

from __future__ import annotations

import pytest

from .memorise import MemorisedRun, memorised_run


@pytest.fixture(scope="session")
def memorised(tmp_path_factory: pytest.TempPathFactory, tiny_qwen2_dir: str) -> MemorisedRun:
    return memorised_run(tmp_path_factory.mktemp("memorised"), tiny_qwen2_dir)


@pytest.fixture(scope="session")
def memorised_engine(memorised: MemorisedRun):
    """A greedy ChatEngine on the memorised model."""
    from llmtuner.model.engine import ChatEngine

    return ChatEngine.from_args({"model_name_or_path": str(memorised.model_dir), "template": "qwen",
                                 "do_sample": False, "max_new_tokens": 48})


@pytest.fixture(scope="session")
def memorised_rows(memorised: MemorisedRun) -> list[dict]:
    import json

    return json.loads(memorised.memorised_file.read_text(encoding="utf-8"))
