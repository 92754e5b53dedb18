"""The ``llmtuner`` command: ``llmtuner <command> [arguments]``.

Every command imports what it needs inside its function, so ``help`` and ``version`` answer without loading
torch, transformers or datasets, and a broken config is reported before they load.
"""

from __future__ import annotations

import difflib
import os
import sys
from typing import Any, Callable

from .extras.errors import ConfigError, LlmtunerError

EXAMPLE = "llmtuner train configs/sft_lora_tiny.yaml learning_rate=1e-4 output_dir=saves/demo"


def run_cli(fn: Callable[..., Any], *args: Any) -> int:
    """Run an entry point and return its exit code; shared by every entry point.

    A user mistake (``LlmtunerError``) prints ``error: ...`` and ``hint: ...`` to stderr and gives exit code 2,
    with no traceback unless LLMTUNER_DEBUG=1 (then it is re-raised). Ctrl-C gives 130. An int returned by
    ``fn`` is the exit code; anything else (e.g. a metrics dict) means success.
    """
    try:
        result = fn(*args)
    except LlmtunerError as exc:
        if os.environ.get("LLMTUNER_DEBUG") == "1":
            raise
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted (Ctrl-C): stopped before finishing.", file=sys.stderr)
        return 130
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


def _train(argv: list[str]) -> int:
    if argv in (["-h"], ["--help"]):
        print(f"usage: llmtuner train <config.yaml> [key=value | --key value ...]\nexample: {EXAMPLE}")
        return 0
    if not argv:
        raise ConfigError("train needs a config file or arguments.", f"For example: {EXAMPLE}")
    from .hparams.parser import read_args

    args = read_args(argv)  # a missing or broken config fails here, before torch is imported
    from .train.tuner import run_exp

    run_exp(args)
    return 0


def _make_tiny_model(argv: list[str]) -> Any:
    from .model.tiny import main as make_tiny_model

    return make_tiny_model(argv)


def _version(argv: list[str]) -> int:
    from .extras.env import library_versions

    for name, version in library_versions().items():
        print(f"{name:<14}{version}")
    return 0


def _help(argv: list[str]) -> int:
    print(usage())
    return 0


# name -> (one-line summary, function taking the remaining argv)
COMMANDS: dict[str, tuple[str, Callable[[list[str]], Any]]] = {
    "train": ("Train (stage pt or sft) from a YAML/JSON config plus key=value or --key value overrides.", _train),
    "make-tiny-model": ("Build a tiny random model with a real tokenizer, for tests and demos.", _make_tiny_model),
    "version": ("Print the versions of llmtuner, python and the libraries it uses.", _version),
    "help": ("Show this message.", _help),
}
_ALIASES = {"-h": "help", "--help": "help", "--version": "version"}


def usage() -> str:
    width = max(len(name) for name in COMMANDS) + 2
    lines = ["usage: llmtuner <command> [arguments]", "", "commands:"]
    lines += [f"  {name:<{width}}{summary}" for name, (summary, _) in COMMANDS.items()]
    lines += ["", "example:", f"  {EXAMPLE}", "", "Set LLMTUNER_DEBUG=1 to see the traceback behind an error."]
    return "\n".join(lines)


def _unknown_command(name: str) -> None:
    close = difflib.get_close_matches(name, list(COMMANDS), n=1)
    guess = f"Did you mean `llmtuner {close[0]}`? " if close else ""
    raise ConfigError(f"Unknown command {name!r}.",
                      f"{guess}Commands: {', '.join(COMMANDS)}. Run `llmtuner help` for details.")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``llmtuner`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        return _help([])
    command = _ALIASES.get(argv[0], argv[0])
    if command not in COMMANDS:
        return run_cli(_unknown_command, command)
    return run_cli(COMMANDS[command][1], argv[1:])


if __name__ == "__main__":
    sys.exit(main())
