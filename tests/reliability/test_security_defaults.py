"""Security defaults: no remote code unless asked, no pickles written or loaded unsafely, safetensors weights.

(Dataset paths that climb out of dataset_dir through '..' are refused: tests/bad_inputs, case
registry_path_escapes_dataset_dir, and tests/data/test_registry.py.)
"""

from __future__ import annotations

import re
from pathlib import Path

from llmtuner.hparams import ModelArguments

SRC = Path(__file__).resolve().parents[2] / "src"
# Torch-format files transformers writes into checkpoints for resuming and reads back with weights_only=True.
CHECKPOINT_TORCH_FILES = {"optimizer.pt", "scheduler.pt", "rng_state.pth", "scaler.pt"}


def _python_sources() -> dict[Path, str]:
    return {path: path.read_text(encoding="utf-8") for path in SRC.rglob("*.py")}


def test_trust_remote_code_is_off_unless_set():
    assert ModelArguments().trust_remote_code is False
    hard_coded = [path for path, text in _python_sources().items() if re.search(r"trust_remote_code\s*=\s*True", text)]
    assert not hard_coded


def test_no_unsafe_deserialisation_in_the_code():
    offenders = []
    for path, text in _python_sources().items():
        for call in re.finditer(r"torch\.load\((?:[^()]|\([^()]*\))*\)", text):
            if "weights_only=True" not in call.group(0):
                offenders.append(f"{path}: {call.group(0)}")
        offenders += [f"{path}: {name}" for name in re.findall(r"\b(?:pickle|dill|joblib)\.loads?\(", text)]
        offenders += [f"{path}: safe_serialization=False" for _ in re.findall(r"safe_serialization\s*=\s*False", text)]
    assert not offenders


def test_a_run_writes_weights_as_safetensors_and_no_pickles(reference_run):
    top_level = {path.name for path in reference_run.iterdir() if path.is_file()}
    assert "adapter_model.safetensors" in top_level
    assert not {name for name in top_level if name.endswith((".bin", ".pt", ".pth", ".pkl", ".pickle"))}
    checkpoints = [path for path in reference_run.iterdir() if path.name.startswith("checkpoint-")]
    assert checkpoints
    for checkpoint in checkpoints:
        names = {path.name for path in checkpoint.iterdir()}
        assert "adapter_model.safetensors" in names
        pickled = {name for name in names if name.endswith((".bin", ".pt", ".pth", ".pkl", ".pickle"))}
        assert pickled <= CHECKPOINT_TORCH_FILES, pickled
