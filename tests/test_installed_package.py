"""llmtuner as `pip install .` leaves it: a wheel installed outside the repository, run from another folder.

The other tests import src/ through the editable install, where a missing package-data entry or a path counted from
the repository (``Path(__file__).parents[3] / "data"``) still works. Here only the installed copy is importable.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "llmtuner"


def _run(args: list[str], site: Path, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site)}  # the installed copy only; not src/
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """site-packages folder holding llmtuner built as a wheel from a copy of the sources (pip builds in the source
    tree, so the copy keeps build/ and *.egg-info out of the working tree other runs share)."""
    import importlib.util

    # Offline, so the build runs without isolation on this environment's setuptools (pyproject's build backend).
    assert importlib.util.find_spec("setuptools"), "pip install 'setuptools>=70' to build the wheel offline"
    root = tmp_path_factory.mktemp("installed")
    source = root / "source"
    shutil.copytree(PACKAGE.parent, source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(root / "wheel"), str(source)], root, root)
    wheels = list((root / "wheel").glob("llmtuner-*.whl"))
    assert len(wheels) == 1, wheels
    _run([*pip, "install", "--no-deps", "--target", str(root / "site"), str(wheels[0])], root, root)
    return root / "site"


@pytest.fixture(scope="module")
def elsewhere(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A working folder outside the repository: no data/, configs/ or src/ beside it."""
    return tmp_path_factory.mktemp("user-folder")


def test_no_module_finds_files_from_its_own_path():
    # Package data is read with importlib.resources (model/chat_template.py, eval/benchmarks.py), which works in any
    # installed copy; a path counted from __file__ is how repository-relative lookups (parents[3] / "data") creep in.
    uses = [f"{path.relative_to(PACKAGE)}:{number}" for path in sorted(PACKAGE.rglob("*.py"))
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
            if re.search(r"\b__file__\b", line)]
    assert uses == [], "read package files with importlib.resources.files('llmtuner...'), not from __file__"


@pytest.mark.slow
def test_the_installed_copy_is_imported_and_carries_every_data_file(installed, elsewhere):
    location = _run([sys.executable, "-c", "import llmtuner; print(llmtuner.__file__)"], installed, elsewhere)
    assert Path(location.stdout.strip()).is_relative_to(installed / "llmtuner")
    # Every non-Python file under src/llmtuner is package data some module opens (chat templates, benchmark
    # mappings, the tiny BERT's vocabulary): each must be in the wheel, listed in [tool.setuptools.package-data].
    data_files = {path.relative_to(PACKAGE) for path in PACKAGE.rglob("*")
                  if path.is_file() and path.suffix not in {".py", ".pyc"} and "__pycache__" not in path.parts}
    assert data_files, "expected package data under src/llmtuner"
    assert sorted(str(file) for file in data_files if not (installed / "llmtuner" / file).is_file()) == []
    version = _run([str(installed / "bin" / "llmtuner"), "version"], installed, elsewhere)
    assert version.stdout.startswith("llmtuner")


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["bert", "qwen2"])
def test_make_tiny_model_runs_from_the_installed_package(installed, elsewhere, arch):
    out = elsewhere / f"tiny-{arch}"
    result = _run([sys.executable, "-m", "llmtuner.cli", "make-tiny-model", "--arch", arch, "--out", str(out)],
                  installed, elsewhere)
    assert f"wrote tiny {arch} model to {out}" in result.stdout
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()


@pytest.mark.slow
def test_repository_script_builds_the_tiny_bert_with_the_installed_package(installed, elsewhere):
    out = elsewhere / "script-bert"
    result = _run([sys.executable, str(REPO / "scripts" / "make_tiny_model.py"), "--arch", "bert", "--out", str(out)],
                  installed, elsewhere)
    assert f"wrote tiny bert model to {out}" in result.stdout
