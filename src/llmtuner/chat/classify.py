"""Predict with a classifier trained by stage cls: one text, a batch, a file (JSON lines out), or interactively.

Every prediction is ``{"predicted_label": str, "confidence": float, "probabilities": {label: p}}`` (softmax over
the labels of the run's ``label_map.json``, in id order, summing to 1). A bare text is given the instruction line
that every training text began with (``text_prefix`` in the label map), so a question is classified the way the
model saw questions in training; instruction/input rows are joined as in training ("instruction\\ninput").

    classifier = TextClassifier.from_args({"model_name_or_path": "models/bert-base-chinese",
                                           "adapter_name_or_path": "saves/bert/lora/cls"})
    classifier.predict("帮我重跑昨天失败的调度任务")
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, TextIO, Union

from ..extras.errors import ConfigError, DatasetError
from ..extras.files import write_jsonl_atomically
from ..extras.logging import get_logger
from ..extras.user_files import parse_json_records, read_user_text

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizer

    from ..model.classifier import LabelMap

logger = get_logger(__name__)

# Keys of `llmtuner predict` besides the model ones (model_name_or_path, adapter_name_or_path, cutoff_len, ...).
INTERACTIVE_PROMPT = "\nText: "
TEXT_KEYS = ("text", "sentence", "content")  # a row's text, else its instruction + input
GOLD_KEYS = ("label", "output")  # a row's expected label, when the file has one


class TextClassifier:
    """A loaded classifier (base + adapter, or a full model) with its label map, in eval mode."""

    def __init__(self, model: "PreTrainedModel", tokenizer: "PreTrainedTokenizer", label_map: "LabelMap",
                 max_length: int) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.label_map = label_map
        self.max_length = max_length

    @classmethod
    def from_args(cls, args: Union[dict[str, Any], list[str], None] = None) -> "TextClassifier":
        """Load from inference arguments: model_name_or_path, adapter_name_or_path (the cls run's output_dir for
        LoRA), cutoff_len, torch_dtype, ... Raises ModelError when no label map is found (not a cls run)."""
        from ..hparams.parser import get_infer_args

        model_args, data_args, finetuning_args, _ = get_infer_args(args)
        return cls.from_parsed(model_args, data_args, finetuning_args)

    @classmethod
    def from_parsed(cls, model_args: Any, data_args: Any, finetuning_args: Any) -> "TextClassifier":
        """``from_args`` for arguments parsed already."""
        from ..extras.errors import ModelError
        from ..model import load_tokenizer
        from ..model.classifier import classifier_max_length, load_classifier, read_label_map

        label_map = read_label_map(model_args)
        if label_map is None:
            where = (model_args.adapter_name_or_path or [model_args.model_name_or_path])[-1]
            raise ModelError(
                f"{where} holds no label map (label_map.json, or id2label in config.json), so it is not a classifier.",
                "Point adapter_name_or_path (LoRA) or model_name_or_path (freeze/full) at the output_dir of a "
                "stage cls run.",
            )
        tokenizer = load_tokenizer(model_args)
        model = load_classifier(tokenizer, model_args, finetuning_args, label_map, is_trainable=False)
        import torch

        if torch.cuda.is_available():
            model.to("cuda")
        return cls(model, tokenizer, label_map, classifier_max_length(model_args, tokenizer, data_args.cutoff_len))

    @property
    def labels(self) -> tuple[str, ...]:
        return self.label_map.labels

    def prepare(self, text: str) -> str:
        """The text as training saw it: the shared instruction line in front, unless it is already there."""
        prefix = self.label_map.text_prefix
        return text if not prefix or text.startswith(prefix) else prefix + text

    def predict(self, text: str) -> dict[str, Any]:
        """Label probabilities of one text."""
        return self.predict_batch([text])[0]

    def predict_batch(self, texts: list[str], batch_size: int = 32) -> list[dict[str, Any]]:
        """Label probabilities of each text, ``batch_size`` texts per forward pass (results in input order)."""
        import torch

        if isinstance(texts, str):
            raise TypeError("predict_batch takes a list of texts; use predict() for one text")
        results: list[dict[str, Any]] = []
        device = next(self.model.parameters()).device
        for start in range(0, len(texts), batch_size):
            chunk = [self.prepare(text) for text in texts[start:start + batch_size]]
            inputs = self.tokenizer(chunk, padding=True, truncation=True, max_length=self.max_length,
                                    return_tensors="pt").to(device)
            with torch.inference_mode():
                logits = self.model(**inputs).logits
            probabilities = torch.softmax(logits.float(), dim=-1).cpu().tolist()
            results += [self._result(row) for row in probabilities]
        return results

    def predict_file(self, input_file: str, output_file: str, batch_size: int = 32,
                     overwrite: bool = False) -> dict[str, Any]:
        """Classify every row of ``input_file`` (JSON list, JSON lines, CSV with a header, or text lines) and write
        each row plus its prediction as one JSON line to ``output_file``.

        Returns a summary: ``rows``, ``output_file``, and when every row has a gold label (``label`` or ``output``)
        the metrics of ``eval.metrics.classification_metrics`` against it (accuracy, macro-F1, per-label P/R/F1,
        confusion matrix), also written next to the predictions as ``<stem>_metrics.json``, ``<stem>_metrics.md``
        and ``<stem>_confusion_matrix.png`` (``report_files`` in the summary). Raises ConfigError when
        ``output_file`` (or its metrics files) exists and ``overwrite`` is False, DatasetError for an unreadable
        file or a row without text.
        """
        from tqdm.auto import tqdm

        output = Path(output_file)
        check_output_free(output_file, overwrite)
        rows = read_rows(input_file)
        texts = [row_text(row, number, input_file) for number, row in enumerate(rows, start=1)]
        predictions: list[dict[str, Any]] = []
        with tqdm(total=len(texts), desc="Classifying", unit="text") as bar:
            for start in range(0, len(texts), batch_size):
                predictions += self.predict_batch(texts[start:start + batch_size], batch_size)
                bar.update(min(batch_size, len(texts) - start))
        write_jsonl_atomically(output, ({**row, **prediction} for row, prediction in zip(rows, predictions)))
        summary: dict[str, Any] = {"rows": len(rows), "output_file": str(output)}
        gold = [next((str(row[key]) for key in GOLD_KEYS if row.get(key) not in (None, "")), None) for row in rows]
        if rows and all(label is not None for label in gold):
            from ..eval.metrics.classification import classification_metrics

            unknown = sorted({label for label in gold if label not in self.labels})
            if unknown:
                logger.warning(f"{input_file}: gold label(s) {', '.join(unknown)} are not labels of this model; "
                               "they count as errors.")
            labels = list(self.labels) + unknown
            summary["metrics"] = classification_metrics(gold, [p["predicted_label"] for p in predictions], labels)
            from ..eval.metrics.classification import write_classification_report

            summary["report_files"] = [str(path) for path in write_classification_report(summary["metrics"], output)]
        return summary

    def _result(self, probabilities: list[float]) -> dict[str, Any]:
        best = max(range(len(probabilities)), key=probabilities.__getitem__)
        return {
            "predicted_label": self.labels[best],
            "confidence": probabilities[best],
            "probabilities": dict(zip(self.labels, probabilities)),
        }


def check_output_free(output_file: str, overwrite: bool) -> None:
    """Refuse an ``output_file`` (or its metrics report) that exists, unless ``overwrite``: checked before the
    model loads, and again when writing."""
    from ..eval.metrics.classification import report_paths

    output = Path(output_file)
    existing = [str(path) for path in (output, *report_paths(output)) if path.exists()]
    if existing and not overwrite:
        raise ConfigError(f"output_file={output_file} or its metrics report already exists ({', '.join(existing)}).",
                          "Choose another output_file, or pass overwrite_output_file=true to replace them.")


def read_rows(path: str) -> list[dict[str, Any]]:
    """Rows of a .json (list), .jsonl, .csv (header) or .txt (one text per line) file, as dicts."""
    text = read_user_text(path, "input_file")
    suffix = Path(path).suffix.lower()
    if suffix == ".txt":
        return [{"text": line} for line in text.splitlines() if line.strip()]
    if suffix == ".csv":
        return [dict(row) for row in csv.DictReader(io.StringIO(text))]
    if suffix not in (".json", ".jsonl"):
        raise DatasetError(f"input_file={path}: cannot read {suffix or 'files without an extension'}.",
                           "Use .jsonl, .json (a list), .csv (with a header) or .txt (one text per line).")
    items = parse_json_records(text, path, "input_file")
    return [item if isinstance(item, dict) else {"text": item} for item in items]


def row_text(row: dict[str, Any], number: int, path: str) -> str:
    """The text of a row: its ``text`` field, else instruction + "\\n" + input as in training."""
    for key in TEXT_KEYS:
        if isinstance(row.get(key), str) and row[key].strip():
            return row[key]
    parts = [row.get(key) for key in ("instruction", "input")]
    text = "\n".join(part for part in parts if isinstance(part, str) and part)
    if not text.strip():
        raise DatasetError(
            f"Row {number} of {path} has no text (keys: {', '.join(map(str, row)) or 'none'}).",
            f"Give each row a {' / '.join(TEXT_KEYS)} field, or instruction/input fields as in training.",
        )
    return text


def classify_loop(classifier: TextClassifier, stdin: Optional[TextIO] = None,
                  stdout: Optional[TextIO] = None) -> None:
    """Read texts line by line and print the label, its confidence and every label's probability; ``exit`` quits."""
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    print(f"Classify texts into: {', '.join(classifier.labels)}. Type `exit` to quit.", file=stdout, flush=True)
    while True:
        print(INTERACTIVE_PROMPT, end="", file=stdout, flush=True)
        line = stdin.readline()
        if not line or line.strip() == "exit":
            break
        if not line.strip():
            continue
        result = classifier.predict(line.rstrip("\n"))
        print(f"{result['predicted_label']} ({result['confidence']:.1%})", file=stdout)
        for label, probability in sorted(result["probabilities"].items(), key=lambda item: -item[1]):
            print(f"  {label}: {probability:.4f}", file=stdout)
        stdout.flush()


def points_at_classifier(argv: Union[dict[str, Any], list[str], None]) -> bool:
    """True when the arguments name a stage cls run (label_map.json in the last adapter, or in the model folder when
    there is no adapter); reads only the arguments and that one file, so `llmtuner chat` can decide cheaply."""
    from ..hparams.parser import read_args
    from ..hparams.validation import split_list
    from ..model.classifier import is_classifier_run

    values = read_args(argv)
    model = values.get("model_name_or_path")
    return is_classifier_run(split_list(values.get("adapter_name_or_path")), str(model) if model else None)


def run_classifier_predict(argv: Union[dict[str, Any], list[str], None] = None) -> int:
    """``llmtuner predict``: ``text=...`` prints one JSON result; ``input_file=... output_file=...`` classifies a
    file; neither starts the interactive mode."""
    from ..hparams.parser import get_predict_args

    model_args, data_args, finetuning_args, _, options = get_predict_args(argv)
    if options.response:
        raise ConfigError("response= is for reward models (stage rm); this model is a classifier.",
                          "Remove response; pass the text to label as text=....")
    if options.input_file:
        read_rows(options.input_file)  # a bad input file fails before the model loads
        if options.output_file:  # and so does an output file that is already there
            check_output_free(options.output_file, options.overwrite_output_file)
    classifier = TextClassifier.from_parsed(model_args, data_args, finetuning_args)
    if options.text:
        print(json.dumps(classifier.predict(options.text), ensure_ascii=False))
    elif options.input_file:
        summary = classifier.predict_file(options.input_file, options.output_file, options.batch_size,
                                          overwrite=options.overwrite_output_file)
        print(f"Wrote {summary['rows']} predictions to {os.path.abspath(summary['output_file'])}")
        if "metrics" in summary:
            metrics = summary["metrics"]
            print(f"Against the file's labels: accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}"
                  f" ({metrics['num_samples']} rows); report: {', '.join(summary['report_files'])}")
    else:
        classify_loop(classifier)
    return 0

