"""README.md and docs/ tell the truth: the flag reference matches the dataclasses, and CI runs the test commands."""

from __future__ import annotations

import subprocess
import sys

TEST_COMMANDS = ['python -m pytest -q tests -m "not slow"', "python -m pytest -q tests -m slow"]


def test_flag_reference_is_current(repo_root):
    flags = (repo_root / "docs" / "flags.md").read_text(encoding="utf-8")
    tables = subprocess.run(
        [sys.executable, "scripts/flag_reference.py"], cwd=repo_root, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert tables in flags, "run: python scripts/flag_reference.py --update docs/flags.md"


def test_ci_runs_the_readme_test_commands(repo_root):
    readme = (repo_root / "README.md").read_text(encoding="utf-8")
    ci_lines = (repo_root / ".ci" / "run").read_text(encoding="utf-8").rstrip().splitlines()
    for command in TEST_COMMANDS:
        assert f"```bash\n{command}\n```" in readme, command
    assert ci_lines[-2:] == TEST_COMMANDS
    assert "export CI=true" in ci_lines  # a missing ../shared fails in CI instead of skipping
