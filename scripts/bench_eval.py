"""Questions per second of the multiple-choice evaluator, with and without the shared k-shot KV cache.

    python scripts/bench_eval.py                                  # a random Qwen2 (hidden 256, 4 layers) on CPU
    python scripts/bench_eval.py --model /data/models/Qwen2.5-0.5B --subjects anatomy,astronomy --max_samples 50

Scores the same questions (real MMLU files, k-shot prompts) once per setting (shared prefix on/off x batch
sizes), prints a table and writes JSON. Wall-clock and CPU seconds are both reported: on a shared machine the CPU
seconds (of this process, all threads) are the steadier measure of the work done. Every setting must give the
same option scores (the largest difference from the first setting is reported), so the speed-up is never bought
with different numbers.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="local model folder (default: build a random Qwen2 with the Qwen tokenizer)")
    parser.add_argument("--hidden_size", type=int, default=256, help="size of the random model (without --model)")
    parser.add_argument("--num_layers", type=int, default=4, help="layers of the random model (without --model)")
    parser.add_argument("--template", default=None, help="chat template (default: plain k-shot text)")
    parser.add_argument("--task", default="mmlu", choices=("mmlu", "ceval", "cmmlu"))
    parser.add_argument("--task_dir", default=str(REPO.parent / "shared" / "benchmarks"))
    parser.add_argument("--subjects", default="anatomy,astronomy")
    parser.add_argument("--max_samples", type=int, default=16, help="questions per subject")
    parser.add_argument("--n_shot", type=int, default=5)
    parser.add_argument("--batch_sizes", default="1,8")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--out", default="bench_eval.json", help="where the JSON goes")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(REPO / "src"))
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from llmtuner.eval.benchmarks import load_benchmark
    from llmtuner.eval.evaluator import Evaluator, load_for_evaluation
    from llmtuner.eval.prompts import PromptBuilder
    from llmtuner.hparams import DataArguments, ModelArguments
    from llmtuner.hparams.evaluation_args import EvaluationArguments

    with tempfile.TemporaryDirectory() as scratch:
        model_dir = args.model or _random_model(scratch, args.hidden_size, args.num_layers)
        model_args = ModelArguments(model_name_or_path=model_dir)
        data_args = DataArguments(template=args.template, cutoff_len=4096)
        tokenizer, template, model = load_for_evaluation(model_args, data_args)
        benchmark = load_benchmark(args.task, args.task_dir, subjects=args.subjects.split(","), n_shot=args.n_shot,
                                   max_samples=args.max_samples)
        builder = PromptBuilder(benchmark.lang, template, tokenizer)
        settings = [(share, int(size)) for share in (False, True) for size in args.batch_sizes.split(",")]
        rows, first = [], None
        for share, batch_size in settings:
            evaluator = Evaluator(model, tokenizer, template, model_args, data_args,
                                  EvaluationArguments(task=args.task, n_shot=args.n_shot, batch_size=batch_size),
                                  share_prefix=share)
            evaluator.score_subject(builder, _first_questions(benchmark.subjects[0], 2))  # warm-up
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            started, cpu_started = time.perf_counter(), time.process_time()
            predictions = [row for subject in benchmark.subjects for row in evaluator.score_subject(builder, subject)]
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
            first = first or predictions
            difference = max(abs(a["scores"][k] - b["scores"][k]) for a, b in zip(predictions, first)
                             for k in a["scores"])
            rows.append({"shared_prefix_cache": share, "batch_size": batch_size, "questions": len(predictions),
                         "seconds": round(seconds, 3), "questions_per_second": round(len(predictions) / seconds, 2),
                         "cpu_seconds": round(cpu_seconds, 3),
                         "max_score_difference": difference})
    prompt_tokens = [len(tokenizer(builder.choice_prompt(s.display_name, q, s.shots).text)["input_ids"])
                     for s in benchmark.subjects for q in s.questions]
    report = {
        "model": args.model or f"random qwen2 (hidden {args.hidden_size}, {args.num_layers} layers)",
        "parameters": sum(p.numel() for p in model.parameters()),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else _cpu_name(),
        "torch_threads": torch.get_num_threads(),
        "task": args.task, "subjects": args.subjects.split(","), "n_shot": args.n_shot,
        "mean_prompt_tokens": round(sum(prompt_tokens) / len(prompt_tokens), 1),
        "results": rows,
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"{report['model']} on {report['device']}, {args.task} {args.n_shot}-shot, "
          f"{report['mean_prompt_tokens']} prompt tokens on average")
    print(f"{'shared prefix':>13} {'batch':>5} {'questions':>9} {'seconds':>8} {'q/s':>8} {'CPU s':>8} "
          f"{'max |diff|':>10}")
    for row in rows:
        print(f"{str(row['shared_prefix_cache']):>13} {row['batch_size']:>5} {row['questions']:>9} "
              f"{row['seconds']:>8.2f} {row['questions_per_second']:>8.2f} {row['cpu_seconds']:>8.2f} "
              f"{row['max_score_difference']:>10.2e}")
    print(f"written to {args.out}")
    return 0


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        return f"CPU {names[0]} x{len(names)}" if names else f"CPU {platform.machine()}"
    except OSError:
        return f"CPU {platform.machine()}"


def _random_model(scratch: str, hidden_size: int, num_layers: int) -> str:
    from llmtuner.model.tiny import make_tiny_model

    heads = max(1, hidden_size // 64)
    return make_tiny_model("qwen2", f"{scratch}/model", hidden_size=hidden_size, intermediate_size=4 * hidden_size,
                           num_hidden_layers=num_layers, num_attention_heads=heads, num_key_value_heads=heads)


def _first_questions(subject, count: int):
    from dataclasses import replace

    return replace(subject, questions=subject.questions[:count])


if __name__ == "__main__":
    sys.exit(main())
