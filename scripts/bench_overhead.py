"""Fixed overhead of llmtuner: how long the CLI takes to answer, and what a training run costs besides training.

    python scripts/bench_overhead.py                 # tiny model, sample sft data, 5 repeats of each measurement
    python scripts/bench_overhead.py --repeats 3 --out bench/overhead.json

Measured, each in fresh processes (medians of ``--repeats``):
- ``llmtuner --help`` and ``llmtuner version`` wall time (neither may import torch);
- a 1-step LoRA sft run through ``llmtuner train``: wall time minus the Trainer's own ``train_runtime``, with a
  cold datasets cache (first run: tokenising) and a warm one (later runs: the Arrow cache is read);
- the same 1-step job through a plain transformers Trainer + PEFT script (``bench_train.py``'s baseline, no
  llmtuner code), side by side: the part of the overhead every Trainer-based tool pays;
- how long importing ``transformers.Trainer`` and ``peft`` alone takes in a bare interpreter (the floor);
- where a warm run's time goes, phase by phase, timed inside one process that calls the same functions as
  ``run_exp``: imports, argument parsing, tokenizer + template, dataset, model, Trainer, the step, saving;
- what datasets' default fingerprinting would spend pickling the tokenizer on every run, which llmtuner's own
  cache key avoids (data/dataset.py).
Prints a table; writes JSON and a PNG of the phases (default bench/overhead.json/.png).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def run_args(model_dir: str, output_dir: str) -> dict:
    return {"model_name_or_path": model_dir, "stage": "sft", "finetuning_type": "lora", "dataset": "sft_demo_zh_en",
            "dataset_dir": str(ROOT / "data"), "template": "qwen", "cutoff_len": 512, "max_steps": 1,
            "per_device_train_batch_size": 4, "output_dir": output_dir, "overwrite_output_dir": True,
            "report_to": "none", "logging_steps": 1}


def timed(cmd: list[str], env: dict) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return elapsed, done


def cli_seconds(argv: list[str], env: dict, repeats: int) -> float:
    return statistics.median(timed([sys.executable, "-m", "llmtuner.cli", *argv], env)[0] for _ in range(repeats))


def one_step_overhead(model_dir: str, work: Path, env: dict, repeats: int) -> dict:
    """Wall minus train_runtime of ``llmtuner train`` runs: the first with an empty datasets cache, then warm."""
    env = {**env, "HF_DATASETS_CACHE": str(work / "datasets-cache")}
    runs = []
    for index in range(repeats + 1):
        output_dir = str(work / "one-step")
        argv = [f"{key}={value}" for key, value in run_args(model_dir, output_dir).items()]
        wall, _ = timed([sys.executable, "-m", "llmtuner.cli", "train", *argv], env)
        train = json.loads((Path(output_dir) / "all_results.json").read_text(encoding="utf-8"))["train_runtime"]
        runs.append({"wall_s": wall, "train_runtime_s": train, "overhead_s": wall - train})
    warm = runs[1:]
    return {"cold": runs[0], "warm_median_overhead_s": statistics.median(r["overhead_s"] for r in warm),
            "warm_median_wall_s": statistics.median(r["wall_s"] for r in warm), "warm_runs": warm}


def baseline_step(model_dir: str, output_dir: str, result_file: str) -> None:
    """One LoRA step of bench_train.py's plain Trainer + PEFT baseline; writes its train_runtime."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from bench_train import build_baseline

    job = {"side": "baseline", "model_dir": model_dir, "method": "lora", "synthetic": False, "batch": 4,
           "cutoff_len": 512, "warmup": 0, "steps": 1, "device": "cpu", "output_dir": output_dir}
    trainer = build_baseline(job)
    runtime = trainer.train().metrics["train_runtime"]
    trainer.save_model()
    Path(result_file).write_text(json.dumps({"train_runtime_s": runtime}), encoding="utf-8")


def baseline_overhead(model_dir: str, work: Path, env: dict, repeats: int) -> dict:
    """Wall minus train_runtime of the plain baseline's 1-step run, median of ``repeats``."""
    runs = []
    for index in range(repeats):
        result_file = work / f"baseline{index}.json"
        wall, _ = timed([sys.executable, __file__, "--baseline_step", model_dir, str(work / "baseline-out"),
                         str(result_file)], env)
        train = json.loads(result_file.read_text(encoding="utf-8"))["train_runtime_s"]
        runs.append({"wall_s": wall, "train_runtime_s": train, "overhead_s": wall - train})
    return {"median_overhead_s": statistics.median(r["overhead_s"] for r in runs), "runs": runs}


def import_floor(env: dict, repeats: int) -> float:
    """Seconds a bare interpreter takes to import transformers.Trainer and peft."""
    code = "import peft, transformers; transformers.Trainer"
    return statistics.median(timed([sys.executable, "-c", code], env)[0] for _ in range(repeats))


def phases(model_dir: str, output_dir: str, result_file: str) -> None:
    """The steps of run_exp for an sft run, each timed (runs in a child process with a warm datasets cache)."""
    marks = [("start", time.perf_counter())]

    def mark(name: str) -> None:
        marks.append((name, time.perf_counter()))

    import torch  # noqa: F401  (imports are timed as one phase: torch, transformers, peft, datasets)
    from datasets.fingerprint import Hasher

    from llmtuner.data.dataset import get_dataset
    from llmtuner.data.templates import get_template
    from llmtuner.extras.cpu_runtime import configure_cpu_runtime
    from llmtuner.hparams.parser import check_train_args_early, get_train_args
    from llmtuner.model import load_model, load_tokenizer
    from llmtuner.train.trainer import LlmtunerTrainer, build_collator

    mark("imports")
    raw = run_args(model_dir, output_dir)
    check_train_args_early(raw)
    model_args, data_args, training_args, finetuning_args, _ = get_train_args(raw)
    configure_cpu_runtime(training_args)
    mark("arguments")
    tokenizer = load_tokenizer(model_args)
    template = get_template(data_args.template, tokenizer)
    template.fix_tokenizer(tokenizer)
    mark("tokenizer + template")
    module = get_dataset(template, tokenizer, data_args, training_args, stage="sft")
    mark("dataset (cached)")
    model = load_model(tokenizer, model_args, finetuning_args, is_trainable=True)
    mark("model")
    trainer = LlmtunerTrainer(model=model, args=training_args, train_dataset=module.train_dataset,
                           eval_dataset=module.eval_dataset, data_collator=build_collator(tokenizer, training_args, model),
                           processing_class=tokenizer)
    mark("trainer")
    trainer.train()
    mark("train (1 step)")
    trainer.save_model()
    trainer.save_state()
    mark("save")
    steps = {name: end - begin for (_, begin), (name, end) in zip(marks, marks[1:])}
    start = time.perf_counter()
    Hasher.hash(tokenizer)
    avoided = time.perf_counter() - start
    Path(result_file).write_text(json.dumps({"phases_s": steps, "tokenizer_pickle_avoided_s": avoided}),
                                 encoding="utf-8")


def plot(phase_runs: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 2.6))
    left = 0.0
    for name, seconds in phase_runs.items():
        axis.barh([0], [seconds], left=left, label=f"{name} {seconds:.2f}s")
        left += seconds
    axis.set_yticks([])
    axis.set_xlabel("seconds (1-step LoRA sft run of the tiny model, warm datasets cache)")
    axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.35), ncol=3, fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "bench" / "overhead.json"))
    parser.add_argument("--phases", nargs=3, metavar=("MODEL_DIR", "OUTPUT_DIR", "RESULT"), help=argparse.SUPPRESS)
    parser.add_argument("--baseline_step", nargs=3, metavar=("MODEL_DIR", "OUTPUT_DIR", "RESULT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phases:
        phases(*args.phases)
        return 0
    if args.baseline_step:
        baseline_step(*args.baseline_step)
        return 0
    if args.repeats < 1:
        print("error: --repeats must be at least 1.\nhint: --repeats 5", file=sys.stderr)
        return 2
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT / "src")}
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        from llmtuner.model.tiny import make_tiny_model

        model_dir = make_tiny_model("qwen2", str(work / "tiny"))
        from tqdm import tqdm

        with tqdm(total=6, desc="overhead") as bar:
            help_s = cli_seconds(["--help"], env, args.repeats)
            version_s = cli_seconds(["version"], env, args.repeats)
            bar.update()
            one_step = one_step_overhead(model_dir, work, env, args.repeats)
            bar.update()
            baseline = baseline_overhead(model_dir, work, env, args.repeats)
            bar.update()
            floor_s = import_floor(env, args.repeats)
            bar.update()
            breakdown = []
            for index in range(args.repeats):
                result_file = work / f"phases{index}.json"
                cache_env = {**env, "HF_DATASETS_CACHE": str(work / "datasets-cache")}
                timed([sys.executable, __file__, "--phases", model_dir, str(work / f"phases-out{index}"),
                       str(result_file)], cache_env)
                breakdown.append(json.loads(result_file.read_text(encoding="utf-8")))
            bar.update(2)
    names = list(breakdown[0]["phases_s"])
    phase_medians = {name: statistics.median(run["phases_s"][name] for run in breakdown) for name in names}
    avoided = statistics.median(run["tokenizer_pickle_avoided_s"] for run in breakdown)

    print(f"\nmedians of {args.repeats} runs, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(f"{'measurement':<52} {'seconds':>8}")
    print(f"{'llmtuner --help':<52} {help_s:>8.2f}")
    print(f"{'llmtuner version':<52} {version_s:>8.2f}")
    print(f"{'1-step run, cold datasets cache: wall - train_runtime':<52} {one_step['cold']['overhead_s']:>8.2f}")
    print(f"{'1-step run, warm datasets cache: wall - train_runtime':<52} {one_step['warm_median_overhead_s']:>8.2f}")
    print(f"{'plain Trainer + PEFT 1-step run: wall - train_runtime':<52} {baseline['median_overhead_s']:>8.2f}")
    print(f"{'bare import of transformers.Trainer + peft':<52} {floor_s:>8.2f}")
    print("warm run, phase by phase (in one process):")
    for name, seconds in phase_medians.items():
        print(f"  {name:<50} {seconds:>8.2f}")
    print(f"{'tokenizer pickling avoided by our cache key (per map)':<52} {avoided:>8.2f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "cpu_count": os.cpu_count(),
            "load_average": os.getloadavg(), "repeats": args.repeats}
    out.write_text(json.dumps({"meta": meta, "help_s": help_s, "version_s": version_s, "one_step": one_step,
                               "baseline_one_step": baseline, "import_floor_s": floor_s,
                               "phases_s": phase_medians, "tokenizer_pickle_avoided_s": avoided,
                               "phase_runs": breakdown}, indent=2) + "\n", encoding="utf-8")
    plot(phase_medians, out.with_suffix(".png"))
    print(f"\nwrote {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
