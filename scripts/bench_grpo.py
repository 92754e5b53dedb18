"""Seconds per GRPO step, split into generation, reward and the policy update, for llmtuner's ``stage: grpo``.

    python scripts/bench_grpo.py                                  # tiny + Qwen2.5-0.5B shape (~3 min, 2 idle cores)
    python scripts/bench_grpo.py --models tiny --steps 6 --num_generations 8 --max_completion_length 64

Each model runs in its own process, as ``llmtuner train`` runs a config (``cli.run_config``: process set-up, the
checks, ``run_exp`` -> ``train.grpo.run_grpo``), with LoRA (rank 8), the sample GSM8K rows (``gsm8k_demo``), the
``qwen`` template and rewards ``math,format`` (``format_regex``: the answer ends with ``#### N``; the qwen template
has no thinking markers). Rollouts: transformers generation; vLLM colocated (``use_vllm: true``) only where vLLM is
installed, else recorded as "not installed" in the JSON.

Models (random weights; speed does not depend on them): ``tiny``, models/tiny-qwen2 (``llmtuner make-tiny-model
--arch qwen2 --out models/tiny-qwen2``, built when missing); ``qwen0.5b``, Qwen2.5-0.5B's shape and vocabulary
(scripts/bench_train.py's ``QWEN25_05B_DIMS``), built in a temporary folder. A random model never ends a turn, so
every completion runs to ``max_completion_length`` tokens: the generation cost is the worst case of that length.

One step = one optimizer step = one generation batch (``prompts_per_step`` prompts x ``num_generations``
completions, no gradient accumulation, one iteration per generation). Timed on the trainer itself (the trainer that
``build_rl_trainer`` returns, its methods wrapped with ``time.perf_counter``), from the Trainer's ``on_step_begin``
to its ``on_step_end``:
- ``generation``: ``_generate`` (the prompts' ids, ``model.generate``, decoding the completions);
- ``reward``: ``_calculate_rewards`` (every reward function on every completion);
- ``update``: the rest of the step outside ``_prepare_inputs``, i.e. the policy-gradient loss forward, backward and
  the optimizer step (the "backward" of the issue);
- ``other``: the rest of ``_prepare_inputs`` (padding, advantages, TRL's metrics): step - the three above.
The first ``--warmup`` steps are left out. Reported: the split of the median timed step (by its total; its parts add
up to it, and a burst of load from other processes on a shared machine moves it least), the means of each part
beside it, every step's split, and the spread (slowest - fastest) / median, flagged UNSTEADY above 10%. Prints a
table; writes JSON and a PNG stacked bar per model (default bench/grpo.json/.png).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_train import build_models, write_results  # noqa: E402  (scripts/ is on sys.path above)

MODELS = ("tiny", "qwen0.5b")
TINY_DIR = ROOT / "models" / "tiny-qwen2"
DATASET, TEMPLATE, LORA_RANK, LR = "gsm8k_demo", "qwen", 8, 1e-5
REWARDS, FORMAT_REGEX = "math,format", r".*#### *-?[\d,.]+\s*"
PARTS = ("generation", "reward", "update", "other")
ROLLOUTS = ("transformers", "vllm")
# timed steps (after --warmup 1): about 3 minutes in all on 2 idle cores (a 0.5B step: ~10 s); busy cores slow
# generation most (many small ops, each waiting for both threads): up to 10x, flagged as unsteady
DEFAULT_STEPS = {"tiny": 6, "qwen0.5b": 3}
UNSTEADY_SPREAD = 0.10  # (slowest - fastest) / median step above this is flagged: a busy machine, not the code


# ---------------------------------------------------------------- one job: one model, one rollout backend

class StepTimer:
    """Seconds of each step and of the timed methods inside it; installed on the trainer by ``attach``."""

    def __init__(self) -> None:
        self.steps: list[dict[str, float]] = []  # per finished step: step, generation, reward, prepare, tokens
        self.logs: list[dict[str, float]] = []
        self._current: dict[str, float] = {}
        self._start = 0.0
        self.parameters = self.trainable_parameters = 0

    def attach(self, trainer: Any) -> None:
        for method, key in (("_generate", "generation"), ("_calculate_rewards", "reward"),
                            ("_prepare_inputs", "prepare")):
            setattr(trainer, method, self._timed(getattr(trainer, method), key))
        trainer.add_callback(self.callback())
        self.parameters = sum(p.numel() for p in trainer.model.parameters())
        self.trainable_parameters = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)

    def _timed(self, function: Any, key: str) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            result = function(*args, **kwargs)
            self._current[key] = self._current.get(key, 0.0) + time.perf_counter() - start
            if key == "generation":  # (prompt_ids, completion_ids, ...): lists of token ids per completion
                self._current["prompt_tokens"] = sum(len(ids) for ids in result[0])
                self._current["completion_tokens"] = sum(len(ids) for ids in result[1])
            return result

        return timed

    def callback(self) -> Any:
        from transformers import TrainerCallback

        timer = self

        class Clock(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                timer._current, timer._start = {}, time.perf_counter()

            def on_step_end(self, args, state, control, **kwargs):
                timer.steps.append({**timer._current, "step": time.perf_counter() - timer._start})

            def on_log(self, args, state, control, logs=None, **kwargs):
                timer.logs.append(dict(logs or {}))

        return Clock()


@contextlib.contextmanager
def timed_trainer(timer: StepTimer) -> Iterator[None]:
    """``train.grpo.build_rl_trainer`` hands its trainer to ``timer`` before run_grpo trains it."""
    import llmtuner.train.grpo as grpo

    build = grpo.build_rl_trainer

    def build_and_attach(*args: Any, **kwargs: Any) -> Any:
        trainer = build(*args, **kwargs)
        timer.attach(trainer)
        return trainer

    grpo.build_rl_trainer = build_and_attach
    try:
        yield
    finally:
        grpo.build_rl_trainer = build


def grpo_config(job: dict) -> dict[str, Any]:
    """The run's config, as a user would write it in a YAML file."""
    return {
        "stage": "grpo", "do_train": True, "model_name_or_path": job["model_dir"], "template": TEMPLATE,
        "dataset": DATASET, "dataset_dir": str(ROOT / "data"), "finetuning_type": "lora", "lora_rank": LORA_RANK,
        "reward_funcs": REWARDS, "format_regex": FORMAT_REGEX, "num_generations": job["num_generations"],
        "max_completion_length": job["max_completion_length"],
        "per_device_train_batch_size": job["num_generations"] * job["prompts_per_step"],
        "gradient_accumulation_steps": 1, "max_steps": job["warmup"] + job["steps"], "learning_rate": LR,
        "use_vllm": job["rollout"] == "vllm", "logging_steps": 1, "save_strategy": "no", "report_to": "none",
        "plot_loss": False, "rollout_log_samples": 0, "disable_tqdm": True, "seed": 42,
        "output_dir": job["output_dir"], "overwrite_output_dir": True,
    }


def measure(job: dict, setup_process: bool = True) -> dict:
    """Train ``job`` with llmtuner's grpo stage and return its timed split. ``setup_process``: the CLI's process
    settings (threads, malloc) as ``llmtuner train`` makes them; off in tests, which share their process."""
    import resource

    import torch

    from llmtuner.cli import run_config
    from llmtuner.train.tuner import run_exp

    timer = StepTimer()
    with timed_trainer(timer):
        (run_config if setup_process else run_exp)(grpo_config(job))
    return {**{key: value for key, value in job.items() if key not in ("model_dir", "output_dir")},
            **summarize(job, timer.steps, timer.logs), "parameters": timer.parameters,
            "trainable_parameters": timer.trainable_parameters, "threads": torch.get_num_threads(),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def split(step: dict[str, float]) -> dict[str, float]:
    """One step's seconds per part (``other``: what ``_prepare_inputs`` spent besides generation and rewards)."""
    generation, reward, prepare = (step.get(key, 0.0) for key in ("generation", "reward", "prepare"))
    return {"generation": generation, "reward": reward, "update": step["step"] - prepare,
            "other": prepare - generation - reward}


def summarize(job: dict, steps: list[dict[str, float]], logs: list[dict[str, float]]) -> dict:
    """The split of the median step after the warm-up ones (its four parts add up to it; a burst of load from other
    processes moves the median least), the means beside it, and the spread between the timed steps."""
    timed = steps[job["warmup"]:]
    if not timed:
        raise RuntimeError(f"{job['model']}: {len(steps)} steps ran, none after the {job['warmup']} warm-up ones")

    def mean(values: list[float]) -> float:
        return sum(values) / len(values)

    splits = [{"step": step["step"], **split(step)} for step in timed]
    median = sorted(splits, key=lambda s: s["step"])[len(splits) // 2]
    seconds = [s["step"] for s in splits]
    completion_tokens = mean([s.get("completion_tokens", 0) for s in timed])
    rewards = [log["reward"] for log in logs if "reward" in log]
    lengths = [log["completions/mean_length"] for log in logs if "completions/mean_length" in log]
    return {
        "step_s": median["step"], **{f"{part}_s": median[part] for part in PARTS},
        "share": {part: median[part] / median["step"] for part in PARTS},
        "mean": {key: mean([s[key] for s in splits]) for key in ("step", *PARTS)},
        "spread": (max(seconds) - min(seconds)) / median["step"],
        "unsteady": (max(seconds) - min(seconds)) / median["step"] > UNSTEADY_SPREAD,
        "step_seconds": [round(value, 3) for value in seconds],
        "warmup_step_seconds": [round(s["step"], 3) for s in steps[:job["warmup"]]],
        "parts_per_step": {part: [round(s[part], 3) for s in splits] for part in PARTS},
        "prompt_tokens_per_step": mean([s.get("prompt_tokens", 0) for s in timed]),
        "completion_tokens_per_step": completion_tokens,
        "generated_tokens_per_s": completion_tokens / median["generation"] if median["generation"] else None,
        "reward_mean": mean(rewards) if rewards else None,
        "completion_mean_length": mean(lengths) if lengths else None,
    }


# ---------------------------------------------------------------- the driver

def vllm_status() -> str:
    return "installed" if importlib.util.find_spec("vllm") is not None else "not installed"


def model_dirs(names: list[str], work: Path) -> dict[str, str]:
    """tiny: models/tiny-qwen2 (built once, kept); qwen0.5b: bench_train's Qwen2.5-0.5B shape, in ``work``."""
    from llmtuner.model.tiny import make_tiny_model

    dirs = {}
    if "tiny" in names:
        built = (TINY_DIR / "config.json").is_file()
        dirs["tiny"] = str(TINY_DIR) if built else make_tiny_model("qwen2", str(TINY_DIR))
    if "qwen0.5b" in names:
        dirs["qwen0.5b"] = build_models(["qwen0.5b"], work)["qwen0.5b"]["dir"]
    return dirs


def plan_jobs(args: argparse.Namespace) -> list[dict]:
    return [{"model": model, "rollout": rollout, "steps": args.steps or DEFAULT_STEPS[model], "warmup": args.warmup,
             "num_generations": args.num_generations, "prompts_per_step": args.prompts_per_step,
             "max_completion_length": args.max_completion_length, "finetuning_type": "lora", "lora_rank": LORA_RANK,
             "dataset": DATASET, "rewards": REWARDS}
            for model in args.models for rollout in args.rollouts]


def job_name(job: dict) -> str:
    return f"{job['model']} {job['rollout']}"


def run_in_child(job: dict, work: Path, index: int) -> dict:
    """One job in a fresh process: thread and malloc settings and memory peaks do not leak between models."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    os.environ.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn"), initializer=die_with_parent) as pool:
        return pool.submit(measure, {**job, "output_dir": str(work / f"out{index}")}).result()


def die_with_parent() -> None:
    """The job's process is killed when the driver dies (Linux): a worker whose driver was stopped (timeout,
    Ctrl-C) would otherwise finish its run and then wait for its next job forever, loading the machine meanwhile."""
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG


def print_table(results: list[dict]) -> None:
    """Seconds of the median step and of its parts (share of the step); ! marks an unsteady job."""
    columns = [("job", 22), ("step s", 7), ("spread", 7), *zip(PARTS, (16, 14, 16, 13)), ("mean step s", 11),
               ("gen tok/s", 9), ("RSS MiB", 8)]
    lines = [" ".join(f"{name:<{width}}" if name == "job" else f"{name:>{width}}" for name, width in columns)]
    lines.append("-" * len(lines[0]))
    for r in results:
        cells = [f"{job_name(r):<22}", f"{r['step_s']:>7.2f}", f"{r['spread']:.0%}{'!' * r['unsteady']}".rjust(7),
                 *(f"{r[part + '_s']:>{width - 6}.3f} ({r['share'][part]:>3.0%})"
                   for part, width in zip(PARTS, (16, 14, 16, 13))),
                 f"{r['mean']['step']:>11.2f}", f"{r['generated_tokens_per_s'] or 0:>9.1f}",
                 f"{r['peak_rss_mib']:>8.0f}"]
        lines.append(" ".join(cells))
    if any(r["unsteady"] for r in results):
        lines.append(f"\n! spread between the timed steps > {UNSTEADY_SPREAD:.0%}: other processes were busy; see "
                     "step_seconds and parts_per_step in the JSON.")
    print("\n".join(lines))


def plot(results: list[dict], path: Path) -> None:
    """A stacked bar per job: seconds per step of each part."""
    from llmtuner.extras.plotting import new_figure, save_png

    figure = new_figure(figsize=(2.5 + 1.8 * len(results), 4.2))
    axis = figure.add_subplot()
    names = [f"{job_name(r)}\n{r['prompts_per_step']}x{r['num_generations']} x {r['max_completion_length']} tok"
             for r in results]
    bottom = [0.0] * len(results)
    for part in PARTS:
        values = [r[f"{part}_s"] for r in results]
        axis.bar(names, values, 0.6, bottom=bottom, label=part)
        bottom = [b + v for b, v in zip(bottom, values)]
    for index, total in enumerate(bottom):
        axis.text(index, total, f"{total:.2f} s", ha="center", va="bottom")
    axis.set(ylabel="seconds per GRPO step", title="GRPO step: generation, reward, update (fwd + bwd + optimizer)")
    axis.legend()
    figure.tight_layout()
    save_png(figure, path)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated: tiny, qwen0.5b")
    parser.add_argument("--rollouts", default=",".join(ROLLOUTS),
                        help="comma-separated: transformers, vllm (colocated; skipped when vLLM is not installed)")
    parser.add_argument("--steps", type=int, default=None,
                        help="timed steps per job (default: "
                        f"{', '.join(f'{model} {count}' for model, count in DEFAULT_STEPS.items())})")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before them")
    parser.add_argument("--num_generations", type=int, default=4, help="completions per prompt")
    parser.add_argument("--prompts_per_step", type=int, default=1, help="prompts per step (one generation batch)")
    parser.add_argument("--max_completion_length", type=int, default=16, help="tokens per completion")
    parser.add_argument("--out", default=str(ROOT / "bench" / "grpo.json"))
    args = parser.parse_args(argv)
    args.models = [m for m in args.models.split(",") if m]
    args.rollouts = [r for r in args.rollouts.split(",") if r]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bad = sorted(set(args.models) - set(MODELS)) + sorted(set(args.rollouts) - set(ROLLOUTS))
    numbers = (args.steps or 1, args.num_generations, args.prompts_per_step, args.max_completion_length)
    if bad or min(numbers) < 1 or args.warmup < 0:
        print(f"error: bad arguments {bad or ''}\nhint: --models {','.join(MODELS)} --rollouts {','.join(ROLLOUTS)}"
              "; --steps/--num_generations/--prompts_per_step/--max_completion_length >= 1, --warmup >= 0",
              file=sys.stderr)
        return 2
    import torch
    import transformers
    import trl

    vllm = vllm_status()
    jobs = plan_jobs(args)
    skipped = [{**job, "status": vllm} for job in jobs if job["rollout"] == "vllm" and vllm != "installed"]
    jobs = [job for job in jobs if job["rollout"] != "vllm" or vllm == "installed"]
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        dirs = model_dirs(args.models, work)
        for index, job in enumerate(jobs):
            print(f"[{index + 1}/{len(jobs)}] {job_name(job)}: {job['warmup']} + {job['steps']} steps", flush=True)
            try:
                results.append(run_in_child({**job, "model_dir": dirs[job["model"]]}, work, index))
            except Exception as error:  # vLLM installed but not running here (no GPU, wrong build): recorded
                if job["rollout"] != "vllm":
                    raise
                skipped.append({**job, "status": f"failed: {type(error).__name__}: {str(error)[:300]}"})
    print(f"\ncpu, {results[0]['threads'] if results else '?'} threads; seconds of the median step of the timed ones "
          f"after {args.warmup} warm-up; {args.prompts_per_step} prompts x {args.num_generations} completions x "
          f"{args.max_completion_length} tokens per step, LoRA r{LORA_RANK}, rewards {REWARDS}")
    print_table(results)
    for job in skipped:
        print(f"{job_name(job)}: {job['status']}, not measured")
    meta = {"device": "cpu", "torch": torch.__version__, "transformers": transformers.__version__,
            "trl": trl.__version__, "vllm": vllm,  # "not installed" here: no vLLM job ran
            "skipped": [{"model": job["model"], "rollout": job["rollout"], "status": job["status"]}
                        for job in skipped]}
    write_results(Path(args.out), meta, results, plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
