"""The `llmtuner` command, the shared error handler and src/train_bash.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmtuner import __version__
from llmtuner.cli import COMMANDS, main, run_cli
from llmtuner.extras.errors import ConfigError, DependencyError

REPO = Path(__file__).resolve().parents[1]
HEAVY_MODULES = ("torch", "transformers", "datasets")


def run_python(*args: str, env_debug: bool = False) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "LLMTUNER_DEBUG"}
    if env_debug:
        env["LLMTUNER_DEBUG"] = "1"
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def run_main_and_list_heavy_imports(argv: list[str]) -> subprocess.CompletedProcess:
    code = (
        "import sys, llmtuner.cli\n"
        f"code = llmtuner.cli.main({argv!r})\n"
        f"print('heavy:', [m for m in {HEAVY_MODULES!r} if m in sys.modules], 'exit:', code)\n"
    )
    return run_python("-c", code)


def test_version_lists_libraries_without_importing_them():
    result = run_main_and_list_heavy_imports(["version"])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["llmtuner", __version__]
    names = [line.split()[0] for line in lines[1:-1]]
    assert names[:5] == ["python", "torch", "transformers", "peft", "trl"]
    assert lines[-1] == "heavy: [] exit: 0"


@pytest.mark.parametrize("argv", [["--help"], ["-h"], ["help"], []])
def test_help_lists_commands_without_heavy_imports(argv):
    result = run_main_and_list_heavy_imports(argv)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: llmtuner <command> [arguments]\n")
    for name, (summary, _) in COMMANDS.items():
        assert f"  {name}" in result.stdout and summary in result.stdout
    assert "example:\n  llmtuner train configs/sft_lora_tiny.yaml" in result.stdout
    assert result.stdout.rstrip().endswith("heavy: [] exit: 0")


def test_unknown_command_exits_2_with_error_and_hint():
    result = run_python("-m", "llmtuner.cli", "trian", "cfg.yaml")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "error: Unknown command 'trian'.",
        f"hint: Did you mean `llmtuner train`? Commands: {', '.join(COMMANDS)}. "
        "Run `llmtuner help` for details.",
    ]
    assert result.stdout == ""


def test_train_with_a_missing_config_fails_fast_without_traceback():
    result = run_python("-m", "llmtuner.cli", "train", "missing.yaml", "lora_rank=4")
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert lines[0] == "error: Config file missing.yaml does not exist."
    assert lines[1].startswith("hint: Check the path")
    assert "Traceback" not in result.stderr


def test_train_config_errors_are_reported_before_torch_loads():
    result = run_main_and_list_heavy_imports(["train", "missing.yaml"])
    assert result.stdout.strip() == "heavy: [] exit: 2"


def test_train_without_arguments_explains_how():
    result = run_main_and_list_heavy_imports(["train"])
    assert result.stderr.splitlines()[0] == "error: train needs a config file or arguments."
    assert result.stdout.strip() == "heavy: [] exit: 2"


def test_debug_mode_shows_the_traceback():
    result = run_python("-m", "llmtuner.cli", "train", "missing.yaml", env_debug=True)
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "ConfigError: Config file missing.yaml does not exist." in result.stderr


def test_train_bash_drops_the_deepspeed_local_rank_and_reports_errors():
    result = run_python("src/train_bash.py", "--local_rank=0", "missing.yaml", "seed=1")
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines()[-2:] == [
        "error: Config file missing.yaml does not exist.",
        f"hint: Check the path; relative paths start from the current folder ({REPO}).",
    ]


def test_train_bash_is_thin():
    assert len((REPO / "src" / "train_bash.py").read_text(encoding="utf-8").splitlines()) <= 15


# ---- run_cli in process ----

def test_run_cli_prints_error_and_hint(capsys, monkeypatch):
    monkeypatch.delenv("LLMTUNER_DEBUG", raising=False)

    def fail(name):
        raise DependencyError(f"`{name}` is needed for report_to: wandb.", "Install it with: pip install wandb")

    assert run_cli(fail, "wandb") == 2
    captured = capsys.readouterr()
    assert captured.err == "error: `wandb` is needed for report_to: wandb.\nhint: Install it with: pip install wandb\n"
    assert captured.out == ""


def test_run_cli_reraises_in_debug_mode(monkeypatch):
    monkeypatch.setenv("LLMTUNER_DEBUG", "1")

    def fail():
        raise ConfigError("bad", "fix it")

    with pytest.raises(ConfigError, match="bad"):
        run_cli(fail)


def test_run_cli_ctrl_c_exits_130(capsys):
    def interrupted():
        raise KeyboardInterrupt

    assert run_cli(interrupted) == 130
    assert capsys.readouterr().err == "interrupted (Ctrl-C): stopped before finishing.\n"


@pytest.mark.parametrize("returned, code", [(None, 0), ({"train_loss": 1.0}, 0), (3, 3), (True, 0)])
def test_run_cli_exit_code_from_the_return_value(returned, code):
    assert run_cli(lambda: returned) == code


def test_version_in_process(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.splitlines()[0].split() == ["llmtuner", __version__]
