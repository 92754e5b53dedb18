"""Attention for packed rows on CPU: the whole row under a block-diagonal mask vs causal sdpa per sample.

    python scripts/bench_packed_attention.py                     # ~3 min on 2 idle cores
    python scripts/bench_packed_attention.py --rounds 3 --batches 1

Rows: the built-in sample sft data (``sft_demo_zh_en``) tokenised by the 42M ``small`` model of
``scripts/bench_train.py`` (its own 32k BPE), packed into rows of ``--cutoff_len`` (512) tokens by llmtuner's packing,
the first 1 or 4 rows per batch (``--batches``). Candidates, timed side by side in one process, interleaved round by
round (each round times every candidate ``--iters`` times; reported, for wall time and for the process's CPU time:
the median over all of them, and the spread = (max - min) / median of the per-round medians):

- ``block mask sdpa`` (what ``attn_implementation: sdpa`` does today): padded rows, transformers'
  ``create_causal_mask`` finds the samples from the restarting ``position_ids`` and builds the 4D block-diagonal
  causal mask, one sdpa call over the whole row;
- ``per-sample sdpa`` (``llmtuner_packed_sdpa``, model/packed_attention.py, what CPU training with packing uses):
  the rows flattened without padding (``DataCollatorWithFlattening``), one causal sdpa call per sample on the
  ``cu_seq_lens_q`` boundaries (mask creation included, as in the model);
- ``flex attention``: a document mask ``BlockMask`` and compiled ``flex_attention``; torch on CPU has no backward
  for it, so it is recorded as unavailable when the backward fails.

Two levels: ``attention`` = forward + backward of one attention call (8 heads x 64, the small model's shape, random
q/k/v); ``train step`` = forward + backward + AdamW step of the whole small model, full tuning, fp32.
Prints a table; writes JSON and a PNG bar chart (default bench/packed_attention.json/.png).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "scripts"))

BLOCK, PER_SAMPLE, FLEX = "block mask sdpa", "per-sample sdpa", "flex attention"


def packed_rows(model_dir: str, cutoff_len: int) -> tuple[Any, list[dict]]:
    """The sample sft data tokenised by the model's tokenizer and packed into rows of cutoff_len."""
    from llmtuner.data.dataset import get_dataset
    from llmtuner.data.templates import get_template
    from llmtuner.hparams.parser import get_train_args
    from llmtuner.model import load_tokenizer

    model_args, data_args, training_args, _, _ = get_train_args({
        "model_name_or_path": model_dir, "stage": "sft", "dataset": "sft_demo_zh_en",
        "dataset_dir": str(ROOT / "data"), "template": "qwen", "cutoff_len": cutoff_len, "packing": True,
        "output_dir": str(Path(model_dir) / "unused"), "use_cpu": True,
    })
    tokenizer = load_tokenizer(model_args)
    template = get_template(data_args.template, tokenizer)
    template.fix_tokenizer(tokenizer)
    dataset = get_dataset(template, tokenizer, data_args, training_args, stage="sft").train_dataset
    return tokenizer, [dataset[i] for i in range(len(dataset))]


def collate(tokenizer: Any, rows: list[dict], candidate: str) -> dict:
    from llmtuner.data.collator import SupervisedDataCollator
    from llmtuner.extras.constants import PACKED_SDPA_ATTENTION

    layout = PACKED_SDPA_ATTENTION if candidate == PER_SAMPLE else "sdpa"
    return SupervisedDataCollator(tokenizer, attn_implementation=layout)(rows)


def attention_call(config: Any, batch: dict, candidate: str) -> Callable[[], None]:
    """A closure running forward + backward of one attention call on the batch's layout."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import create_causal_mask

    from llmtuner.model.packed_attention import packed_sdpa_attention_forward

    heads, dim = config.num_attention_heads, config.hidden_size // config.num_attention_heads
    positions = batch["position_ids"]
    rows, tokens = positions.shape
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(rows, heads, tokens, dim, generator=generator).requires_grad_() for _ in range(3))
    embeds = torch.empty(rows, tokens, 1)
    module = torch.nn.Module()
    module.num_key_value_groups, module.is_causal = 1, True
    config._attn_implementation = "sdpa"

    if candidate == BLOCK:
        def run() -> None:
            mask = create_causal_mask(config, embeds, None, None, position_ids=positions)
            sdpa_attention_forward(module, q, k, v, mask, scaling=dim**-0.5)[0].sum().backward()
    elif candidate == PER_SAMPLE:
        cu_seq_lens = batch["cu_seq_lens_q"]

        def run() -> None:
            mask = create_causal_mask(config, embeds, None, None, position_ids=positions)
            packed_sdpa_attention_forward(module, q, k, v, mask, scaling=dim**-0.5, cu_seq_lens_q=cu_seq_lens)[
                0].sum().backward()
    else:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        segment = torch.cumsum(torch.diff(positions[0], prepend=positions[0, :1] - 1) != 1, 0)
        block_mask = create_block_mask(lambda b, h, qi, ki: (segment[qi] == segment[ki]) & (qi >= ki),
                                       1, None, tokens, tokens, device="cpu")
        compiled = torch.compile(flex_attention)

        def run() -> None:
            compiled(q, k, v, block_mask=block_mask, scale=dim**-0.5).sum().backward()
    return run


def train_step(model: Any, optimizer: Any, batch: dict, implementation: str) -> Callable[[], None]:
    model.set_attn_implementation(implementation)

    def run() -> None:
        model.set_attn_implementation(implementation)
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return run


def time_interleaved(calls: dict[str, Callable[[], None]], rounds: int, iters: int) -> dict[str, dict]:
    """Every call once untimed, then `rounds` rounds each timing every call `iters` times, in turn.

    Wall time and the process's CPU time (user + system, all threads): on a shared machine the CPU time moves less
    when other processes take cores away, though not at all is too much to hope for."""
    for call in calls.values():
        call()
    times: dict[str, list[list[tuple[float, float]]]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            this_round = []
            for _ in range(iters):
                wall, cpu = time.perf_counter(), time.process_time()
                call()
                this_round.append((time.perf_counter() - wall, time.process_time() - cpu))
            times[name].append(this_round)
    summary = {}
    for name, per_round in times.items():
        summary[name] = {}
        for clock, key in ((0, "median_ms"), (1, "cpu_median_ms")):
            medians = [statistics.median(value[clock] for value in values) for values in per_round]
            median = statistics.median(value[clock] for values in per_round for value in values)
            prefix = key.removesuffix("median_ms")
            summary[name][key] = 1000 * median
            summary[name][f"{prefix}spread"] = (max(medians) - min(medians)) / median
            summary[name][f"{prefix}round_medians_ms"] = [round(1000 * m, 2) for m in medians]
    return summary


def flex_unavailable_reason(config: Any, batch: dict) -> str | None:
    try:
        attention_call(config, batch, FLEX)()
    except Exception as exc:  # noqa: BLE001 -- any failure (no backward, no compiler) means "not usable here"
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    return None


def run(args: argparse.Namespace, work: Path) -> dict:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from bench_train import build_small_model
    from llmtuner.model.packed_attention import register_packed_attention

    per_sample = register_packed_attention()
    model_dir = build_small_model(work / "small")
    tokenizer, rows = packed_rows(model_dir, args.cutoff_len)
    config = AutoConfig.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
    model.config.use_cache = False
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    results: list[dict] = []
    flex_reason = None
    for batch_size in args.batches:
        chosen = rows[:batch_size]
        batches = {name: collate(tokenizer, chosen, name) for name in (BLOCK, PER_SAMPLE)}
        lengths = [len(part) for row in chosen for part in _split(row)]
        base = {"batch": batch_size, "samples": len(lengths), "real_tokens": sum(lengths),
                "padded_tokens": batches[BLOCK]["input_ids"].numel(), "sample_lengths": lengths}
        calls = {name: attention_call(config, batches[name], name) for name in (BLOCK, PER_SAMPLE)}
        flex_reason = flex_unavailable_reason(config, batches[BLOCK]) if batch_size == 1 else flex_reason
        if flex_reason is None and batch_size == 1:
            calls[FLEX] = attention_call(config, batches[BLOCK], FLEX)
        for name, summary in time_interleaved(calls, args.rounds, args.iters).items():
            results.append({**base, "level": "attention", "candidate": name, **summary})
        steps = {BLOCK: train_step(model, optimizer, batches[BLOCK], "sdpa"),
                 PER_SAMPLE: train_step(model, optimizer, batches[PER_SAMPLE], per_sample)}
        for name, summary in time_interleaved(steps, args.rounds, args.step_iters).items():
            results.append({**base, "level": "train step", "candidate": name, **summary,
                            "real_tokens_per_s": sum(lengths) / (summary["median_ms"] / 1000)})
    model.set_attn_implementation("sdpa")
    return {"results": results, "flex_attention_unavailable": flex_reason}


def _split(row: dict) -> list[list[int]]:
    from llmtuner.data.preprocess.packing import split_packed_row

    return [part["input_ids"] for part in split_packed_row(row)]


def add_speedups(results: list[dict]) -> None:
    for result in results:
        block = next(r for r in results if (r["level"], r["batch"], r["candidate"]) ==
                     (result["level"], result["batch"], BLOCK))
        result["speedup_vs_block_mask"] = block["median_ms"] / result["median_ms"]
        result["cpu_speedup_vs_block_mask"] = block["cpu_median_ms"] / result["cpu_median_ms"]


def print_table(report: dict) -> None:
    header = (f"{'level':<11} {'batch':>5} {'samples':>7} {'candidate':<16} {'median ms':>10} {'spread':>7} "
              f"{'x block':>7} {'CPU ms':>9} {'spread':>7} {'x block':>7}")
    print(header)
    print("-" * len(header))
    for r in report["results"]:
        print(f"{r['level']:<11} {r['batch']:>5} {r['samples']:>7} {r['candidate']:<16} {r['median_ms']:>10.1f} "
              f"{100 * r['spread']:>6.0f}% {r['speedup_vs_block_mask']:>7.2f} {r['cpu_median_ms']:>9.1f} "
              f"{100 * r['cpu_spread']:>6.0f}% {r['cpu_speedup_vs_block_mask']:>7.2f}")
    if report["flex_attention_unavailable"]:
        print(f"\nflex attention not measured: {report['flex_attention_unavailable']}")


def plot(results: list[dict], path: Path) -> None:
    from llmtuner.extras.plotting import new_figure, save_png

    groups = sorted({(r["level"], r["batch"]) for r in results})
    candidates = [c for c in (BLOCK, PER_SAMPLE, FLEX) if any(r["candidate"] == c for r in results)]
    figure = new_figure((2 + 2.2 * len(groups), 4))
    axis = figure.add_subplot()
    width = 0.8 / len(candidates)
    for offset, candidate in enumerate(candidates):
        values = [next((r["speedup_vs_block_mask"] for r in results if (r["level"], r["batch"]) == group
                        and r["candidate"] == candidate), 0) for group in groups]
        axis.bar([i + offset * width for i in range(len(groups))], values, width, label=candidate)
    axis.set_xticks([i + width * (len(candidates) - 1) / 2 for i in range(len(groups))],
                    [f"{level}\nbatch {batch}" for level, batch in groups])
    axis.axhline(1.0, color="grey", linewidth=0.8)
    axis.set_ylabel("speed vs block mask sdpa (x)")
    axis.set_title("packed rows on CPU: attention per sample")
    axis.legend()
    figure.tight_layout()
    save_png(figure, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", default="1,4", help="comma-separated packed rows per batch")
    parser.add_argument("--cutoff_len", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--iters", type=int, default=5, help="attention calls timed per candidate and round")
    parser.add_argument("--step_iters", type=int, default=2, help="train steps timed per candidate and round")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's); 1 keeps the comparison steadier on a shared machine")
    parser.add_argument("--out", default=str(ROOT / "bench" / "packed_attention.json"))
    args = parser.parse_args(argv)
    args.batches = [int(b) for b in args.batches.split(",") if b]
    if not args.batches or min(args.batches) < 1 or min(args.rounds, args.iters, args.step_iters) < 1:
        print("error: bad arguments\nhint: --batches 1,4 and --rounds/--iters/--step_iters >= 1", file=sys.stderr)
        return 2
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as scratch:
        report = run(args, Path(scratch))
    add_speedups(report["results"])
    print(f"\ncpu, {torch.get_num_threads()} threads, rows of {args.cutoff_len}, {args.rounds} interleaved rounds")
    print_table(report)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report["meta"] = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "torch": torch.__version__,
                      "cpu_count": os.cpu_count(), "load_average": os.getloadavg()}
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    plot(report["results"], out.with_suffix(".png"))
    print(f"\nwrote {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
