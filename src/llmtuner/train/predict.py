"""Batch prediction for ``--stage sft --do_predict --predict_with_generate``: generate, save, score.

Each conversation of the prediction dataset (``eval_dataset`` when set, else ``dataset``) is cut before its last
reply; the model generates that reply with the chat engine (same prompts as training, template stop tokens,
GeneratingArguments, left-padded batches of ``per_device_eval_batch_size``). The run writes
``generated_predictions.jsonl`` (one ``{"prompt", "label", "predict"}`` per row, in dataset order) and
``predict_results.json`` with ROUGE-1/2/L and BLEU-4 (``eval/metrics/generation.py``), also merged into
``all_results.json``.
"""

from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING

from ..extras.logging import get_logger

if TYPE_CHECKING:
    from transformers import Seq2SeqTrainer

    from ..data.templates import Template
    from ..hparams import DataArguments, GeneratingArguments

logger = get_logger(__name__)

PREDICTIONS_FILE = "generated_predictions.jsonl"


def predict_generations(
    trainer: "Seq2SeqTrainer",
    template: "Template",
    data_args: "DataArguments",
    generating_args: "GeneratingArguments",
) -> dict[str, float]:
    """Generate a reply for every row of the prediction dataset, write the files, and return the metrics."""
    from ..model.engine import ChatEngine
    from ..data.loader import load_conversations
    from ..eval.metrics.generation import generation_metrics

    args = trainer.args
    names = data_args.eval_dataset or data_args.dataset
    rows = load_conversations(names, data_args, "sft", seed=args.seed)
    model = trainer.model.eval()
    engine = ChatEngine(model, trainer.processing_class, template, generating_args,
                        data_args.default_system, data_args.enable_thinking)
    encoded = [engine.encode(row["messages"][:-1], row["system"]) for row in rows]
    labels = [row["messages"][-1]["content"] for row in rows]
    cutoff = data_args.cutoff_len
    truncated = sum(1 for ids in encoded if len(ids) > cutoff)
    if truncated:  # keep the end: the latest turns and the assistant header the reply follows
        logger.warning(f"{truncated} prompts were longer than cutoff_len={cutoff}; their last {cutoff} tokens "
                       "were kept.")
    prompts = [ids[-cutoff:] for ids in encoded]

    start = time.time()
    responses = engine.generate_many(prompts, args.per_device_eval_batch_size, desc="Predicting",
                                     show_progress=trainer.is_world_process_zero())
    runtime = time.time() - start
    predictions = [response.text for response in responses]

    metrics = {f"predict_{name}": value for name, value in generation_metrics(predictions, labels).items()}
    metrics.update({"predict_samples": len(rows), "predict_runtime": round(runtime, 4),
                    "predict_samples_per_second": round(len(rows) / runtime, 3) if runtime else 0.0})
    if trainer.is_world_process_zero():
        path = os.path.join(args.output_dir, PREDICTIONS_FILE)
        with open(path, "w", encoding="utf-8") as f:
            for prompt, label, prediction in zip(prompts, labels, predictions):
                text = engine.tokenizer.decode(prompt, skip_special_tokens=False)
                f.write(json.dumps({"prompt": text, "label": label, "predict": prediction}, ensure_ascii=False) + "\n")
        logger.info(f"Saved {len(rows)} predictions to {path}.")
    trainer.log_metrics("predict", metrics)
    trainer.save_metrics("predict", metrics)
    return metrics

