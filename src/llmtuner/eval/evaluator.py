"""Benchmark evaluation: ``llmtuner eval``, ``python src/evaluate.py`` and ``--stage eval`` all end in ``run_eval``.

Reads top to bottom: parse -> check the output folders and the benchmark files (before any model loads) -> load
the tokenizer, template and model (base, base + adapter, or merged) -> per task, build the k-shot prompts, score
them (option letters by next-token scores, GSM8K by greedy generation) -> write results.json, predictions.jsonl
and results.md.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

from ..extras.errors import ConfigError
from ..extras.logging import get_logger, is_main_process
from .benchmarks import CHOICES, Benchmark, Question, Subject, load_benchmark, subjects_per_task
from .choice_likelihood import ChoiceLikelihood, ChoiceItem, build_item, predicted_letter
from .gsm8k import QUESTION_CUE, cut_at_next_question, extract_answer, generate_greedy, normalize_number
from .prompts import PLAIN_TEMPLATES, Prompt, PromptBuilder
from .results import check_save_dir, summarize, write_results
from .sharding import (eval_rank_and_world, gather_predictions, shard_benchmark, start_eval_processes,
                       wait_for_rank_zero)

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from ..data.templates.base import Template
    from ..hparams import DataArguments, ModelArguments
    from ..hparams.evaluation_args import EvaluationArguments

logger = get_logger(__name__)


@dataclass(frozen=True)
class EvalJob:
    """One benchmark split to evaluate and the folder its results go to."""

    task: str
    split: Optional[str]
    save_dir: Path
    subjects: Optional[list[str]] = None  # None: every subject found


def run_eval(args: Union[dict[str, Any], list[str], None] = None) -> dict[str, Any]:
    """Evaluate the configured model on the configured task(s); returns the results (per task when several).

    One task writes into ``save_dir``; several write into ``save_dir/<task>``.
    """
    from ..hparams.parser import get_eval_args

    model_args, data_args, eval_args = get_eval_args(args)
    start_eval_processes()
    pairs = eval_args.task_splits()
    if not pairs:
        raise ConfigError("task is not set.", "Add task: mmlu (or ceval, cmmlu, gsm8k; comma-separate several).")
    save_dir = Path(eval_args.save_dir or "")
    subjects = subjects_per_task([task for task, _ in pairs], eval_args.subjects)
    jobs = [EvalJob(task, split, save_dir if len(pairs) == 1 else save_dir / task, subjects[task])
            for task, split in pairs]
    if len(pairs) > 1:
        check_save_dir(eval_args.save_dir, eval_args.overwrite_save_dir)
    results = evaluate_model(model_args, data_args, eval_args, jobs)
    return results[0] if len(results) == 1 else {job.task: result for job, result in zip(jobs, results)}


def evaluate_model(
    model_args: "ModelArguments",
    data_args: "DataArguments",
    eval_args: "EvaluationArguments",
    jobs: list[EvalJob],
) -> list[dict[str, Any]]:
    """Load the model once and run every job; every input is checked before the model loads."""
    for job in jobs:
        check_save_dir(str(job.save_dir) if eval_args.save_dir else None, eval_args.overwrite_save_dir)
    preflight_eval(model_args, data_args)
    benchmarks = [
        load_benchmark(job.task, eval_args.task_dir, job.split, job.subjects, eval_args.n_shot,
                       data_args.max_samples, eval_args.seed, eval_args.lang)
        for job in jobs
    ]
    tokenizer, template, model = load_for_evaluation(model_args, data_args)
    evaluator = Evaluator(model, tokenizer, template, model_args, data_args, eval_args)
    all_results = []
    for job, benchmark in zip(jobs, benchmarks):
        results, predictions = evaluator.run(benchmark)
        if is_main_process():  # under a launcher every rank holds the gathered rows; one writes them
            paths = write_results(job.save_dir, results, predictions)
            print(format_summary(results))
            logger.info(f"Results written to {', '.join(str(path) for path in paths)}")
        wait_for_rank_zero()
        all_results.append(results)
    return all_results


def preflight_eval(model_args: "ModelArguments", data_args: "DataArguments") -> None:
    """Model folder, adapters (and that they fit the base) and template name: checked from files, before any
    weights load."""
    from ..data.templates import check_template_name
    from ..model.inference import check_adapters_fit

    check_adapters_fit(model_args.model_name_or_path, model_args.adapter_name_or_path)
    if data_args.template is not None:
        check_template_name(data_args.template)


def load_for_evaluation(
    model_args: "ModelArguments", data_args: "DataArguments"
) -> tuple["PreTrainedTokenizerBase", Optional["Template"], "PreTrainedModel"]:
    """Tokenizer, chat template (None for plain prompts) and the frozen model, on the GPU when there is one."""
    import torch

    from ..data.templates import check_template_name
    from ..hparams import FinetuningArguments
    from ..model.inference import load_for_inference

    name = check_template_name(data_args.template) if data_args.template is not None else "empty"
    # Adapters are LoRA weights; the finetuning type only matters for that check.
    tokenizer, template, model = load_for_inference(model_args, name, FinetuningArguments(finetuning_type="lora"))
    if name in PLAIN_TEMPLATES:
        template = None  # the benchmarks' own plain-text prompts (prompts.py), not the empty chat format
    elif template.thinking and data_args.enable_thinking:
        logger.warning(f"template {template.name} with enable_thinking: the model may want to think before the "
                       "answer; set enable_thinking: false to score the answer right after the prompt.")
    if torch.cuda.is_available() and model.device.type == "cpu" and model_args.quantization_bit is None:
        model = model.to(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}")  # each launched process its own GPU
    return tokenizer, template, model


class Evaluator:
    """Scores one loaded model on benchmarks: ``run(benchmark)`` -> (results, predictions)."""

    def __init__(
        self,
        model: "PreTrainedModel",
        tokenizer: "PreTrainedTokenizerBase",
        template: Optional["Template"],
        model_args: "ModelArguments",
        data_args: "DataArguments",
        eval_args: "EvaluationArguments",
        share_prefix: bool = True,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.template = template
        self.model_args = model_args
        self.data_args = data_args
        self.eval_args = eval_args
        self.max_length = data_args.cutoff_len
        self.scorer = ChoiceLikelihood(model, tokenizer.pad_token_id, eval_args.batch_size, share_prefix)

    def run(self, benchmark: Benchmark) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        from tqdm.auto import tqdm

        builder = PromptBuilder(benchmark.lang, self.template, self.tokenizer, self.data_args.default_system,
                                self.data_args.enable_thinking)
        rank, world = eval_rank_and_world()
        local = shard_benchmark(benchmark, rank, world) if world > 1 else benchmark
        started = time.perf_counter()
        with tqdm(total=local.num_questions, desc=f"{benchmark.task} {benchmark.split}", unit="q",
                  disable=rank != 0) as bar:
            if benchmark.kind == "choice":
                predictions = [row for subject in local.subjects
                               for row in self.score_subject(builder, subject, bar.update)]
            else:
                predictions = self.solve_math(builder, local.subjects[0], bar.update)
        if world > 1:
            predictions = gather_predictions(predictions, benchmark, world)
        seconds = time.perf_counter() - started
        results = {
            "config": self._config(benchmark, predictions),
            **summarize(
                [{"name": s.name, "display_name": s.display_name, "category": s.category}
                 for s in benchmark.subjects],
                predictions,
            ),
            "speed": {"seconds": round(seconds, 3), "questions_per_second": round(len(predictions) / seconds, 3)},
        }
        return results, predictions

    # ---- multiple choice ----

    def score_subject(self, builder: PromptBuilder, subject: Subject,
                      progress: Optional[Callable[[int], None]] = None) -> list[dict[str, Any]]:
        """One prediction row per question of ``subject``: gold, predicted, correct, option scores, shots used."""
        fitted = [self._fit(lambda shots, q=question: self._choice_item(builder, subject, q, shots), subject.shots)
                  for question in subject.questions]
        rows: list[Optional[dict[str, Any]]] = [None] * len(fitted)
        # Questions with the same number of shots share the k-shot prefix, so they are scored together.
        for shots_used in sorted({shots for _, shots in fitted}, reverse=True):
            indices = [i for i, (_, shots) in enumerate(fitted) if shots == shots_used]
            scores = self.scorer.score([fitted[i][0] for i in indices], progress)
            for index, option_scores in zip(indices, scores):
                question = subject.questions[index]
                predicted = predicted_letter(option_scores)
                rows[index] = {"id": question.id, "subject": subject.name, "gold": question.answer,
                               "predicted": predicted, "correct": predicted == question.answer,
                               "scores": {letter: round(value, 6) for letter, value in option_scores.items()},
                               "n_shot": shots_used}
        return rows  # type: ignore[return-value]

    def _choice_item(self, builder: PromptBuilder, subject: Subject, question: Question,
                     shots: list[Question]) -> tuple[ChoiceItem, int]:
        item = build_item(self.tokenizer, builder.choice_prompt(subject.display_name, question, shots), CHOICES)
        return item, item.length

    # ---- GSM8K ----

    def solve_math(self, builder: PromptBuilder, subject: Subject,
                   progress: Optional[Callable[[int], None]] = None) -> list[dict[str, Any]]:
        """Greedy solutions of every problem, the extracted final numbers, and exact match against gold."""
        fitted = [self._fit(lambda shots, q=question: self._math_ids(builder, q, shots), subject.shots)
                  for question in subject.questions]
        stop_ids = [self.tokenizer.eos_token_id]
        if self.template is not None:
            stop_ids = self.template.stop_token_ids(self.tokenizer)
        texts = generate_greedy(
            self.model, self.tokenizer, [ids for ids, _ in fitted], self.eval_args.max_new_tokens, stop_ids,
            stop_strings=[QUESTION_CUE] if self.template is None else [], batch_size=self.eval_args.batch_size,
            progress=progress,
        )
        rows = []
        for question, (_, shots_used), text in zip(subject.questions, fitted, texts):
            solution = cut_at_next_question(text) if self.template is None else text.strip()
            predicted, gold = extract_answer(solution), normalize_number(question.answer)
            rows.append({"id": question.id, "subject": subject.name, "gold": gold, "predicted": predicted,
                         "correct": predicted is not None and predicted == gold, "generation": solution,
                         "n_shot": shots_used})
        return rows

    def _math_ids(self, builder: PromptBuilder, question: Question, shots: list[Question]) -> tuple[list[int], int]:
        prompt: Prompt = builder.math_prompt(question, shots)
        ids = self.tokenizer(prompt.text, add_special_tokens=prompt.add_special_tokens)["input_ids"]
        return ids, len(ids) + self.eval_args.max_new_tokens

    # ---- shared ----

    def _fit(self, build: Callable[[list[Question]], tuple[Any, int]], shots: list[Question]) -> tuple[Any, int]:
        """``build(shots)`` with as many of the first shots as fit in cutoff_len (the benchmarks' own rule: drop
        examples from the end until the prompt fits); returns (what build made, shots used)."""
        for count in range(len(shots), -1, -1):
            built, length = build(shots[:count])
            if length <= self.max_length or count == 0:
                if length > self.max_length:
                    logger.warning(f"A question needs {length} tokens even without examples, more than cutoff_len="
                                   f"{self.max_length}; it is scored whole.")
                return built, count
        raise AssertionError("unreachable")

    def _config(self, benchmark: Benchmark, predictions: list[dict[str, Any]]) -> dict[str, Any]:
        from .. import __version__

        reduced = sum(row["n_shot"] < self.eval_args.n_shot for row in predictions)
        if reduced:
            logger.warning(f"{reduced} question(s) got fewer than {self.eval_args.n_shot} examples to fit "
                           f"cutoff_len={self.max_length} (see n_shot in predictions.jsonl).")
        return {
            "task": benchmark.task,
            "split": benchmark.split,
            "lang": benchmark.lang,
            "n_shot": self.eval_args.n_shot,
            "template": None if self.template is None else self.template.name,
            "model": self.model_args.model_name_or_path,
            "adapter": ",".join(self.model_args.adapter_name_or_path or []) or None,
            "task_dir": str(benchmark.folder),
            "subjects": [subject.name for subject in benchmark.subjects],
            "max_samples": self.data_args.max_samples,
            "seed": self.eval_args.seed,
            "cutoff_len": self.max_length,
            "questions_with_fewer_shots": reduced,
            "llmtuner_version": __version__,
        }


def format_summary(results: dict[str, Any]) -> str:
    """A few lines for the terminal: overall and per-category accuracy."""
    config, overall = results["config"], results["overall"]
    lines = [f"{config['task']} {config['split']} ({config['n_shot']}-shot, {overall['total']} questions): "
             f"accuracy {100 * overall['accuracy']:.2f} (macro {100 * overall['macro_accuracy']:.2f})"]
    lines += [f"  {name:<16} {100 * entry['accuracy']:6.2f}  ({entry['correct']}/{entry['total']})"
              for name, entry in results["categories"].items()]
    return "\n".join(lines)
