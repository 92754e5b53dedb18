"""cls: rows of (text, label) -> token ids and a label id, with the label set checked before anything is tokenised.

A cls row is an alpaca row converted by ``converters.py``: the user turn is the text (instruction + "\\n" + input)
and the assistant turn is the label. The label set is either given (``cls_labels``, or the label map of the model
being evaluated / resumed) or read from the training data (sorted, so the same data always gives the same ids).
A label outside the set, in training or in evaluation data, is an error that names it: a silently dropped row or a
silently added class would make the saved label map disagree with the data.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Callable, Optional

from ...extras.errors import ConfigError, DatasetError
from ...extras.logging import get_logger
from ..dataset import DatasetModule, split_validation, tokenize_rows

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import PreTrainedTokenizer, Seq2SeqTrainingArguments

    from ...hparams import DataArguments
    from ..registry import DatasetSpec

logger = get_logger(__name__)

TASK_COLUMN = "task"  # the data-platform format tags each row with its task
_EXAMPLES = 3


@dataclass
class ClassificationDatasets(DatasetModule):
    """Tokenised splits plus what the saved model must remember: the labels in id order and the text prefix."""

    labels: tuple[str, ...] = ()
    # The first line shared by every training text (the task instruction of instruction/input rows), or "".
    text_prefix: str = ""
    label_counts: dict[str, Counter] = field(default_factory=dict)


def row_texts_and_labels(conversations: "Dataset") -> tuple[list[str], list[str]]:
    """(texts, labels) of converted cls rows: the user turn and the assistant turn of each row."""
    messages = conversations["messages"]
    return [turns[0]["content"] for turns in messages], [turns[-1]["content"] for turns in messages]


def shared_first_line(texts: list[str]) -> str:
    """The first line (with its newline) when every text starts with that same line and goes on after it, else "".

    Instruction/input rows turn into "instruction\\ninput"; when the instruction is the same on every row it is the
    task description, and prediction must put it in front of a bare question to show the model what it was trained on.
    """
    if not texts or any("\n" not in text for text in texts):
        return ""
    first = texts[0].split("\n", 1)[0] + "\n"
    return first if all(text.startswith(first) for text in texts) else ""


def check_labels(labels: list[str], texts: list[str], known: tuple[str, ...], where: str, source: str) -> None:
    """Raise DatasetError naming every label of ``labels`` that is not in ``known`` (with an example text)."""
    unknown = Counter(label for label in labels if label not in set(known))
    if not unknown:
        return
    examples = {}
    for label, text in zip(labels, texts):
        examples.setdefault(label, text)
    described = "; ".join(
        f"{label!r} ({count} row{'s' if count > 1 else ''}, e.g. {_snippet(examples[label])!r})"
        for label, count in unknown.most_common(_EXAMPLES)
    )
    more = f" and {len(unknown) - _EXAMPLES} more" if len(unknown) > _EXAMPLES else ""
    raise DatasetError(
        f"{where} has label(s) outside the label set of this run ({source}: {', '.join(known)}): {described}{more}.",
        "Fix those rows, or list every label in cls_labels (in id order) so that training and evaluation share "
        "one label map.",
    )


def preprocess_classification_dataset(
    examples: dict[str, list[Any]], tokenizer: "PreTrainedTokenizer", max_length: int, label2id: dict[str, int]
) -> dict[str, list[Any]]:
    """Batched ``datasets.map`` function: the text truncated to ``max_length`` tokens and the label's id.

    The tokenizer adds the model's own special tokens ([CLS] ... [SEP] for BERT; nothing for Qwen, whose
    classifier reads the last token).
    """
    texts = [turns[0]["content"] for turns in examples["messages"]]
    encoded = tokenizer(texts, truncation=True, max_length=max_length)
    model_inputs = {key: list(values) for key, values in encoded.items()}
    model_inputs["labels"] = [label2id[turns[-1]["content"]] for turns in examples["messages"]]
    return model_inputs


def get_classification_dataset(
    tokenizer: "PreTrainedTokenizer",
    data_args: "DataArguments",
    training_args: "Seq2SeqTrainingArguments",
    max_length: int,
    labels: Optional[tuple[str, ...]] = None,
    label_source: str = "",
) -> ClassificationDatasets:
    """Load, label-check and tokenise the train (``dataset``) and eval (``eval_dataset`` or ``val_size``) rows.

    ``labels`` fixes the label set (``label_source`` says where it came from, for messages); without it the set
    is the sorted labels of the training data. Raises DatasetError for a label outside the set, fewer than two
    labels, or ``cls_task`` rows that do not exist; ConfigError for ``tokenized_path``.
    """
    from datasets import ClassLabel

    from ..loader import load_conversations

    row_filter = _task_filter(data_args.cls_task) if data_args.cls_task else None
    with training_args.main_process_first(desc="tokenise dataset"):
        train_rows = eval_rows = None
        if data_args.dataset:
            train_rows = load_conversations(data_args.dataset, data_args, "cls", training_args.seed,
                                            row_filter=row_filter)
        if data_args.eval_dataset:
            eval_rows = load_conversations(data_args.eval_dataset, data_args, "cls", training_args.seed,
                                           row_filter=row_filter)
        train_texts, train_labels = row_texts_and_labels(train_rows) if train_rows is not None else ([], [])
        if labels is None and train_rows is None:
            raise ConfigError(
                "Stage cls without training data needs the label set, but none was given.",
                "Evaluate a model or adapter trained by stage cls (its label_map.json names the labels), or list "
                "the labels in cls_labels.",
            )
        if labels is None:
            labels, label_source = tuple(sorted(set(train_labels))), "read from the training data"
        if len(labels) < 2:
            raise DatasetError(
                f"Stage cls needs at least two labels, but the label set ({label_source}) is {list(labels)}.",
                "Check that the response column holds the labels (and cls_task selects the right task), "
                "or list the labels in cls_labels.",
            )
        if train_rows is not None:
            check_labels(train_labels, train_texts, labels, f"Training dataset {', '.join(data_args.dataset)}",
                         label_source)
        if eval_rows is not None:
            eval_texts, eval_labels = row_texts_and_labels(eval_rows)
            check_labels(eval_labels, eval_texts, labels, f"Evaluation dataset {', '.join(data_args.eval_dataset)}",
                         label_source)

        label2id = {label: index for index, label in enumerate(labels)}
        train = _tokenize(train_rows, tokenizer, data_args, max_length, label2id) if train_rows is not None else None
        evaluation = _tokenize(eval_rows, tokenizer, data_args, max_length, label2id) if eval_rows is not None else None
        if train is not None and evaluation is None and data_args.val_size:
            train, evaluation = split_validation(train, data_args.val_size, training_args.seed)
        class_label = ClassLabel(names=list(labels))  # keeps the names with the ids inside the dataset
        train, evaluation = (split.cast_column("labels", class_label) if split is not None else None
                             for split in (train, evaluation))

    datasets = ClassificationDatasets(train, evaluation, labels=tuple(labels),
                                      text_prefix=shared_first_line(train_texts))
    for name, split in (("train", train), ("eval", evaluation)):
        if split is not None:
            datasets.label_counts[name] = Counter(labels[index] for index in split["labels"])
    if training_args.should_log:
        _log_summary(datasets, tokenizer)
    return datasets


def _task_filter(task: str) -> Callable[["DatasetSpec", "Dataset"], "Dataset"]:
    """A ``row_filter`` for ``load_conversations`` that keeps the rows of one task."""

    def keep_task(spec: "DatasetSpec", raw: "Dataset") -> "Dataset":
        if TASK_COLUMN not in raw.column_names:
            raise DatasetError(
                f"cls_task={task!r} keeps the rows whose {TASK_COLUMN!r} column names that task, but dataset "
                f"{spec.name!r} ({spec.path}) has no {TASK_COLUMN!r} column (its columns: "
                f"{', '.join(raw.column_names)}).",
                "Remove cls_task when the dataset holds a single task, or add the task name to every row.",
            )
        kept = raw.filter(lambda value: value == task, input_columns=TASK_COLUMN, desc=f"Keeping task {task}")
        if len(kept) == 0:
            tasks = sorted({str(value) for value in raw[TASK_COLUMN]})
            raise DatasetError(
                f"Dataset {spec.name!r} has no row with {TASK_COLUMN!r} = {task!r}.",
                f"Set cls_task to one of the tasks in {spec.path}: {', '.join(tasks)}.",
            )
        logger.info(f"Dataset {spec.name!r}: kept {len(kept)} of {len(raw)} rows of task {task!r}.")
        return kept

    return keep_task


def _tokenize(
    rows: "Dataset", tokenizer: "PreTrainedTokenizer", data_args: "DataArguments", max_length: int,
    label2id: dict[str, int],
) -> "Dataset":
    fn = partial(preprocess_classification_dataset, tokenizer=tokenizer, max_length=max_length, label2id=label2id)
    return tokenize_rows(rows, fn, tokenizer, data_args, "Tokenising (cls)")


def _log_summary(datasets: ClassificationDatasets, tokenizer: "PreTrainedTokenizer") -> None:
    for name, counts in datasets.label_counts.items():
        shown = ", ".join(f"{label} {counts[label]}" for label in datasets.labels)
        logger.info(f"{name}: {sum(counts.values())} samples; per label: {shown}.")
    first = datasets.train_dataset if datasets.train_dataset is not None else datasets.eval_dataset
    if first is not None and len(first):
        row = first[0]
        print("First example (the text as the model sees it, and its label):")
        print(f"text:  {tokenizer.decode(row['input_ids'])}")
        print(f"label: {datasets.labels[row['labels']]} (id {row['labels']})")


def _snippet(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
