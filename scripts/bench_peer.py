"""The same LoRA sft job through LLaMA-Factory 0.9.5 and through llmtuner, side by side on CPU.

    python scripts/bench_peer.py                                    # tiny model, packed and unpacked, 3 runs each
    python scripts/bench_peer.py --modes packed --runs 1 --steps 3  # a smoke run
    python scripts/bench_peer.py --model qwen0.5b --gradient_checkpointing both
    python scripts/bench_peer.py --work_dir /tmp/peer   # keep every run's config.yaml, log.txt and output folder

LLaMA-Factory is installed by this script into its own virtual environment (``--peer_venv``, default
~/.cache/llmtuner/bench-peer/llamafactory-0.9.5-venv), never into ours, and reused while it imports. Each run is one
process of each tool's real CLI (``llamafactory-cli train cfg.yaml`` with FORCE_TORCHRUN unset, ``python -m
llmtuner.cli train cfg.yaml``), offline (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE), with an empty datasets cache of
its own (both tokenise from scratch), alternating LLaMA-Factory, llmtuner, LLaMA-Factory, ... and waiting before
each run until the CPU is idle (``--idle``, at most ``--max_wait`` s).

The job: a random model built here with the real Qwen tokenizer (``tiny``: the tiny Qwen2 of make-tiny-model;
``qwen0.5b``: Qwen2.5-0.5B's shape), alpaca_zh_demo from ../shared/corpora (one dataset_info.json in a temp folder
serves both tools), qwen template, LoRA rank 8 / alpha 16 / dropout 0 on all linear layers, lr 1e-3 cosine without
warm-up, seed 42, fp32, no eval, no checkpoints (both save the adapter once at the end), logging every step.
tiny: cutoff 256, batch 4, 30 steps; qwen0.5b: cutoff 512, batch 1, 5 steps. Modes: ``packed`` (LLaMA-Factory
``packing + neat_packing``, llmtuner ``packing: true``) and ``unpacked``. ``--gradient_checkpointing on|off``
gives both the same setting; ``default`` leaves each tool's own (LLaMA-Factory on, llmtuner off); ``both`` = on and
off. CPU threads: each tool's own choice (recorded in the JSON).

Columns, one row per run:
- ``wall``: seconds from process start to exit (start-up, tokenisation, model load, training, saving);
- ``train``: train_runtime, the Trainer's own clock of the training loop (train_results.json);
- ``eff tok/s``: effective tokens per second by LLaMA-Factory's definition (``calculate_tps`` in
  llamafactory/extras/misc.py, ``include_effective_tokens_per_second``): the input_ids of every row of the
  tokenised training set x epochs trained / train_runtime. LLaMA-Factory reports it; for llmtuner the same formula
  is applied to llmtuner's own tokenised training set (built here once per mode with its data pipeline) and its
  epoch and train_runtime. LLaMA-Factory's packed rows are padded to cutoff_len + 1 and the padding counts;
- ``user`` / ``sys``: CPU seconds of the run's process and the children it waited for (os.wait4);
- ``minflt`` / ``majflt``: minor / major page faults of the same;
- ``RSS``: peak resident memory in MiB, the largest of any one process of the run (ru_maxrss); each tool trains in
  a single process, so this is the training process's peak;
- ``others``: CPU seconds the rest of the machine used during the run (/proc/stat busy time minus the run's own):
  a run with a large value shared the CPU and is less trustworthy.
Summary per side and configuration: median train_runtime, its spread (max - min) / median, the ratio ours / LF of
the medians and of the best runs (below 1: llmtuner is faster; the speed-up is its inverse), and of peak RSS.
Writes JSON (default bench/peer.json, with the environment: versions, threads, CPU, kernel, THP) and a PNG next to it.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from bench_train import QWEN25_05B_DIMS  # noqa: E402  (scripts/ is on sys.path when this file runs)

PEER_VERSION, TORCH_VERSION = "0.9.5", "2.13.0"
DEFAULT_VENV = Path.home() / ".cache" / "llmtuner" / "bench-peer" / f"llamafactory-{PEER_VERSION}-venv"
CORPUS = ROOT.parent / "shared" / "corpora" / "alpaca_zh_demo.json"
DATASET = "alpaca_zh_demo"
MODELS = {"tiny": {"dims": {}, "cutoff_len": 256, "batch": 4, "steps": 30},
          "qwen0.5b": {"dims": QWEN25_05B_DIMS, "cutoff_len": 512, "batch": 1, "steps": 5}}
SIDES = ("llamafactory", "llmtuner")


# ---------------------------------------------------------------- LLaMA-Factory's own virtual environment

def peer_version(venv: Path) -> str | None:
    """LLaMA-Factory's and torch's versions in ``venv``, or None when it does not import."""
    python = venv / "bin" / "python"
    if not python.is_file():
        return None
    code = "import llamafactory, torch, llamafactory.train.tuner; print(llamafactory.__version__, torch.__version__)"
    probe = subprocess.run([str(python), "-c", code], capture_output=True, text=True, env=peer_env({}))
    last = (probe.stdout.strip().splitlines() or [""])[-1]  # LLaMA-Factory logs its warnings to stdout
    return last if probe.returncode == 0 and last.startswith(PEER_VERSION) else None


def install_peer(venv: Path) -> str:
    """Create ``venv`` and install llamafactory==0.9.5 into it with torch 2.13.0 (CPU), unless it works already."""
    if version := peer_version(venv):
        print(f"LLaMA-Factory venv {venv}: {version}")
        return version
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--progress-bar", "off"]
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(venv)],
        # torch first, pinned: this machine's CPU wheel; a bare `torch` requirement would pull a multi-GB CUDA build
        [*pip, f"torch=={TORCH_VERSION}"],
        # repeating the torch pin keeps pip from replacing it while it resolves llamafactory's own pins
        # (transformers<=5.6.0, peft<=0.18.1, trl<=0.24.0, accelerate<=1.11.0, datasets<=4.0.0)
        [*pip, f"llamafactory=={PEER_VERSION}", f"torch=={TORCH_VERSION}"],
        # PyPI's torchvision is built against CUDA torch: with the CPU torch its compiled ops fail to load and
        # transformers' import of PreTrainedModel breaks. A text-only sft never needs it.
        [str(venv / "bin" / "python"), "-m", "pip", "uninstall", "-y", "torchvision"],
    ]
    venv.parent.mkdir(parents=True, exist_ok=True)
    for number, step in enumerate(steps, start=1):
        print(f"installing LLaMA-Factory ({number}/{len(steps)}): python {' '.join(step[1:])}", flush=True)
        subprocess.run(step, check=True)
    # torchaudio (CUDA build too) is imported by llamafactory/data/mm_plugin.py but used only for audio inputs.
    # Without its compiled libraries it imports as pure Python (its own fallback for a library not found);
    # with them it fails on the missing libc10_cuda.so. PyPI has no CPU build of torchaudio.
    for library in venv.glob("lib/python3*/site-packages/torchaudio/lib/*.so"):
        library.unlink()
    if not (version := peer_version(venv)):
        raise SystemExit(f"error: LLaMA-Factory does not import in {venv} after installing it.\n"
                         f"hint: run {venv}/bin/python -c 'import llamafactory' to see why; --peer_venv elsewhere.")
    print(f"LLaMA-Factory installed in {venv}: {version}")
    return version


# ---------------------------------------------------------------- the job, as each tool's YAML

def write_dataset_info(folder: Path, corpus: Path) -> Path:
    """One dataset_info.json both tools read: the corpus by absolute path, nothing copied."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dataset_info.json").write_text(json.dumps({DATASET: {"file_name": str(corpus.resolve())}}, indent=2),
                                              encoding="utf-8")
    return folder


def shared_values(job: dict[str, Any]) -> dict[str, Any]:
    """Keys both tools read with the same meaning, at equal explicit values."""
    return {
        "model_name_or_path": job["model_dir"], "stage": "sft", "finetuning_type": "lora", "lora_target": "all",
        "lora_rank": 8, "lora_alpha": 16, "lora_dropout": 0.0, "dataset": DATASET, "dataset_dir": job["dataset_dir"],
        "template": "qwen", "cutoff_len": job["cutoff_len"], "packing": job["mode"] == "packed",
        "overwrite_cache": True, "output_dir": job["output_dir"], "overwrite_output_dir": True, "logging_steps": 1,
        "save_strategy": "no", "report_to": "none", "plot_loss": False, "per_device_train_batch_size": job["batch"],
        "gradient_accumulation_steps": 1, "learning_rate": 1e-3, "lr_scheduler_type": "cosine", "warmup_steps": 0,
        "max_steps": job["steps"], "seed": 42, "bf16": False, "fp16": False, "use_cpu": True,
        "dataloader_num_workers": 0,
    }


def side_config(side: str, job: dict[str, Any]) -> dict[str, Any]:
    """The YAML of one side: the shared values plus each tool's own spelling of packing and checkpointing."""
    config, checkpointing = shared_values(job), job["gradient_checkpointing"]
    if side == "llamafactory":
        config.update(do_train=True, neat_packing=job["mode"] == "packed", include_effective_tokens_per_second=True)
        if checkpointing != "default":
            config["disable_gradient_checkpointing"] = checkpointing == "off"
    elif checkpointing != "default":  # transformers 5.23's name; gradient_checkpointing is its deprecated alias
        config["activation_checkpointing"] = checkpointing == "on"
    return config


def our_dataset_tokens(config: dict[str, Any]) -> tuple[int, int]:
    """(rows, input_ids tokens) of llmtuner's tokenised training set for ``config``: calculate_tps's numerator."""
    import logging

    import datasets

    from llmtuner.data.dataset import get_dataset
    from llmtuner.data.templates import get_template
    from llmtuner.hparams.parser import get_train_args
    from llmtuner.model import load_tokenizer

    logging.getLogger("llmtuner").setLevel(logging.WARNING)  # each run's log has these lines
    datasets.disable_progress_bars()
    model_args, data_args, training_args, _, _ = get_train_args(dict(config))
    tokenizer = load_tokenizer(model_args)
    template = get_template(data_args.template, tokenizer)
    template.fix_tokenizer(tokenizer)
    with contextlib.redirect_stdout(io.StringIO()):  # the first example, printed: each run's log shows it
        dataset = get_dataset(template, tokenizer, data_args, training_args, stage="sft").train_dataset
    return len(dataset), sum(len(ids) for ids in dataset["input_ids"])


# ---------------------------------------------------------------- measuring one run

def cpu_times() -> tuple[float, float]:
    """(busy, total) seconds of all CPUs since boot, from /proc/stat (iowait counts as idle)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(fields[:8]) - idle) / tick, sum(fields[:8]) / tick


def wait_for_idle(idle: float, max_wait: float, window: float = 3.0) -> float:
    """Wait until the machine's CPUs were idle for at least ``idle`` of a ``window``; returns that fraction."""
    start = time.monotonic()
    while True:
        busy0, total0 = cpu_times()
        time.sleep(window)
        busy1, total1 = cpu_times()
        fraction = max(0.0, 1 - (busy1 - busy0) / max(total1 - total0, 1e-9))
        waited = time.monotonic() - start
        if fraction >= idle or waited >= max_wait:
            if fraction < idle:
                print(f"  CPU still busy after {waited:.0f} s (idle {fraction:.0%}); running anyway", flush=True)
            return fraction
        print(f"  waiting for an idle CPU: idle {fraction:.0%} < {idle:.0%}, load {os.getloadavg()[0]:.2f} "
              f"({waited:.0f}/{max_wait:.0f} s)", flush=True)


def run_measured(cmd: list[str], env: dict[str, str], log: Path) -> dict[str, Any]:
    """Run ``cmd`` and return its wall time and rusage (itself + the children it waited for) from os.wait4."""
    busy0, _ = cpu_times()
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as out:
        process = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=log.parent)
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here; Popen must not wait again
    wall = time.perf_counter() - start
    busy1, _ = cpu_times()
    if process.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise SystemExit(f"error: {' '.join(cmd[:3])} failed (exit {process.returncode}); log {log}:\n{tail}")
    own = usage.ru_utime + usage.ru_stime
    return {"wall": wall, "user_s": usage.ru_utime, "sys_s": usage.ru_stime, "minflt": usage.ru_minflt,
            "majflt": usage.ru_majflt, "peak_rss_mib": usage.ru_maxrss / 1024,
            "others_cpu_s": max(0.0, busy1 - busy0 - own)}


def train_results(output_dir: Path) -> dict[str, Any]:
    """train_runtime, epoch, loss (and LLaMA-Factory's effective_tokens_per_sec) the Trainer wrote."""
    for name in ("train_results.json", "all_results.json"):
        if (output_dir / name).is_file():
            return json.loads((output_dir / name).read_text(encoding="utf-8"))
    state = json.loads((output_dir / "trainer_state.json").read_text(encoding="utf-8"))
    return next(entry for entry in reversed(state["log_history"]) if "train_runtime" in entry)


def run_side(side: str, job: dict[str, Any], work: Path, venv: Path, index: int) -> dict[str, Any]:
    folder = work / f"run{index:02d}-{side}"
    folder.mkdir()
    config = side_config(side, {**job, "output_dir": str(folder / "out")})
    import yaml

    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    env = {"HF_DATASETS_CACHE": str(folder / "datasets-cache")}  # both tokenise from scratch every run
    if side == "llamafactory":
        cmd, env = [str(venv / "bin" / "llamafactory-cli"), "train", "config.yaml"], peer_env(env)
    else:
        cmd, env = [sys.executable, "-m", "llmtuner.cli", "train", "config.yaml"], our_env(env)
    measured = run_measured(cmd, env, folder / "log.txt")
    results = train_results(folder / "out")
    if side == "llamafactory":
        tokens_per_s = results.get("effective_tokens_per_sec")
    else:  # calculate_tps's formula on our own tokenised training set
        tokens_per_s = job["our_dataset_tokens"] * results["epoch"] / results["train_runtime"]
    return {"side": side, **{k: job[k] for k in ("mode", "gradient_checkpointing")}, **measured,
            "train_runtime": results["train_runtime"], "epoch": results["epoch"],
            "train_loss": results.get("train_loss"), "eff_tokens_per_s": tokens_per_s}


def peer_env(extra: dict[str, str]) -> dict[str, str]:
    """LLaMA-Factory's environment: one process (no torchrun), offline, none of our PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_TORCHRUN", "PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, **extra, "DISABLE_VERSION_CHECK": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1", "USE_MODELSCOPE_HUB": "0", "TOKENIZERS_PARALLELISM": "false"}


def our_env(extra: dict[str, str]) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, **extra, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


# ---------------------------------------------------------------- summary, table, plot, environment

def spread(values: list[float]) -> float:
    """(max - min) / median, in percent."""
    return 100 * (max(values) - min(values)) / statistics.median(values)


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per configuration (mode, checkpointing) and side: medians and spread; ours / LF ratios on llmtuner's row."""
    summary: list[dict[str, Any]] = []
    configs = list(dict.fromkeys((r["mode"], r["gradient_checkpointing"]) for r in runs))
    for mode, checkpointing in configs:
        rows = {}
        for side in SIDES:
            mine = [r for r in runs
                    if (r["side"], r["mode"], r["gradient_checkpointing"]) == (side, mode, checkpointing)]
            if not mine:
                continue
            times = [r["train_runtime"] for r in mine]
            rows[side] = {"side": side, "mode": mode, "gradient_checkpointing": checkpointing, "runs": len(mine),
                          "train_runtime_median": statistics.median(times), "train_runtime_best": min(times),
                          "train_runtime_spread_pct": spread(times),
                          **{f"{key}_median": statistics.median(r[key] for r in mine)
                             for key in ("wall", "eff_tokens_per_s", "sys_s", "minflt")},
                          "peak_rss_mib_max": max(r["peak_rss_mib"] for r in mine)}
        if len(rows) == 2:
            ours, peer = rows["llmtuner"], rows["llamafactory"]
            ours["ratio_median_runtime"] = ours["train_runtime_median"] / peer["train_runtime_median"]
            ours["ratio_best_runtime"] = ours["train_runtime_best"] / peer["train_runtime_best"]
            ours["ratio_peak_rss"] = ours["peak_rss_mib_max"] / peer["peak_rss_mib_max"]
        summary += rows.values()
    return summary


def print_tables(runs: list[dict[str, Any]], summary: list[dict[str, Any]]) -> None:
    header = (f"{'side':<13}{'mode':<9}{'ckpt':<8}{'wall':>7}{'train':>8}{'eff tok/s':>10}{'user':>7}{'sys':>7}"
              f"{'minflt':>10}{'majflt':>7}{'RSS MiB':>8}{'others':>7}")
    print(header + "\n" + "-" * len(header))
    for r in runs:
        tokens = "-" if r["eff_tokens_per_s"] is None else f"{r['eff_tokens_per_s']:.1f}"
        print(f"{r['side']:<13}{r['mode']:<9}{r['gradient_checkpointing']:<8}"
              f"{r['wall']:>7.1f}{r['train_runtime']:>8.1f}"
              f"{tokens:>10}{r['user_s']:>7.1f}{r['sys_s']:>7.1f}{r['minflt']:>10,}{r['majflt']:>7,}"
              f"{r['peak_rss_mib']:>8.0f}{r['others_cpu_s']:>7.1f}")
    print("\nsummary (train_runtime median / best / spread; ratios ours / LLaMA-Factory, < 1 = llmtuner faster)")
    for s in summary:
        ratios = (f"  runtime x{s['ratio_median_runtime']:.2f} median, x{s['ratio_best_runtime']:.2f} best "
                  f"(speed-up {1 / s['ratio_median_runtime']:.2f} / {1 / s['ratio_best_runtime']:.2f}), "
                  f"RSS x{s['ratio_peak_rss']:.2f}" if "ratio_median_runtime" in s else "")
        print(f"{s['side']:<13}{s['mode']:<9}{s['gradient_checkpointing']:<8} {s['runs']} runs: "
              f"{s['train_runtime_median']:.1f} / {s['train_runtime_best']:.1f} s / "
              f"{s['train_runtime_spread_pct']:.0f}%"
              f", peak RSS {s['peak_rss_mib_max']:.0f} MiB{ratios}")


def plot(runs: list[dict[str, Any]], path: Path) -> None:
    """train_runtime of every run (dots) per side and configuration, and peak RSS, as two panels."""
    from llmtuner.extras.plotting import new_figure, save_png

    groups = list(dict.fromkeys((r["mode"], r["gradient_checkpointing"], r["side"]) for r in runs))
    labels = [f"{side}\n{mode}, ckpt {ckpt}" for mode, ckpt, side in groups]
    figure = new_figure(figsize=(max(6.0, 1.8 * len(groups)) * 2, 4.5))
    for panel, (key, title) in enumerate((("train_runtime", "train_runtime (s), each run"),
                                          ("peak_rss_mib", "peak RSS (MiB), each run")), start=1):
        axis = figure.add_subplot(1, 2, panel)
        for x, group in enumerate(groups):
            values = [r[key] for r in runs if (r["mode"], r["gradient_checkpointing"], r["side"]) == group]
            color = "tab:orange" if group[2] == "llamafactory" else "tab:blue"
            axis.bar(x, statistics.median(values), color=color, alpha=0.35)
            axis.scatter([x] * len(values), values, color=color, zorder=3)
        axis.set_xticks(range(len(groups)), labels, fontsize=8)
        axis.set_title(title)
    figure.tight_layout()
    save_png(figure, path)


def environment(venv: Path, peer: str) -> dict[str, Any]:
    """What the numbers depend on: versions, threads each tool uses, CPU, kernel, THP, allocator settings."""
    import torch

    from llmtuner.extras.cpu_runtime import cpu_threads

    def read(path: str) -> str | None:
        return Path(path).read_text().strip() if Path(path).is_file() else None

    peer_threads = subprocess.run([str(venv / "bin" / "python"), "-c", "import torch; print(torch.get_num_threads())"],
                                  capture_output=True, text=True, env=peer_env({})).stdout.strip()
    cpu_model = next((line.split(":", 1)[1].strip() for line in (read("/proc/cpuinfo") or "").splitlines()
                      if line.startswith("model name")), platform.processor())
    return {"llamafactory_and_its_torch": peer, "llmtuner_torch": torch.__version__,
            "llmtuner_commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                              text=True).stdout.strip(),
            "threads": {"llamafactory": int(peer_threads or 0) or None,
                        "llmtuner": int(os.environ.get("OMP_NUM_THREADS") or cpu_threads())},
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "cpu_count": os.cpu_count(), "cpu_model": cpu_model,
            "kernel": platform.release(), "thp": read("/sys/kernel/mm/transparent_hugepage/enabled"),
            "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_") or k == "LD_PRELOAD"},
            "python": platform.python_version()}


# ---------------------------------------------------------------- the driver

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(MODELS), default="tiny")
    parser.add_argument("--modes", default=None, help="comma-separated: packed, unpacked (default: both for tiny, "
                        "packed for qwen0.5b)")
    parser.add_argument("--gradient_checkpointing", choices=("on", "off", "both", "default"), default="off")
    parser.add_argument("--runs", type=int, default=3, help="runs per side and configuration")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps (default: 30 tiny, 5 qwen0.5b)")
    parser.add_argument("--idle", type=float, default=0.85, help="idle CPU share to wait for before each run")
    parser.add_argument("--max_wait", type=float, default=180, help="longest wait for an idle CPU, seconds")
    parser.add_argument("--peer_venv", type=Path, default=DEFAULT_VENV)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "peer.json")
    parser.add_argument("--work_dir", type=Path, default=None,
                        help="keep the model, configs, logs and outputs of the runs here (default: a temp folder)")
    args = parser.parse_args(argv)
    args.modes = [m for m in (args.modes or ("packed" if args.model == "qwen0.5b" else "packed,unpacked")).split(",")]
    if set(args.modes) - {"packed", "unpacked"} or args.runs < 1 or (args.steps is not None and args.steps < 1):
        parser.error("--modes takes packed,unpacked; --runs and --steps must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not CORPUS.is_file():
        print(f"error: {CORPUS} is missing.\nhint: the benchmark reads alpaca_zh_demo.json from ../shared/corpora.",
              file=sys.stderr)
        return 2
    peer = install_peer(args.peer_venv.expanduser())
    from llmtuner.model.tiny import make_tiny_model

    shape = MODELS[args.model]
    checkpointing = ["on", "off"] if args.gradient_checkpointing == "both" else [args.gradient_checkpointing]
    runs: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        work = args.work_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-peer-")))
        work.mkdir(parents=True, exist_ok=True)
        print(f"building the {args.model} model ...", flush=True)
        base = {"model_dir": make_tiny_model("qwen2", str(work / "model"), **shape["dims"]),
                "dataset_dir": str(write_dataset_info(work / "data", CORPUS)), "cutoff_len": shape["cutoff_len"],
                "batch": shape["batch"], "steps": args.steps or shape["steps"]}
        jobs = [{**base, "mode": mode, "gradient_checkpointing": ckpt} for mode in args.modes for ckpt in checkpointing]
        for job in jobs:
            config = side_config("llmtuner", {**job, "output_dir": str(work / "probe")})
            job["our_dataset_rows"], job["our_dataset_tokens"] = our_dataset_tokens(config)
        index = 0
        for job in jobs:
            for repeat in range(args.runs):
                for side in SIDES:  # alternating, so slow spells of a shared machine hit both tools
                    index += 1
                    print(f"[{index}/{len(jobs) * args.runs * 2}] {side} {job['mode']} checkpointing "
                          f"{job['gradient_checkpointing']}, run {repeat + 1}/{args.runs}", flush=True)
                    idle, load = wait_for_idle(args.idle, args.max_wait), os.getloadavg()[0]
                    run = run_side(side, job, work, args.peer_venv.expanduser(), index)
                    runs.append({**run, "run": repeat + 1, "idle_before": idle, "load_1min_before": load})
                    print(f"  train_runtime {run['train_runtime']:.1f} s, wall {run['wall']:.1f} s", flush=True)
    summary = summarize(runs)
    print(f"\n{args.model}, {base['steps']} steps, batch {base['batch']}, cutoff {base['cutoff_len']}")
    print_tables(runs, summary)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    job_info = {k: v for k, v in base.items() if k not in ("model_dir", "dataset_dir")}
    job_info["our_dataset"] = {j["mode"]: {"rows": j["our_dataset_rows"], "tokens": j["our_dataset_tokens"]}
                               for j in jobs}
    record = {"command": " ".join(["python", *sys.argv]), "model": args.model, "job": job_info,
              "environment": environment(args.peer_venv.expanduser(), peer), "runs": runs, "summary": summary}
    args.out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    plot(runs, args.out.with_suffix(".png"))
    print(f"\nwrote {args.out} and {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
