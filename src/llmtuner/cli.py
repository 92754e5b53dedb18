"""The ``llmtuner`` command: ``llmtuner <command> [arguments]``.

Every command imports what it needs inside its function, so ``help`` and ``version`` answer without loading
torch, transformers or datasets, and a broken config is reported before they load.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Optional

from .extras.errors import ConfigError, LlmtunerError, RunStopped
from .extras.suggest import closest_names

EXAMPLE = "llmtuner train configs/sft_lora_tiny.yaml learning_rate=1e-4 output_dir=saves/demo"


def run_cli(fn: Callable[..., Any], *args: Any) -> int:
    """Run an entry point and return its exit code; shared by every entry point.

    A user mistake (``LlmtunerError``) prints ``error: ...`` and ``hint: ...`` to stderr and gives exit code 2,
    with no traceback unless LLMTUNER_DEBUG=1 (then it is re-raised). A run stopped on purpose (``RunStopped``,
    e.g. training stopped by SIGTERM after saving a checkpoint) gives its own code (128 + signal). Ctrl-C gives
    130. An int returned by ``fn`` is the exit code; anything else (e.g. a metrics dict) means success.
    """
    from .extras.logging import quiet_unused_deepspeed

    quiet_unused_deepspeed(sys.argv)
    try:
        result = fn(*args)
    except RunStopped as exc:  # the library already told the user what happened and how to continue
        return exc.exit_code
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


def env_defaults() -> dict[str, Any]:
    """Arguments that environment variables switch off for every run (a key the user set wins):
    ``LLMTUNER_MALLOC_TUNING=0`` -> ``malloc_tuning: false``."""
    return {"malloc_tuning": False} if os.environ.get("LLMTUNER_MALLOC_TUNING") == "0" else {}


def prepare_process(uses_deepspeed: bool = False) -> None:
    """The process-wide settings of a run, made here once (library code never changes the process):

    - DeepSpeed without a launcher: the single-process rendezvous variables it needs (RANK, MASTER_PORT, ...);
    - a multi-process CPU run: OMP_NUM_THREADS = this rank's share of the cores (also for worker processes
      started later, e.g. by datasets.map), unless the user set it;
    - ranks other than 0: no progress bars, info logs or Python warnings (rank 0 shows the same ones). datasets'
      bars stay on: those ranks read rank 0's cached preprocessing, so a bar from them means they tokenised again;
    - DeepSpeed runs: torch's deprecation notices for the collectives DeepSpeed calls, repeated every ZeRO-3 step,
      are hidden (``silence_deepspeed_deprecations``).
    """
    from .extras.distributed import rank_cpu_threads, rendezvous_variables, silence_deepspeed_deprecations
    from .extras.processes import is_main_process, world_size

    if uses_deepspeed:
        silence_deepspeed_deprecations()
    os.environ.update(rendezvous_variables(uses_deepspeed))
    threads = rank_cpu_threads()
    if threads:  # None when the user set OMP_NUM_THREADS or there is one process
        from .extras.processes import local_world_size
        from .extras.logging import get_logger

        os.environ["OMP_NUM_THREADS"] = str(threads)
        get_logger(__name__).info(f"OMP_NUM_THREADS is not set: {threads} CPU thread(s) for each of the "
                                  f"{local_world_size()} local processes (set OMP_NUM_THREADS to choose).")
    if world_size() > 1 and not is_main_process():
        import warnings

        import transformers

        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        warnings.filterwarnings("ignore")


def run_config(args: Any = None, callbacks: Optional[list[Any]] = None) -> Any:
    """What ``llmtuner train`` and ``src/train_bash.py`` run: the config read once, then routed.

    A ``curriculum:`` block trains its stages (train/curriculum.py), ``stage: eval`` evaluates on benchmarks
    (eval/evaluator.py), anything else is one training run (``train.tuner.run_exp``). ``args`` is a dict, an argv
    list or None (sys.argv). Returns the metrics (or the curriculum summary).
    """
    from .hparams.parser import read_args

    raw = read_args(args)  # a missing or broken config fails here, before torch is imported
    prepare_process(uses_deepspeed=bool(raw.get("deepspeed")))
    if "curriculum" in raw:
        from .train.curriculum import run_curriculum

        return run_curriculum({**env_defaults(), **raw}, callbacks)
    if raw.get("stage") == "eval":  # benchmark evaluation has its own arguments (task, task_dir, save_dir ...)
        from .eval.evaluator import run_eval

        return run_eval(raw)
    from .train.tuner import run_exp

    return run_exp({**env_defaults(), **raw}, callbacks)


def _train(argv: list[str]) -> int:
    if argv in (["-h"], ["--help"]):
        print(f"usage: llmtuner train <config.yaml> [key=value | --key value ...]\nexample: {EXAMPLE}")
        return 0
    if not argv:
        raise ConfigError("train needs a config file or arguments.", f"For example: {EXAMPLE}")
    run_config(argv)
    return 0


EVAL_EXAMPLE = ("llmtuner eval model_name_or_path=models/tiny-qwen2 task=mmlu task_dir=benchmarks "
                "subjects=anatomy,astronomy max_samples=20 save_dir=saves/eval/mmlu")
FORGETTING_EXAMPLE = "llmtuner forgetting configs/forgetting_tiny.yaml drop_threshold=0.05"


def _eval(argv: list[str]) -> int:
    code = _usage_code(argv, "llmtuner eval <config.yaml> [key=value | --key value ...]", EVAL_EXAMPLE)
    if code is not None:
        return code
    from .eval.evaluator import run_eval

    prepare_process()
    run_eval(argv)
    return 0


def _forgetting(argv: list[str]) -> int:
    code = _usage_code(argv, "llmtuner forgetting <config.yaml> [key=value ...] (or before_results=... "
                       "after_results=... save_dir=... to compare finished runs)", FORGETTING_EXAMPLE)
    if code is not None:
        return code
    from .eval.forgetting import run_forgetting

    run_forgetting(argv)
    return 0


def _curriculum(argv: list[str]) -> int:
    if argv in (["-h"], ["--help"]) or not argv:
        print("usage: llmtuner curriculum <config.yaml with a curriculum: block> [key=value ...]")
        return 0 if argv else 2
    from .hparams.parser import read_args

    args = read_args(argv)
    from .train.curriculum import run_curriculum

    run_curriculum({**env_defaults(), **args})
    return 0


def _sweep(argv: list[str]) -> int:
    from .train.sweep import USAGE, run_sweep, split_sweep_argv

    if argv in (["-h"], ["--help"]) or not argv:
        print(USAGE)
        return 0 if argv else 2
    ratios, metric, tolerance, rest = split_sweep_argv(argv)
    from .hparams.parser import read_args

    run_sweep({**env_defaults(), **read_args(rest)}, ratios, metric, tolerance)
    return 0


EXPORT_EXAMPLE = ("llmtuner export model_name_or_path=models/tiny-qwen2 adapter_name_or_path=saves/tiny-qwen2/lora/sft "
                  "template=qwen export_dir=models/tiny-qwen2-merged")
CHAT_EXAMPLE = "llmtuner chat model_name_or_path=models/tiny-qwen2-merged template=qwen"
TEST_EXAMPLE = "llmtuner test configs/test_data_platform.yaml --mode accuracy"


def _usage_code(argv: list[str], usage_line: str, example: str) -> Optional[int]:
    """Print usage and return the exit code when ``argv`` asks for help (0) or is empty (2); else None."""
    if argv and argv not in (["-h"], ["--help"]):
        return None
    print(f"usage: {usage_line}\nexample: {example}")
    return 0 if argv else 2


def _export(argv: list[str]) -> Any:
    code = _usage_code(argv, "llmtuner export <config.yaml> [key=value | --key value ...]", EXPORT_EXAMPLE)
    if code is not None:
        return code
    from .model.export import export_model

    export_model(argv)
    return 0


def _chat(argv: list[str]) -> Any:
    code = _usage_code(argv, "llmtuner chat <config.yaml> [key=value ...]  (type `clear` or `exit`)", CHAT_EXAMPLE)
    if code is not None:
        return code
    from .chat.classify import points_at_classifier, run_classifier_predict

    if points_at_classifier(argv):  # a stage cls run answers with labels: its interactive mode
        return run_classifier_predict(argv)
    from .chat.cli_chat import run_chat

    return run_chat(argv)


def _test(argv: list[str]) -> Any:
    code = _usage_code(
        argv, "llmtuner test <config.yaml> [--mode comprehensive|interactive|accuracy|all] [key=value ...]\n"
        "       llmtuner test <config.yaml> test_dataset=<scoring entry> save_dir=DIR   (scoring report)\n"
        "       llmtuner test --compare DIR1 DIR2 [...] save_dir=DIR                  (compare scoring reports)",
        TEST_EXAMPLE,
    )
    if code is not None:
        return code
    if argv[0] == "--compare":
        from .eval.scoring_eval import compare_results
        from .hparams.parser import read_args

        folders = [item for item in argv[1:] if "=" not in item and not item.startswith("--")]
        options = read_args([item for item in argv[1:] if item not in folders])
        unknown = sorted(set(options) - {"save_dir", "overwrite_save_dir"})
        if unknown:
            raise ConfigError(f"--compare takes save_dir and overwrite_save_dir, not {', '.join(unknown)}.",
                              "llmtuner test --compare DIR1 DIR2 save_dir=DIR")
        compare_results(folders, options.get("save_dir"), bool(options.get("overwrite_save_dir")))
        return 0
    from .chat.task_runner import run_task_test

    return run_task_test(argv)


PREDICT_EXAMPLE = ("llmtuner predict model_name_or_path=models/tiny-bert adapter_name_or_path=saves/tiny-bert/lora/cls "
                   "text=帮我重跑昨天失败的调度任务")


def _predict(argv: list[str]) -> Any:
    if argv in (["-h"], ["--help"]) or not argv:
        print("usage: llmtuner predict <config.yaml> [key=value ...] [text=... | input_file=F output_file=O.jsonl]\n"
              "  a classifier trained by stage cls; without text or input_file it asks for texts interactively\n"
              "  a reward model (stage rm): text=<question> response=<answer>, or an input_file of rows\n"
              f"example: {PREDICT_EXAMPLE}")
        return 0 if argv else 2
    from .chat.reward import points_at_reward_model, run_reward_predict

    if points_at_reward_model(argv):  # stage rm: one score per response
        return run_reward_predict(argv)
    from .chat.classify import run_classifier_predict

    return run_classifier_predict(argv)


def _api(argv: list[str]) -> Any:
    code = _usage_code(argv, "llmtuner api <config.yaml> [key=value ...]  (env API_HOST, API_PORT, API_KEY)",
                       "llmtuner api model_name_or_path=models/tiny-qwen2 template=qwen api_port=8000")
    if code is not None:
        return code
    from .api.server import api_main

    return api_main(argv)


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
    "train": ("Train (stage pt, sft, cls, dpo, kto or rm) from a YAML/JSON config plus key=value or --key value "
              "overrides.", _train),
    "eval": ("Score a model on MMLU, C-Eval, CMMLU or GSM8K (k-shot) from their original files.", _eval),
    "forgetting": ("Compare a base and a tuned model on the same benchmark questions (report + charts).",
                   _forgetting),
    "curriculum": ("Train the stages of a config's curriculum: block in order, each from the previous one.",
                   _curriculum),
    "sweep": ("Train one run per data ratio (--ratios 0.2 0.4 ...) or per value of any argument (--param lora_rank "
              "--values 4,8,16) and compare them (sweep.json/.md/.png).", _sweep),
    "export": ("Merge LoRA adapters into the base and write a standalone safetensors model.", _export),
    "chat": ("Chat with a model in the terminal (streamed replies, history, `clear`, `exit`).", _chat),
    "test": ("Run a tuned model over a task test file (modes), or a scoring test set (report; --compare).", _test),
    "predict": ("Label texts with a classifier (stage cls): one text, a file (JSON lines out), or interactively.",
                _predict),
    "api": ("Serve a model (or a stage cls classifier) over an OpenAI-compatible HTTP API.", _api),
    "make-tiny-model": ("Build a tiny random model with a real tokenizer, for tests and demos.", _make_tiny_model),
    "version": ("Print the versions of llmtuner, python and the libraries it uses.", _version),
    "webui": ("Start the web UI (train, evaluate, chat, export) on 127.0.0.1:7860 (--host, --port, --password).",
              lambda argv: __import__("llmtuner.webui.launcher", fromlist=["main"]).main(argv)),
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
    close = closest_names(name, COMMANDS, n=1)
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
