"""Training speed of llmtuner against a plain transformers Trainer + PEFT baseline, and MFU against this machine's
measured matmul peak.

    python scripts/bench_train.py                                   # CPU: every job below (~15 min on 2 idle cores)
    python scripts/bench_train.py --models tiny --methods lora --steps 12 --repeats 3
    python scripts/bench_train.py --gpu                             # CUDA: Qwen2.5-0.5B-shaped model in bf16

Models (random weights, built here; speed does not depend on the weights):
- ``tiny``: the tiny Qwen2 of ``make-tiny-model`` (9.8M parameters, most of them the 151,669-token embedding).
- ``small``: Qwen2 architecture, hidden 512, 8 layers, MLP 1408, a 32,000-token vocabulary (42M parameters) with
  a byte-level BPE trained here on the sample corpora, so real text gets realistic lengths.
- ``qwen0.5b`` (``--gpu``): Qwen2.5-0.5B's shape and the Qwen vocabulary, bf16.

Jobs, for each model and method (lora: rank 8 on every linear layer; full), each in its own process so that
neither memory peaks nor process-wide settings (threads, malloc) leak from one job into another:
- ``baseline``: plain transformers + PEFT, no llmtuner code: the chat template rendered by
  ``tokenizer.apply_chat_template``, prompts masked, ``DataCollatorForSeq2Seq``, ``Trainer`` with the same
  TrainingArguments values (batch 4, AdamW, lr 1e-4);
- ``ours``: llmtuner's sft path (get_dataset, load_model, LlmtunerTrainer, the CPU runtime settings of run_exp),
  same batch;
- ``ours packed``: the same with ``packing: true`` (rows of cutoff_len 512 tokens, batch 1);
  (``ours`` and ``ours packed`` run llmtuner's defaults, so on CPU the chunked loss of train/chunked_loss.py);
- ``ours plain loss`` / ``ours packed plain loss`` (only with ``--sides``): with ``chunked_loss: false``;
- ``ours no malloc tuning``: ``ours`` with ``LLMTUNER_MALLOC_TUNING=0`` (see extras/cpu_runtime.py), CPU only, to
  show how much of the unpacked gap is the allocator (``--skip_ablation`` leaves it out);
- ``mfu`` jobs: ``small``, full tuning, random tokens, batch 8 x 128 (the issue's MFU yardstick), both sides.
Data: the built-in sample sft data (``sft_demo_zh_en``, 82 conversations).

Measured over the steps after the warm-up ones, as the rate of the median step (a burst of load from other
processes on a shared machine moves it least): real tokens/s (tokens of samples, no padding), total tokens/s (what
the model processed, padding included), real tokens per CPU second; padding efficiency (real / total over all
timed steps), the median step's system CPU seconds and page faults (minor + major: freshly mapped memory the
kernel fills 4 KiB at a time), peak RSS of the job's process, and MFU = model FLOPs per token x total
tokens/s / the matmul peak. Model FLOPs per token: 6 N for full tuning, 4 N + 6 N_lora for LoRA (forward 2 N,
input gradients 2 N, weight gradients only for the adapters), N = weights of the linear layers and the output head
(the embedding lookup costs no multiply-adds; attention scores are left out, < 3% here). The peak is the median of
several square matmuls (fp32 on CPU, bf16 on GPU) timed in the job's own process right before and after its
steps (the higher of the two), so a busy machine lowers peak and throughput together. With ``--repeats`` > 1
each job reports its spread, (fastest - slowest) / median real tokens/s, and one above 10% is flagged UNSTEADY:
the steady-state cost of a job should not depend on the run. Ratios are ours / baseline
of the same model and method. Prints a table; writes JSON and a PNG bar chart (default bench/train.json/.png).
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

# transformers 5 keeps rope_theta inside rope_parameters (make_tiny_model refuses the old top-level key)
QWEN25_05B_DIMS = {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
                   "num_key_value_heads": 2, "max_position_embeddings": 32768,
                   "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0}}
SMALL_DIMS = {"hidden_size": 512, "intermediate_size": 1408, "num_hidden_layers": 8, "num_attention_heads": 8,
              "num_key_value_heads": 8, "vocab_size": 32000, "max_position_embeddings": 4096}
SMALL_TOKENIZER_CORPORA = ("data/sft_demo.json", "data/pt_demo.jsonl", "../shared/corpora/alpaca_zh_demo.json")
DATASET, TEMPLATE, LR, LORA_RANK = "sft_demo_zh_en", "qwen", 1e-4, 8
SIDES = ("baseline", "ours", "ours_packed")
# `ours` with LLMTUNER_MALLOC_TUNING=0: how much of ours / baseline unpacked is the allocator setting
ABLATION = "ours_no_malloc_tuning"
# more of ours, on request (--sides): the model's own loss instead of the chunked one (train/chunked_loss.py)
EXTRA_SIDES = ("ours_plain_loss", "ours_packed_plain_loss")


# ---------------------------------------------------------------- the job that runs in its own process

def run_job(job: dict, result_file: str) -> None:
    import resource

    import torch
    from transformers import TrainerCallback

    gpu = job["device"] == "cuda"
    trainer = build_baseline(job) if job["side"] == "baseline" else build_ours(job)
    counts: list[tuple[int, int, int]] = []  # (real, total, trained) tokens of each batch, in the order consumed
    collate = trainer.data_collator

    def counting_collator(features):
        batch = collate(features)
        counts.append((sum(len(f["input_ids"]) for f in features), batch["input_ids"].numel(),
                       int((batch["labels"] != -100).sum())))
        return batch

    trainer.data_collator = counting_collator
    marks: dict[int, tuple[float, float, float, int]] = {}  # step -> (wall, CPU, system CPU, page faults) at its end

    class StepClock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if gpu:
                torch.cuda.synchronize()
            usage = resource.getrusage(resource.RUSAGE_SELF)
            marks[state.global_step] = (time.perf_counter(), usage.ru_utime + usage.ru_stime, usage.ru_stime,
                                        usage.ru_minflt + usage.ru_majflt)

    trainer.add_callback(StepClock())
    peak_before = matmul_peak(gpu)
    trainer.train()
    peak_after = matmul_peak(gpu)

    warmup, steps, ga = job["warmup"], job["steps"], trainer.args.gradient_accumulation_steps
    per_step = []  # (real, total, trained tokens, wall s, CPU s, system CPU s, page faults) of each timed step
    for step in range(warmup + 1, warmup + steps + 1):
        tokens = [sum(column) for column in zip(*counts[(step - 1) * ga : step * ga])]
        per_step.append((*tokens, *(end - start for end, start in zip(marks[step], marks[step - 1]))))
    real, total, trained, seconds, cpu_seconds, _, _ = (sum(column) for column in zip(*per_step))
    peak = max(peak_before, peak_after)
    flops_per_token = model_flops_per_token(trainer.model, job["method"])

    def median_rate(column: int, clock: int = 3) -> float:
        """Tokens per second of the median step: a burst of load from other processes moves it least."""
        return statistics.median(step[column] / step[clock] for step in per_step)

    result = {
        **job,
        "real_tokens_per_s": median_rate(0), "total_tokens_per_s": median_rate(1),
        "trained_tokens_per_s": median_rate(2), "padding_efficiency": real / total,
        "real_tokens_per_s_mean": real / seconds, "real_tokens_per_cpu_s": median_rate(0, clock=4),
        "seconds": seconds, "cpu_seconds": cpu_seconds,
        "step_seconds": [round(step[3], 3) for step in per_step],
        # the kernel's share of a step: page faults of freshly mapped memory show up here first
        "sys_seconds_per_step": statistics.median(step[5] for step in per_step),
        "page_faults_per_step": statistics.median(step[6] for step in per_step),
        "page_faults_max_step": max(step[6] for step in per_step),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "matmul_peak_gflops": peak / 1e9, "flops_per_token": flops_per_token,
        "mfu": flops_per_token * median_rate(1) / peak, "threads": torch.get_num_threads(),
        "device_name": torch.cuda.get_device_name() if gpu else "cpu",
    }
    if gpu:
        result["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    Path(result_file).write_text(json.dumps(result), encoding="utf-8")


def training_values(job: dict) -> dict:
    """The TrainingArguments values both sides share."""
    return {
        "output_dir": job["output_dir"], "per_device_train_batch_size": job["batch"],
        "max_steps": job["warmup"] + job["steps"], "learning_rate": LR, "logging_steps": 10_000,
        "save_strategy": "no", "report_to": "none", "disable_tqdm": True, "seed": 42,
        "use_cpu": job["device"] == "cpu", "bf16": job["device"] == "cuda", "remove_unused_columns": False,
        "dataloader_pin_memory": job["device"] == "cuda",
    }


def build_ours(job: dict):
    """llmtuner's sft workflow (train/sft.py) up to the Trainer, with run_exp's CPU runtime settings."""

    from llmtuner.cli import env_defaults
    from llmtuner.data.dataset import DatasetModule, get_dataset
    from llmtuner.data.templates import get_template
    from llmtuner.extras.cpu_runtime import configure_cpu_runtime
    from llmtuner.hparams.parser import get_train_args
    from llmtuner.model import load_model, load_tokenizer
    from llmtuner.train.trainer import LlmtunerTrainer, build_collator

    model_args, data_args, training_args, finetuning_args, _ = get_train_args({
        **env_defaults(),  # LLMTUNER_MALLOC_TUNING=0 of the ablation job, read as the CLI reads it
        **training_values(job), "model_name_or_path": job["model_dir"], "stage": "sft",
        "finetuning_type": job["method"], "lora_rank": LORA_RANK, "dataset": DATASET,
        "dataset_dir": str(ROOT / "data"), "template": TEMPLATE, "cutoff_len": job["cutoff_len"],
        "packing": "packed" in job["side"], "chunked_loss": False if "plain_loss" in job["side"] else None,
        "overwrite_output_dir": True,
    })
    configure_cpu_runtime(training_args, malloc_tuning=finetuning_args.malloc_tuning)
    tokenizer = load_tokenizer(model_args)
    if job["synthetic"]:
        module = DatasetModule(synthetic_dataset(job))
    else:
        template = get_template(data_args.template, tokenizer)
        template.fix_tokenizer(tokenizer)
        module = get_dataset(template, tokenizer, data_args, training_args, stage="sft")
    model = load_model(tokenizer, model_args, finetuning_args, is_trainable=True, packed_rows=data_args.packing)
    return LlmtunerTrainer(model=model, args=training_args, chunked_loss=finetuning_args.chunked_loss,
                           train_dataset=module.train_dataset,
                           eval_dataset=module.eval_dataset, data_collator=build_collator(tokenizer, training_args, model),
                           processing_class=tokenizer)


def build_baseline(job: dict):
    """The same job with plain transformers + PEFT: what a user would write without llmtuner."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, Trainer, TrainingArguments

    tokenizer = AutoTokenizer.from_pretrained(job["model_dir"])
    dtype = torch.bfloat16 if job["device"] == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(job["model_dir"], dtype=dtype)
    if job["method"] == "lora":
        model = get_peft_model(model, LoraConfig(r=LORA_RANK, lora_alpha=2 * LORA_RANK, target_modules="all-linear",
                                                 task_type="CAUSAL_LM"))
    rows = synthetic_dataset(job) if job["synthetic"] else Dataset.from_list(baseline_rows(tokenizer, job))
    collator = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100,
                                      pad_to_multiple_of=8 if job["device"] == "cuda" else None)
    return Trainer(model=model, args=TrainingArguments(**training_values(job)), train_dataset=rows,
                   data_collator=collator, processing_class=tokenizer)


def baseline_rows(tokenizer, job: dict) -> list[dict]:
    """The alpaca file rendered with the tokenizer's chat template; prompt tokens masked, cut at cutoff_len."""
    rows = []
    for item in json.loads((ROOT / "data" / "sft_demo.json").read_text(encoding="utf-8")):
        messages = [{"role": "system", "content": item["system"]}] if item.get("system") else []
        for user, assistant in item.get("history") or []:
            messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
        prompt = "\n".join(part for part in (item["instruction"], item.get("input")) if part)
        messages += [{"role": "user", "content": prompt}, {"role": "assistant", "content": item["output"]}]
        full = tokenizer.apply_chat_template(messages, tokenize=True)["input_ids"][: job["cutoff_len"]]
        prompt_len = len(tokenizer.apply_chat_template(messages[:-1], tokenize=True, add_generation_prompt=True)
                         ["input_ids"])
        labels = [-100] * min(prompt_len, len(full)) + full[prompt_len:]
        if any(label != -100 for label in labels):
            rows.append({"input_ids": full, "attention_mask": [1] * len(full), "labels": labels})
    return rows


def synthetic_dataset(job: dict):
    """Random token rows of exactly cutoff_len tokens, every token trained (the MFU yardstick job)."""
    import torch
    from datasets import Dataset

    generator = torch.Generator().manual_seed(0)
    count = job["batch"] * (job["warmup"] + job["steps"])
    ids = torch.randint(0, job["vocab_size"], (count, job["cutoff_len"]), generator=generator).tolist()
    return Dataset.from_dict({"input_ids": ids, "attention_mask": [[1] * len(row) for row in ids], "labels": ids})


def matmul_peak(gpu: bool) -> float:
    """FLOP/s of a square matmul, median of several: fp32 n=2048 on CPU, bf16 n=8192 on GPU."""
    import torch

    n, dtype, device = (8192, torch.bfloat16, "cuda") if gpu else (2048, torch.float32, "cpu")
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    times = []
    for _ in range(12 if gpu else 6):
        start = time.perf_counter()
        torch.mm(a, b)
        if gpu:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times[1:])


def model_flops_per_token(model, method: str) -> float:
    """6 N (full) or 4 N + 6 N_lora (LoRA); N = linear-layer and output-head weights (tied ones counted once)."""
    import torch

    seen, base, lora = set(), 0, 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and id(module.weight) not in seen:
            seen.add(id(module.weight))
            if "lora_" in name:
                lora += module.weight.numel()
            else:
                base += module.weight.numel()
    return 6 * base if method == "full" else 4 * base + 6 * lora


# ---------------------------------------------------------------- models

def build_models(names: list[str], work: Path) -> dict[str, dict]:
    from llmtuner.model.tiny import make_tiny_model

    built = {}
    if "tiny" in names:
        built["tiny"] = {"dir": make_tiny_model("qwen2", str(work / "tiny")), "vocab_size": 151_669}
    if "small" in names:
        built["small"] = {"dir": build_small_model(work / "small"), "vocab_size": SMALL_DIMS["vocab_size"]}
    if "qwen0.5b" in names:
        built["qwen0.5b"] = {"dir": make_tiny_model("qwen2", str(work / "qwen0.5b"), **QWEN25_05B_DIMS),
                             "vocab_size": 151_669}
    return built


def build_small_model(folder: Path) -> str:
    """The 42M Qwen2-architecture model with a 32k byte-level BPE trained on the sample corpora (+ chat tokens)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    from llmtuner.model.tiny import QWEN2_5_CHAT_TEMPLATE

    texts = []
    for relative in SMALL_TOKENIZER_CORPORA:
        path = ROOT / relative
        if path.is_file():
            lines = path.read_text(encoding="utf-8")
            rows = json.loads(lines) if path.suffix == ".json" else [json.loads(line) for line in lines.splitlines()]
            texts += [" ".join(str(value) for value in row.values() if isinstance(value, str)) for row in rows]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    backend.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=SMALL_DIMS["vocab_size"], special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.chat_template = QWEN2_5_CHAT_TEMPLATE
    config = Qwen2Config(**SMALL_DIMS, tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


# ---------------------------------------------------------------- the driver

def plan_jobs(args: argparse.Namespace, models: dict[str, dict], device: str) -> list[dict]:
    jobs = []
    for model in args.models:
        for method in args.methods:
            for side in args.sides or SIDES + (() if args.skip_ablation or device != "cpu" else (ABLATION,)):
                packed = "packed" in side
                jobs.append({"model": model, "method": method, "side": side, "synthetic": False,
                             "batch": args.packed_batch if packed else args.batch,
                             "cutoff_len": args.cutoff_len})
    if "small" in args.models and not args.skip_mfu:
        jobs += [{"model": "small", "method": "full", "side": side, "synthetic": True, "batch": 8, "cutoff_len": 128}
                 for side in ("baseline", "ours")]
    for job in jobs:
        job.update(device=device, warmup=args.warmup, steps=args.steps, model_dir=models[job["model"]]["dir"],
                   vocab_size=models[job["model"]]["vocab_size"])
    return jobs


def job_name(job: dict) -> str:
    return f"{'mfu ' if job['synthetic'] else ''}{job['model']} {job['method']} {job['side'].replace('_', ' ')}"


def run_in_child(job: dict, work: Path, index: int) -> dict:
    result_file, log_file = work / f"job{index}.json", work / f"job{index}.log"
    job = {**job, "output_dir": str(work / f"out{index}")}
    cmd = [sys.executable, __file__, "--job", json.dumps(job), str(result_file)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if job["side"] == ABLATION:
        env["LLMTUNER_MALLOC_TUNING"] = "0"
    with open(log_file, "w", encoding="utf-8") as log:
        code = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT).returncode
    if code != 0 or not result_file.is_file():
        tail = log_file.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise RuntimeError(f"job '{job_name(job)}' failed (exit {code}):\n{tail}")
    return json.loads(result_file.read_text(encoding="utf-8"))


UNSTEADY_SPREAD = 0.10  # (fastest - slowest) / median of a job's repeats above this is flagged


def median_result(runs: list[dict]) -> dict:
    """Per job: the run with the median real tokens/s (all its numbers come from that one run), plus the spread
    between repeats, flagged ``unsteady`` above 10%: a run that is sometimes fast and sometimes slow is a defect
    to find (e.g. page faults that come back in some runs), not noise to average away."""
    rates = [run["real_tokens_per_s"] for run in runs]
    ordered = sorted(runs, key=lambda run: run["real_tokens_per_s"])
    median = ordered[len(ordered) // 2]
    spread = (max(rates) - min(rates)) / median["real_tokens_per_s"]
    return {**median, "repeats": len(runs), "real_tokens_per_s_all": [round(rate, 1) for rate in rates],
            "page_faults_per_step_all": [run["page_faults_per_step"] for run in runs],
            "spread": spread, "unsteady": len(runs) > 1 and spread > UNSTEADY_SPREAD}


def add_ratios(results: list[dict]) -> None:
    baselines = {(r["model"], r["method"], r["synthetic"]): r for r in results if r["side"] == "baseline"}
    for result in results:
        base = baselines.get((result["model"], result["method"], result["synthetic"]))
        if base:
            result["real_tokens_ratio_vs_baseline"] = result["real_tokens_per_s"] / base["real_tokens_per_s"]
            result["cpu_efficiency_ratio_vs_baseline"] = result["real_tokens_per_cpu_s"] / base["real_tokens_per_cpu_s"]


def print_table(results: list[dict]) -> None:
    header = (f"{'job':<28} {'real tok/s':>10} {'spread':>7} {'total tok/s':>11} {'pad eff':>7} {'tok/CPU-s':>9} "
              f"{'sys s/step':>10} {'faults/step':>11} {'RSS MiB':>8} {'peak GF/s':>9} {'MFU':>5} {'x base':>6} "
              f"{'x base CPU':>10}")
    print(header)
    print("-" * len(header))
    for r in results:
        ratio = r.get("real_tokens_ratio_vs_baseline")
        cpu_ratio = r.get("cpu_efficiency_ratio_vs_baseline")
        spread = f"{r['spread']:.0%}{'!' if r['unsteady'] else ''}" if r["repeats"] > 1 else "-"
        print(f"{job_name(r):<28} {r['real_tokens_per_s']:>10.1f} {spread:>7} {r['total_tokens_per_s']:>11.1f} "
              f"{r['padding_efficiency']:>7.2f} {r['real_tokens_per_cpu_s']:>9.1f} {r['sys_seconds_per_step']:>10.3f} "
              f"{r['page_faults_per_step']:>11,.0f} {r['peak_rss_mib']:>8.0f} "
              f"{r['matmul_peak_gflops']:>9.1f} {r['mfu']:>5.2f} {'-' if ratio is None else f'{ratio:.2f}':>6} "
              f"{'-' if cpu_ratio is None else f'{cpu_ratio:.2f}':>10}")
    unsteady = [job_name(r) for r in results if r["unsteady"]]
    if unsteady:
        print(f"\nUNSTEADY (spread between repeats > {UNSTEADY_SPREAD:.0%}, marked !): {', '.join(unsteady)}; "
              "compare their page_faults_per_step_all and step_seconds in the JSON.")


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({(r["model"], r["method"]) for r in results if not r["synthetic"]})
    if not groups:
        return
    sides = [side for side in (*SIDES, ABLATION, *EXTRA_SIDES) if any(r["side"] == side for r in results)]
    width = 0.8 / len(sides)
    figure, axis = plt.subplots(figsize=(2 + 2.2 * len(groups), 4))
    for offset, side in enumerate(sides):
        values = [next((r["real_tokens_per_s"] for r in results if (r["model"], r["method"]) == group
                        and r["side"] == side and not r["synthetic"]), 0) for group in groups]
        axis.bar([i + offset * width for i in range(len(groups))], values, width, label=side.replace("_", " "))
    axis.set_xticks([i + width * (len(sides) - 1) / 2 for i in range(len(groups))], [f"{m} {t}" for m, t in groups])
    axis.set_ylabel("real (non-padding) tokens / s")
    axis.set_title("training throughput, llmtuner vs plain Trainer + PEFT")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=None, help="comma-separated: tiny, small (CPU default), qwen0.5b (GPU)")
    parser.add_argument("--methods", default="lora,full", help="comma-separated: lora, full")
    parser.add_argument("--steps", type=int, default=12, help="timed optimizer steps per job")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before them")
    parser.add_argument("--repeats", type=int, default=1, help="run the job list this many times; report medians")
    parser.add_argument("--batch", type=int, default=4, help="rows per step without packing")
    parser.add_argument("--packed_batch", type=int, default=1, help="packed rows per step")
    parser.add_argument("--cutoff_len", type=int, default=512)
    parser.add_argument("--skip_mfu", action="store_true", help="leave out the synthetic MFU jobs")
    parser.add_argument("--skip_ablation", action="store_true", help="leave out the no-malloc-tuning jobs")
    parser.add_argument("--sides", default=None,
                        help=f"comma-separated jobs per model and method (default: {', '.join(SIDES)} and "
                        f"{ABLATION} on CPU); also {', '.join(EXTRA_SIDES)}")
    parser.add_argument("--gpu", action="store_true", help="CUDA, bf16, the Qwen2.5-0.5B-shaped model")
    parser.add_argument("--out", default=str(ROOT / "bench" / "train.json"))
    parser.add_argument("--job", nargs=2, metavar=("JOB_JSON", "RESULT_FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.models = [m for m in (args.models or ("qwen0.5b" if args.gpu else "tiny,small")).split(",") if m]
    args.methods = [m for m in args.methods.split(",") if m]
    args.sides = tuple(side for side in (args.sides or "").split(",") if side)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.job:
        run_job(json.loads(args.job[0]), args.job[1])
        return 0
    bad = (sorted(set(args.models) - {"tiny", "small", "qwen0.5b"}) + sorted(set(args.methods) - {"lora", "full"})
           + sorted(set(args.sides) - {*SIDES, ABLATION, *EXTRA_SIDES}))
    if bad or args.steps < 1 or args.warmup < 1 or args.repeats < 1:
        print(f"error: bad arguments {bad or ''}\nhint: --models tiny,small,qwen0.5b --methods lora,full, "
              "--sides baseline,ours,ours_packed,..., --steps/--warmup/--repeats >= 1", file=sys.stderr)
        return 2
    import torch

    device = "cuda" if args.gpu else "cpu"
    if args.gpu and not torch.cuda.is_available():
        print("error: --gpu needs a CUDA GPU and none is visible.\nhint: run without --gpu on CPU.", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        models = build_models(args.models, work)
        jobs = plan_jobs(args, models, device)
        runs: dict[int, list[dict]] = {index: [] for index in range(len(jobs))}
        from tqdm import tqdm

        # Jobs alternate baseline / ours within each repeat, so slow spells of a shared machine hit both sides.
        with tqdm(total=len(jobs) * args.repeats, desc="benchmark jobs") as bar:
            for repeat in range(args.repeats):
                for index, job in enumerate(jobs):
                    bar.set_postfix_str(job_name(job))
                    runs[index].append(run_in_child(job, work, index + repeat * len(jobs)))
                    bar.update()
    results = [median_result(runs[index]) for index in range(len(jobs))]
    add_ratios(results)
    for result in results:
        result.pop("output_dir", None)
        result.pop("model_dir", None)
    print(f"\n{device}, {results[0]['threads']} threads, {args.steps} timed steps after {args.warmup} warm-up, "
          f"batch {args.batch} unpacked / {args.packed_batch} x {args.cutoff_len} packed, median of {args.repeats}")
    print_table(results)
    write_results(Path(args.out), {"device": results[0]["device_name"], "torch": torch.__version__}, results, plot)
    return 0


def write_results(out: Path, meta: dict, results: list[dict], plot_results) -> None:
    """A benchmark's JSON (its command, the machine's load and ``meta``, then ``results``) and its PNG next to it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"command": " ".join([Path(sys.executable).name, *sys.argv]), **meta, "cpu_count": os.cpu_count(),
            "load_average": os.getloadavg()}
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n", encoding="utf-8")
    plot_results(results, out.with_suffix(".png"))
    print(f"\nwrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    sys.exit(main())
