"""Which allocator set-up keeps a CPU training step free of page faults, in every run: the same LoRA sft job under
glibc's defaults, llmtuner's malloc tuning, the tuning plus transparent huge pages, and jemalloc / tcmalloc
preloaded (when their Debian packages libjemalloc2 / libtcmalloc-minimal4 are installed), each with the chunked
loss off and on.

    python scripts/bench_malloc.py                      # every variant found, 2 runs each (~20 min on 2 idle cores)
    python scripts/bench_malloc.py --runs 3 --steps 16 --variants tuned,tcmalloc

The job (issue 19's): the tiny Qwen2 (151,669-token vocabulary), ../shared/corpora/alpaca_zh_demo.json when present
(else the built-in sft sample data), qwen template, cutoff 256, packing, LoRA rank 8 on every linear layer, batch 4,
lr 1e-3, seed 42. Each run is its own process through ``llmtuner.cli.run_config``; runs of the variants alternate.
Per run, over the steps after ``--warmup``: median step seconds, page faults (minor + major) and system CPU seconds
per step, and the process's peak RSS. A variant whose runs differ by more than 10% in step time, or whose steps
page-fault more than 1,000 times in any run, is marked unsteady. Prints a table; writes JSON and a PNG (default
bench/malloc.json/.png).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from bench_train import write_results  # noqa: E402  (scripts/ is on sys.path when this file runs)
LIBS = Path("/usr/lib/x86_64-linux-gnu")
# name -> (environment of the run, chunked_loss); environment values None = variable removed
ALLOCATORS = {
    "glibc": {"LLMTUNER_MALLOC_TUNING": "0"},
    "tuned": {},
    "tuned+thp": {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"},
    "jemalloc": {"LD_PRELOAD": str(LIBS / "libjemalloc.so.2")},
    "tcmalloc": {"LD_PRELOAD": str(LIBS / "libtcmalloc_minimal.so.4")},
}
UNSTEADY_SPREAD, UNSTEADY_FAULTS = 0.10, 1000


def run_job(config: dict, result_file: str) -> None:
    """In the child: one training run, with per-step page faults, system CPU and wall time."""
    from transformers import TrainerCallback

    from llmtuner.cli import run_config

    rows: list[dict] = []

    class StepUsage(TrainerCallback):
        start: tuple = ()

        def on_step_begin(self, args, state, control, **kwargs):
            self.start = self.usage()

        def on_step_end(self, args, state, control, **kwargs):
            end = self.usage()
            rows.append({"faults": end[0] - self.start[0], "sys": end[1] - self.start[1],
                         "wall": end[2] - self.start[2]})

        @staticmethod
        def usage() -> tuple[int, float, float]:
            used = resource.getrusage(resource.RUSAGE_SELF)
            return used.ru_minflt + used.ru_majflt, used.ru_stime, time.perf_counter()

    run_config(config, callbacks=[StepUsage()])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    Path(result_file).write_text(json.dumps({"steps": rows, "peak_rss_mib": peak}), encoding="utf-8")


def job_config(args: argparse.Namespace, model_dir: str, data_dir: str, dataset: str, chunked: bool,
               output_dir: str) -> dict:
    return {
        "model_name_or_path": model_dir, "stage": "sft", "finetuning_type": "lora", "lora_target": "all",
        "lora_rank": 8, "dataset": dataset, "dataset_dir": data_dir, "template": "qwen", "cutoff_len": 256,
        "packing": True, "per_device_train_batch_size": 4, "learning_rate": 1e-3, "max_steps": args.steps,
        "seed": 42, "logging_steps": 1, "save_strategy": "no", "output_dir": output_dir,
        "overwrite_output_dir": True, "chunked_loss": chunked, "disable_tqdm": True,
    }


def dataset_folder(work: Path) -> tuple[str, str]:
    """(dataset_dir, dataset name): the issue's alpaca_zh_demo from ../shared when present, else our sample."""
    corpus = ROOT.parent / "shared" / "corpora" / "alpaca_zh_demo.json"
    if not corpus.is_file():
        return str(ROOT / "data"), "sft_demo_zh_en"
    folder = work / "data"
    folder.mkdir()
    (folder / "dataset_info.json").write_text(json.dumps({"alpaca_zh_demo": {"file_name": str(corpus)}}))
    return str(folder), "alpaca_zh_demo"


def summarize(name: str, runs: list[dict], warmup: int) -> dict:
    """Per variant: per-run medians over the steps after the warm-up, and whether the runs agree."""
    per_run = []
    for run in runs:
        steps = run["steps"][warmup:]
        per_run.append({"step_s": statistics.median(s["wall"] for s in steps),
                        "faults_per_step": statistics.median(s["faults"] for s in steps),
                        "faults_max_step": max(s["faults"] for s in steps),
                        "sys_s_per_step": statistics.median(s["sys"] for s in steps),
                        "peak_rss_mib": run["peak_rss_mib"]})
    times = [run["step_s"] for run in per_run]
    spread = (max(times) - min(times)) / statistics.median(times)
    faulting = max(run["faults_per_step"] for run in per_run)
    return {"variant": name, "runs": per_run, "step_s": statistics.median(times), "spread": spread,
            "faults_per_step": faulting, "sys_s_per_step": max(run["sys_s_per_step"] for run in per_run),
            "peak_rss_mib": max(run["peak_rss_mib"] for run in per_run),
            "unsteady": spread > UNSTEADY_SPREAD or faulting > UNSTEADY_FAULTS}


def plot(results: list[dict], path: Path) -> None:
    from llmtuner.extras.plotting import new_figure, save_png

    figure = new_figure((10, 3.8))
    names = [result["variant"] for result in results]
    for index, (key, label) in enumerate((("step_s", "median step (s)"), ("faults_per_step", "page faults / step"),
                                          ("peak_rss_mib", "peak RSS (MiB)"))):
        axis = figure.add_subplot(1, 3, index + 1)
        for position, result in enumerate(results):  # one dot per run: a bimodal variant shows two clusters
            axis.scatter([position] * len(result["runs"]), [run[key] for run in result["runs"]], s=14)
        axis.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
        axis.set_title(label, fontsize=9)
    figure.suptitle("allocator set-ups, tiny Qwen2 LoRA packed (each dot one run)")
    save_png(figure, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default=None, help=f"comma-separated allocators: {', '.join(ALLOCATORS)}")
    parser.add_argument("--chunked", default="off,on", help="chunked_loss values to run: off, on or off,on")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2, help="first steps left out of every figure")
    parser.add_argument("--out", default=str(ROOT / "bench" / "malloc.json"))
    parser.add_argument("--job", nargs=2, metavar=("CONFIG_JSON", "RESULT_FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.job:
        run_job(json.loads(args.job[0]), args.job[1])
        return 0
    allocators = (args.variants or ",".join(ALLOCATORS)).split(",")
    chunked = [{"off": False, "on": True}.get(value) for value in args.chunked.split(",")]
    if set(allocators) - set(ALLOCATORS) or None in chunked or args.runs < 1 or args.steps <= args.warmup:
        print(f"error: bad arguments\nhint: --variants {','.join(ALLOCATORS)} --chunked off,on --runs >= 1, "
              "--steps > --warmup", file=sys.stderr)
        return 2
    missing = [name for name in allocators if not Path(ALLOCATORS[name].get("LD_PRELOAD", "/")).exists()]
    for name in missing:
        print(f"skipping {name}: {ALLOCATORS[name]['LD_PRELOAD']} is not installed (apt-get install "
              f"{'libjemalloc2' if 'jemalloc' in name else 'libtcmalloc-minimal4'})", file=sys.stderr)
    variants = [(name, flag) for flag in chunked for name in allocators if name not in missing]
    from llmtuner.model.tiny import make_tiny_model

    runs: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        model_dir = make_tiny_model("qwen2", str(work / "tiny"))
        data_dir, dataset = dataset_folder(work)
        base_env = {key: value for key, value in os.environ.items()
                    if not key.startswith("MALLOC_") and key not in ("LD_PRELOAD", "GLIBC_TUNABLES",
                                                                     "LLMTUNER_MALLOC_TUNING")}
        for repeat in range(args.runs):  # variants alternate, so a slow spell of the machine hits them all
            for name, flag in variants:
                label = f"{name}, chunked {'on' if flag else 'off'}"
                print(f"run {repeat + 1}/{args.runs}: {label}", file=sys.stderr, flush=True)
                config = job_config(args, model_dir, data_dir, dataset, flag, str(work / "out"))
                result_file = work / "result.json"
                env = {**base_env, **ALLOCATORS[name], "HF_HUB_OFFLINE": "1"}
                done = subprocess.run([sys.executable, __file__, "--job", json.dumps(config), str(result_file)],
                                      env=env, capture_output=True, text=True, cwd=ROOT)
                if done.returncode != 0:
                    print(f"error: run '{label}' failed (exit {done.returncode}):\n{done.stderr[-3000:]}",
                          file=sys.stderr)
                    return 1
                runs.setdefault(label, []).append(json.loads(result_file.read_text(encoding="utf-8")))
    results = [summarize(label, label_runs, args.warmup) for label, label_runs in runs.items()]
    print(f"\n{dataset}, tiny Qwen2 LoRA packed 4 x 256, {args.steps} steps (first {args.warmup} left out), "
          f"{args.runs} runs each, {os.cpu_count()} CPUs")
    header = f"{'variant':<26} {'step s':>7} {'spread':>7} {'faults/step':>12} {'sys s/step':>10} {'peak RSS MiB':>12}"
    print(header + "\n" + "-" * len(header))
    for r in results:
        print(f"{r['variant']:<26} {r['step_s']:>7.2f} {r['spread']:>7.0%} {r['faults_per_step']:>12,.0f} "
              f"{r['sys_s_per_step']:>10.3f} {r['peak_rss_mib']:>12.0f}{'  UNSTEADY' if r['unsteady'] else ''}")
    write_results(Path(args.out), {"dataset": dataset}, results, plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
