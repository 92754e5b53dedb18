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
    from .extras.logging import (
        quiet_trl_gradient_checkpointing_reads,
        quiet_unused_bitsandbytes,
        quiet_unused_deepspeed,
    )

    # Process-wide output filters, set here once and visibly (extras/logging.py says why each one is noise).
    quiet_unused_deepspeed(sys.argv)
    quiet_unused_bitsandbytes(sys.argv)
    quiet_trl_gradient_checkpointing_reads()
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


def read_run_args(argv: Any) -> Any:
    """The user's arguments of a training command, read once, with ``env_defaults`` under them; the result still
    knows where each key was set (file and line), for error messages."""
    from .hparams.reader import read_args, with_defaults

    return with_defaults(read_args(argv), env_defaults())


def prepare_process(uses_deepspeed: bool = False, use_cpu: Any = False, malloc_tuning: Optional[bool] = None,
                    ) -> None:
    """The process-wide settings of a run, made here once (library code never changes the process):

    - DeepSpeed without a launcher: the single-process rendezvous variables it needs (RANK, MASTER_PORT, ...);
    - a multi-process CPU run: OMP_NUM_THREADS = this rank's share of the cores (also for worker processes
      started later, e.g. by datasets.map), unless the user set it;
    - ranks other than 0: no progress bars, info logs or Python warnings (rank 0 shows the same ones). datasets'
      bars stay on: those ranks read rank 0's cached preprocessing, so a bar from them means they tokenised again;
    - DeepSpeed runs: torch's deprecation notices for the collectives DeepSpeed calls, repeated every ZeRO-3 step,
      are hidden (``silence_deepspeed_deprecations``), and so is accelerate's accumulation "mismatch" notice,
      which reports the value the user set (``quiet_deepspeed_accumulation_notice``);
    - a CPU run (no CUDA, or ``use_cpu``): torch's threads = OMP_NUM_THREADS, else the usable cores
      (extras/cpu_runtime.py); with ``malloc_tuning`` (a training run's argument, recorded in run_args.yaml)
      glibc keeps freed memory in the heap. ``malloc_tuning=None``: not a training run, malloc left alone.
    """
    from .extras.distributed import rank_cpu_threads, rendezvous_variables, silence_deepspeed_deprecations
    from .extras.processes import is_main_process, world_size

    if uses_deepspeed:
        from .extras.logging import quiet_deepspeed_accumulation_notice

        silence_deepspeed_deprecations()
        quiet_deepspeed_accumulation_notice()
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
    from .extras.env import is_gpu_run

    if is_gpu_run(bool(use_cpu)):
        return
    from .extras.cpu_runtime import keep_freed_memory, set_torch_threads
    from .extras.distributed import limit_cpu_threads

    # torch read OMP_NUM_THREADS when it was imported (maybe before the line above set it): set the count itself
    limit_cpu_threads() if world_size() > 1 else set_torch_threads()
    if malloc_tuning:
        keep_freed_memory()


def prepare_training_process(args: dict[str, Any]) -> None:
    """``prepare_process`` for a training run (or a series of them) with these user arguments."""
    from .hparams.convert import coerce

    def flag(key: str, default: bool) -> bool:
        value = coerce(key, args.get(key, default), bool)
        return default if value is None else value

    prepare_process(uses_deepspeed=bool(args.get("deepspeed")), use_cpu=flag("use_cpu", False),
                    malloc_tuning=flag("malloc_tuning", True))


def run_config(args: Any = None, callbacks: Optional[list[Any]] = None) -> Any:
    """What ``llmtuner train`` and ``src/train_bash.py`` run: the config read once, then routed.

    A ``curriculum:`` block trains its stages (train/curriculum.py), ``stage: eval`` evaluates on benchmarks
    (eval/evaluator.py), anything else is one training run (``train.tuner.run_exp``). ``args`` is a dict, an argv
    list or None (sys.argv). Returns the metrics (or the curriculum summary).
    """
    from .hparams.reader import read_args, with_defaults

    given = read_args(args)  # a missing or broken config fails here, before torch is imported
    if given.get("stage") == "eval" and "curriculum" not in given:  # benchmarks: arguments of their own
        from .eval.evaluator import run_eval

        prepare_process()
        return run_eval(given)
    raw = with_defaults(given, env_defaults())
    if "curriculum" in raw:
        return _run_curriculum(raw, callbacks)
    from .train.tuner import run_exp

    # the process is set up after the checks that need no torch, so a typo fails in a second
    return run_exp(raw, callbacks, prepare=lambda: _prepare_first_run(raw))


def _run_curriculum(raw: Any, callbacks: Optional[list[Any]] = None) -> Any:
    from .train.curriculum import run_curriculum

    check_packages("curriculum", raw)
    _prepare_first_run(raw)
    return run_curriculum(raw, callbacks)


def _prepare_first_run(raw: dict[str, Any]) -> None:
    """``prepare_training_process``, then, on a first run whose config has no doctor report, the hint to run
    ``llmtuner doctor`` (once the config passed its checks, so an error is never preceded by it)."""
    from .extras.processes import is_main_process
    from .train.doctor.runner import first_run_hint

    prepare_training_process(raw)
    hint = first_run_hint(raw) if is_main_process() else None
    if hint:
        print(f"tip: {hint}", file=sys.stderr)


def check_packages(command: str, args: dict[str, Any]) -> None:
    """Every optional package ``command`` will need with these arguments, checked at once before it starts
    (one ``pip install`` naming all missing ones; exit 2, nothing loaded or written)."""
    from .extras.env import (
        CLASSIFICATION_METRIC_PACKAGES,
        SCORING_METRIC_PACKAGES,
        SERVE_PACKAGES,
        require_packages,
    )

    needs = []
    if command == "api":
        needs.append(("llmtuner api (the serve extra)", SERVE_PACKAGES))
    if args.get("test_dataset"):  # a scoring test report (llmtuner test, or each curriculum stage)
        needs.append((f"the scoring report of test_dataset={args['test_dataset']}", SCORING_METRIC_PACKAGES))
    if command == "predict" and args.get("input_file") and _all_labelled(str(args["input_file"])):
        needs.append((f"the metrics against the labels of {args['input_file']}", CLASSIFICATION_METRIC_PACKAGES))
    require_packages(needs)


def _all_labelled(path: str) -> bool:
    """Every row of ``predict``'s input file has a gold label (then predict scores against them, as
    ``TextClassifier.predict_file`` does); an unreadable file: False, the command itself reports it."""
    from .chat.classify import GOLD_KEYS, read_rows

    try:
        rows = read_rows(path)
    except LlmtunerError:
        return False
    return bool(rows) and all(any(row.get(key) not in (None, "") for key in GOLD_KEYS) for row in rows)


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
    _run_curriculum(read_run_args(argv))
    return 0


def _sweep(argv: list[str]) -> int:
    from .train.sweep import sweep_main

    # --param/--values: a sweep over any argument; --ratios (or neither): the data-ratio sweep
    return sweep_main(argv, env_defaults(), prepare=prepare_training_process)


EXPORT_EXAMPLE = ("llmtuner export model_name_or_path=models/tiny-qwen2 adapter_name_or_path=saves/tiny-qwen2/lora/sft "
                  "template=qwen export_dir=models/tiny-qwen2-merged")
CHAT_EXAMPLE = "llmtuner chat model_name_or_path=models/tiny-qwen2-merged template=qwen"
TEST_EXAMPLE = "llmtuner test configs/test_data_platform.yaml --mode accuracy"


DOCTOR_USAGE = "llmtuner doctor <config.yaml> [key=value | --key value ...] [--out DIR] [--rows N]"
DOCTOR_EXAMPLE = "llmtuner doctor configs/sft_lora_tiny.yaml --rows 64"


def _doctor(argv: list[str]) -> int:
    code = _usage_code(argv, DOCTOR_USAGE + "\n  the config of `llmtuner train`, checked on a CPU: template, masks, "
                       "special tokens, numerics, resume, data mix, memory fit.\n  --out DIR: where doctor.json and "
                       "doctor.md go (default <output_dir>-doctor); --rows N: rows per dataset the row checks read "
                       "(default 32). Exit 1 when a check fails.", DOCTOR_EXAMPLE)
    if code is not None:
        return code
    rest, options = _doctor_options(argv)
    from .train.doctor.runner import run_doctor

    # the doctor runs on the CPU whatever the machine has: its threads, and DeepSpeed's single-process rendezvous
    # when the config names a ZeRO file (as `llmtuner train` without a launcher), once the config passed
    return run_doctor(rest, prepare=lambda raw: prepare_process(uses_deepspeed=bool(raw.get("deepspeed")),
                                                                use_cpu=True), **options)


def _doctor_options(argv: list[str]) -> tuple[list[str], dict[str, Any]]:
    """``--out DIR`` / ``--rows N`` (or ``--out=DIR``) taken out of argv; the rest is the training config."""
    rest, options, position = [], {}, 0
    while position < len(argv):
        token = argv[position]
        name, _, inline = token.partition("=")
        if name in ("--out", "--rows"):
            value = inline if inline else (argv[position + 1] if position + 1 < len(argv) else "")
            position += 1 if inline else 2
            if not value or value.startswith("--"):
                raise ConfigError(f"{name} needs a value.", f"For example: {DOCTOR_EXAMPLE} --out saves/doctor")
            if name == "--rows":  # the runner refuses anything but a positive count
                options["rows"] = int(value) if value.isdigit() else value
            else:
                options["out"] = value
            continue
        rest.append(token)
        position += 1
    return rest, options


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
    from .hparams.reader import read_args

    args = read_args(argv)  # read once: the routing and the command use the same arguments
    if points_at_classifier(args):  # a stage cls run answers with labels: its interactive mode
        return run_classifier_predict(args)
    from .chat.cli_chat import run_chat

    return run_chat(args)


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
    from .hparams.reader import read_args

    args = read_args(argv)
    check_packages("test", args)
    return run_task_test(args)


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
    from .hparams.reader import read_args

    args = read_args(argv)  # read once: the routing and the command use the same arguments
    if points_at_reward_model(args):  # stage rm: one score per response
        return run_reward_predict(args)
    from .chat.classify import run_classifier_predict

    check_packages("predict", args)
    return run_classifier_predict(args)


def _api(argv: list[str]) -> Any:
    code = _usage_code(argv, "llmtuner api <config.yaml> [key=value ...]  (env API_HOST, API_PORT, API_KEY)",
                       "llmtuner api model_name_or_path=models/tiny-qwen2 template=qwen api_port=8000")
    if code is not None:
        return code
    from .hparams.reader import read_args

    args = read_args(argv)
    check_packages("api", args)  # before importing the server, which imports fastapi and uvicorn
    from .api.server import api_main

    return api_main(args)


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
    "doctor": ("Check a training config on a CPU before a long run: template, masks, special tokens, numerics, "
               "resume, data mix, memory fit (table, doctor.json, doctor.md; exit 1 when a check fails).", _doctor),
    "export": ("Merge LoRA adapters into the base and write a standalone safetensors model.", _export),
    "chat": ("Chat with a model in the terminal (streamed replies, history, `clear`, `exit`).", _chat),
    "test": ("Run a tuned model over a task test file (modes), or a scoring test set (report; --compare).", _test),
    "predict": ("Label texts with a classifier (stage cls), or score responses with a reward model (stage rm): "
                "one text, a file (JSON lines out), or interactively.",
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
