"""README.md tells the truth: its flag reference matches the dataclasses, and CI runs its test command."""

from __future__ import annotations

import subprocess
import sys


def test_flag_reference_is_current(repo_root):
    readme = (repo_root / "README.md").read_text(encoding="utf-8")
    tables = subprocess.run(
        [sys.executable, "scripts/flag_reference.py"], cwd=repo_root, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert tables in readme, "run: python scripts/flag_reference.py --update README.md"


def test_ci_runs_the_readme_test_command(repo_root):
    readme = (repo_root / "README.md").read_text(encoding="utf-8")
    ci = (repo_root / ".ci" / "run").read_text(encoding="utf-8")
    command = "python -m pytest -q tests"
    assert f"```bash\n{command}\n```" in readme
    assert ci.rstrip().splitlines()[-1] == command
