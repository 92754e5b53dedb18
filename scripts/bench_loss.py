"""Memory and time of the causal-LM loss alone: the plain path (full logits, then cross-entropy) against
``chunked_loss`` (train/chunked_loss.py), on an output head of Qwen2.5-0.5B's shape (151,669 x 896).

    python scripts/bench_loss.py                         # 4 x 512 tokens, 60% of them trained (CPU, fp32)
    python scripts/bench_loss.py --rows 8192 --trained 0.5

Each variant runs in its own process (forward + backward of the loss on random hidden states, weight and labels,
``--repeats`` times); reported: peak RSS above the process's level before the first loss, and the median seconds
per loss. Prints a table; writes JSON and a PNG bar chart (default bench/loss.json/.png).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
VARIANTS = ("plain", "chunked")


def run_variant(variant: str, args: argparse.Namespace) -> dict:
    """Runs in a child process: peak RSS growth and seconds per forward + backward."""
    import torch

    from llmtuner.train.chunked_loss import causal_lm_loss_sum

    generator = torch.Generator().manual_seed(0)
    batch, length = args.rows // args.length, args.length
    hidden = torch.randn(batch, length, args.hidden, generator=generator)
    head = torch.nn.Linear(args.hidden, args.vocab, bias=False)
    head.weight.requires_grad_(False)  # LoRA: the head is frozen; the gradient goes to the hidden states
    labels = torch.randint(0, args.vocab, (batch, length), generator=generator)
    labels[torch.rand(batch, length, generator=generator) >= args.trained] = -100

    class Decoder(torch.nn.Module):  # hands back the prepared hidden states, so only the loss is timed
        def forward(self, input_ids, use_cache=False):
            return type("Output", (), {"last_hidden_state": input_ids})()

    def plain() -> torch.Tensor:
        logits = head(hidden_leaf).float()
        return torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, args.vocab), labels[:, 1:].reshape(-1),
                                                 ignore_index=-100, reduction="sum")

    def chunked() -> torch.Tensor:
        return causal_lm_loss_sum(Decoder(), head, {"input_ids": hidden_leaf, "labels": labels})[0]

    loss_fn = plain if variant == "plain" else chunked
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    seconds = []
    for _ in range(args.repeats):
        hidden_leaf = hidden.clone().requires_grad_(True)
        start = time.perf_counter()
        loss_fn().backward()
        seconds.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"variant": variant, "peak_rss_growth_mib": (peak - before) / 1024,
            "seconds_per_loss": statistics.median(seconds), "seconds_all": seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2048, help="tokens in the batch (a multiple of --length)")
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--hidden", type=int, default=896)
    parser.add_argument("--vocab", type=int, default=151669)
    parser.add_argument("--trained", type=float, default=0.6, help="share of positions with a label")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "bench" / "loss.json"))
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rows % args.length or not 0 < args.trained <= 1 or args.repeats < 1:
        print("error: --rows must be a multiple of --length, --trained in (0, 1], --repeats >= 1.\n"
              "hint: python scripts/bench_loss.py --rows 2048 --length 512 --trained 0.6", file=sys.stderr)
        return 2
    if args.variant:
        print(json.dumps(run_variant(args.variant, args)))
        return 0
    env = {**os.environ, "LLMTUNER_MALLOC_TUNING": "0"}  # glibc's defaults: freed big tensors leave RSS
    results = []
    from tqdm import tqdm

    for variant in tqdm(VARIANTS, desc="loss variants"):
        done = subprocess.run([sys.executable, __file__, *(argv or sys.argv[1:]), "--variant", variant], env=env,
                              capture_output=True, text=True, check=True)
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    plain = results[0]
    print(f"\nloss of {args.rows} tokens ({args.trained:.0%} trained), head {args.vocab} x {args.hidden}, fp32, "
          f"{os.cpu_count()} CPUs, median of {args.repeats}")
    print(f"{'variant':<10} {'peak RSS growth MiB':>20} {'s per loss':>11} {'x plain time':>13}")
    for result in results:
        result["time_ratio_vs_plain"] = result["seconds_per_loss"] / plain["seconds_per_loss"]
        print(f"{result['variant']:<10} {result['peak_rss_growth_mib']:>20.0f} {result['seconds_per_loss']:>11.2f} "
              f"{result['time_ratio_vs_plain']:>13.2f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "rows": args.rows, "vocab": args.vocab,
            "hidden": args.hidden, "trained": args.trained, "load_average": os.getloadavg()}
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n", encoding="utf-8")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(8, 3))
    names = [result["variant"] for result in results]
    axes[0].bar(names, [result["peak_rss_growth_mib"] for result in results])
    axes[0].set_ylabel("peak RSS growth (MiB)")
    axes[1].bar(names, [result["seconds_per_loss"] for result in results])
    axes[1].set_ylabel("seconds per loss (fwd + bwd)")
    figure.suptitle(f"causal-LM loss, {args.rows} tokens, vocabulary {args.vocab}")
    figure.tight_layout()
    figure.savefig(out.with_suffix(".png"), dpi=100)
    plt.close(figure)
    print(f"\nwrote {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
