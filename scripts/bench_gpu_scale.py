"""Peak GPU memory and training tokens/s of QLoRA 4-bit and DeepSpeed ZeRO-3 on a Qwen2.5-0.5B-shaped model.

    python scripts/bench_gpu_scale.py                      # on a CUDA machine: both modes, 20 steps each
    python scripts/bench_gpu_scale.py --modes qlora4 --steps 10 --out gpu_scale.json
    python scripts/bench_gpu_scale.py --tiny               # CPU smoke test of the script on the tiny model

The model is built from the Qwen2.5-0.5B config (hidden 896, 24 layers, 14 heads / 2 KV heads, MLP 4864, tied
embeddings; the vocabulary is the real Qwen tokenizer's 151,669 tokens) with random weights: memory and speed do
not depend on the weights. Each mode trains through llmtuner's own path (``run_exp``), in its own process so the
peak memory of one never counts for the other:

- ``qlora4``: quantization_bit 4 (nf4, double quantization), LoRA on every linear layer, bf16.
- ``zero3``:  full tuning under DeepSpeed ZeRO-3 (configs/deepspeed/ds_z3.json) on one GPU, launched by torchrun.
- ``lora``:   plain bf16 LoRA, the baseline the other two are read against.

Tokens/s counts the non-padding input tokens of the steps after the first two (warm-up), from the Trainer's
``num_input_tokens_seen``. Peak memory is ``torch.cuda.max_memory_allocated`` / ``max_memory_reserved`` over the
whole run (model loading included). Prints a table and writes JSON (default bench_gpu_scale.json).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from bench_train import QWEN25_05B_DIMS  # noqa: E402  (scripts/ is on sys.path when this file runs)
MODES = ("qlora4", "zero3", "lora")
WARMUP_STEPS = 2


def mode_args(mode: str, model_dir: str, output_dir: str, steps: int, batch: int, cutoff: int, gpu: bool) -> dict:
    args = {
        "model_name_or_path": model_dir, "stage": "sft", "dataset": "sft_demo_zh_en", "template": "qwen",
        "dataset_dir": str(ROOT / "data"), "cutoff_len": cutoff, "output_dir": output_dir,
        "overwrite_output_dir": True, "per_device_train_batch_size": batch, "max_steps": steps,
        "learning_rate": 1e-4, "logging_steps": 1, "save_strategy": "no", "report_to": "none",
        "include_num_input_tokens_seen": "non_padding", "bf16": gpu, "seed": 42,
    }
    if mode == "qlora4":
        args.update(finetuning_type="lora", quantization_bit=4, quantization_type="nf4", double_quantization=True)
    elif mode == "zero3":
        args.update(finetuning_type="full", deepspeed=str(ROOT / "configs/deepspeed/ds_z3.json"))
    else:
        args.update(finetuning_type="lora")
    return args


def run_child(mode: str, model_dir: str, result_file: str, steps: int, batch: int, cutoff: int) -> None:
    """Train one mode in this process and write its measurements to ``result_file``."""
    import resource

    import torch
    from transformers import TrainerCallback

    from llmtuner.train.tuner import run_exp

    gpu = torch.cuda.is_available()
    times: dict[int, tuple[float, int]] = {}

    class Throughput(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if gpu:
                torch.cuda.synchronize()
            times[state.global_step] = (time.perf_counter(), state.num_input_tokens_seen)

    with tempfile.TemporaryDirectory() as output_dir:
        run_exp(mode_args(mode, model_dir, output_dir, steps, batch, cutoff, gpu), callbacks=[Throughput()])
    if int(os.environ.get("RANK", "0")) != 0:
        return
    (t0, n0), (t1, n1) = times[WARMUP_STEPS], times[max(times)]
    result = {
        "mode": mode, "device": torch.cuda.get_device_name() if gpu else "cpu",
        "steps_timed": max(times) - WARMUP_STEPS,
        "batch": batch, "cutoff_len": cutoff, "tokens_per_s": round((n1 - n0) / (t1 - t0), 1),
        "peak_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3) if gpu else None,
        "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 3) if gpu else None,
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
    }
    Path(result_file).write_text(json.dumps(result), encoding="utf-8")


def build_model(tiny: bool, folder: Path) -> str:
    from llmtuner.model.tiny import make_tiny_model

    return make_tiny_model("qwen2", str(folder), **({} if tiny else QWEN25_05B_DIMS))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, from {', '.join(MODES)}")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--cutoff_len", type=int, default=512)
    parser.add_argument("--out", default="bench_gpu_scale.json", help="where the JSON goes")
    parser.add_argument("--tiny", action="store_true", help="the tiny model, to smoke-test the script (CPU is fine)")
    parser.add_argument("--child", nargs=3, metavar=("MODE", "MODEL_DIR", "RESULT_FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        run_child(*args.child, steps=args.steps, batch=args.batch, cutoff=args.cutoff_len)
        return 0

    import torch

    if not torch.cuda.is_available() and not args.tiny:
        print("error: this benchmark measures GPU memory and needs a CUDA GPU; none is visible.\n"
              "hint: run it on a GPU machine, or pass --tiny to smoke-test the script on CPU.", file=sys.stderr)
        return 2
    modes = [mode.strip() for mode in args.modes.split(",") if mode.strip()]
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        print(f"error: unknown mode(s) {', '.join(unknown)}.\nhint: choose from {', '.join(MODES)}.", file=sys.stderr)
        return 2
    if args.steps <= WARMUP_STEPS:
        print(f"error: --steps {args.steps} leaves no timed step.\nhint: use --steps {WARMUP_STEPS + 5} or more.",
              file=sys.stderr)
        return 2

    results = []
    with tempfile.TemporaryDirectory() as work:
        model_dir = build_model(args.tiny, Path(work) / "model")
        for mode in modes:
            result_file = Path(work) / f"{mode}.json"
            child = [__file__, "--child", mode, model_dir, str(result_file), "--steps", str(args.steps),
                     "--batch", str(args.batch), "--cutoff_len", str(args.cutoff_len)]
            # DeepSpeed wants a launcher even for one process; the others run as plain python.
            cmd = ([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", *child] if mode == "zero3"
                   else [sys.executable, *child])
            print(f"+ {' '.join(cmd)}", flush=True)
            env = {**os.environ, "HF_HUB_OFFLINE": "1"}
            if subprocess.run(cmd, env=env, check=False).returncode != 0 or not result_file.is_file():
                print(f"error: mode {mode} failed (see its output above).", file=sys.stderr)
                return 1
            results.append(json.loads(result_file.read_text(encoding="utf-8")))

    model = "tiny-qwen2" if args.tiny else "Qwen2.5-0.5B-shaped"
    print(f"\n{model}, batch {args.batch} x {args.cutoff_len} tokens max, {args.steps} steps ({WARMUP_STEPS} warm-up)")
    print(f"{'mode':<8} {'device':<28} {'tokens/s':>10} {'peak alloc GiB':>15} {'peak reserved GiB':>18} "
          f"{'peak RSS GiB':>13}")
    for r in results:
        print(f"{r['mode']:<8} {r['device'][:28]:<28} {r['tokens_per_s']:>10} {str(r['peak_allocated_gib']):>15} "
              f"{str(r['peak_reserved_gib']):>18} {r['peak_rss_gib']:>13}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": model, "dims": {} if args.tiny else QWEN25_05B_DIMS, "results": results},
                              indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
