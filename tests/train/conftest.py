"""Fixtures of the forgetting-aware training tests: a tiny benchmark in the MMLU layout, written into tmp."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

SUBJECTS = ("anatomy", "astronomy")


def write_tiny_mmlu(root: Path, questions: int = 6) -> Path:
    """``root/mmlu/data/{dev,test}/<subject>_<split>.csv`` (no header: question,A,B,C,D,answer); returns root."""
    for split, count in (("dev", 1), ("test", questions)):
        folder = root / "mmlu" / "data" / split
        folder.mkdir(parents=True, exist_ok=True)
        for s, subject in enumerate(SUBJECTS):
            with open(folder / f"{subject}_{split}.csv", "w", encoding="utf-8", newline="") as f:
                writer = csv.writer(f)
                for i in range(count):
                    writer.writerow([f"{subject} question {i} of {split}: which is {i + s}?", f"{i}", f"{i + s}",
                                     f"{i * 2}", f"{i + 7}", "ABCD"[(i + s) % 4]])
    return root


@pytest.fixture(scope="session")
def tiny_mmlu(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_mmlu(tmp_path_factory.mktemp("tiny-mmlu"))
