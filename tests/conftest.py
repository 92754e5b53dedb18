"""Fixtures shared by the whole test suite: repo paths and the offline Qwen tokenizer + tiny models.

Everything heavy is session-scoped and built once per test run. The tokenizer and model directories are shared
between tests: treat them as read-only (copy a model directory before writing into it).
"""

from __future__ import annotations

import logging

from pathlib import Path

import pytest

from llmtuner.model.tiny import build_qwen_tokenizer, make_tiny_model

from .shared_files import require_shared

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository checkout (the folder holding pyproject.toml)."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """Reference data (corpora/, chat_templates/, benchmarks/) that CI checks out as ../shared beside the clone."""
    return require_shared()  # skips on a fresh clone without ../shared; fails under CI=true


@pytest.fixture(scope="session")
def qwen_tokenizer():
    """The real Qwen2.5/Qwen3 tokenizer rebuilt offline (no chat template). Do not mutate it."""
    return build_qwen_tokenizer()


def _tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, arch: str) -> str:
    return make_tiny_model(arch, str(tmp_path_factory.mktemp("tiny-models", numbered=True) / arch))


@pytest.fixture(scope="session")
def tiny_qwen2_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny random Qwen2ForCausalLM with the Qwen tokenizer and the Qwen2.5-Instruct chat template."""
    return _tiny_model_dir(tmp_path_factory, "qwen2")


@pytest.fixture(scope="session")
def tiny_qwen3_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny random Qwen3ForCausalLM with the Qwen tokenizer and the Qwen3 (thinking) chat template."""
    return _tiny_model_dir(tmp_path_factory, "qwen3")


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny random LlamaForCausalLM with the Qwen vocab + Llama-3 chat tokens and the Llama-3 chat template."""
    return _tiny_model_dir(tmp_path_factory, "llama")


@pytest.fixture(scope="session")
def qwen2_tokenizer(qwen_tokenizer):
    """The tiny qwen2/qwen3 models ship this exact tokenizer; load_model only reads its length."""
    return qwen_tokenizer


@pytest.fixture
def llmtuner_logs(caplog):
    """llmtuner's logger does not propagate to the root logger, so hook caplog onto it directly."""
    root = logging.getLogger("llmtuner")
    root.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger="llmtuner")
    yield caplog
    root.removeHandler(caplog.handler)


@pytest.fixture(autouse=True)
def _isolated_environment():
    """Each test leaves os.environ as it found it.

    `prepare_process(uses_deepspeed=True)` (cli.py) writes the single-process rendezvous variables (WORLD_SIZE=1,
    MASTER_PORT=...) straight into os.environ, which monkeypatch.delenv does not undo for a variable that was
    unset before. Leaked, every later subprocess inherited WORLD_SIZE and opened a process group on that port.
    """
    import os

    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)
