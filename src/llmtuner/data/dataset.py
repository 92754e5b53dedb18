"""Build the tokenised train/eval datasets for a stage: registry -> converted rows -> tokens -> split."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Optional

from ..extras.constants import IGNORE_INDEX
from ..extras.errors import DatasetError, PreprocessingDone
from ..extras.logging import get_logger
from ..hparams.rl_args import RL_STAGES
from .preprocess.packing import pack_supervised_dataset
from .preprocess.preference import (
    answers_of,
    preprocess_pairwise_dataset,
    preprocess_unpaired_dataset,
    sequence_and_labels,
)
from .preprocess.pretrain import preprocess_pretrain_dataset
from .preprocess.rl import dataset_gold_info, preprocess_rl_dataset
from .preprocess.supervised import count_trained_tokens, preprocess_supervised_dataset

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import PreTrainedTokenizer, Seq2SeqTrainingArguments

    from ..hparams import DataArguments
    from .templates import Template

logger = get_logger(__name__)


@dataclass
class DatasetModule:
    train_dataset: Optional["Dataset"] = None
    eval_dataset: Optional["Dataset"] = None


def _tokenize(
    dataset: "Dataset",
    stage: str,
    template: Optional["Template"],
    tokenizer: "PreTrainedTokenizer",
    data_args: "DataArguments",
    pack: bool = False,
    split: str = "training",
    source: str = "",
) -> "Dataset":
    """Tokenise the rows of one split; ``split`` ("training" / "evaluation") and ``source`` (which datasets the
    rows came from) name it in the error raised when no sample survives."""
    if stage in RL_STAGES:  # prompts to sample from, and the gold answers the rewards read
        return _tokenize_rl(dataset, stage, template, tokenizer, data_args, split)
    if stage in ("dpo", "rm", "kto"):  # prompt and answers kept apart for TRL's collators; nothing is ever empty
        preprocess = preprocess_unpaired_dataset if stage == "kto" else preprocess_pairwise_dataset
        fn = partial(preprocess, template=template, tokenizer=tokenizer, data_args=data_args)
        return tokenize_rows(dataset, fn, tokenizer, data_args, f"Tokenising ({stage})")
    if stage == "pt":
        fn = partial(preprocess_pretrain_dataset, tokenizer=tokenizer, data_args=data_args)
    else:
        fn = partial(preprocess_supervised_dataset, template=template, tokenizer=tokenizer, data_args=data_args)
    tokenized = tokenize_rows(dataset, fn, tokenizer, data_args, f"Tokenising ({stage})")
    before = len(tokenized)
    empty = _empty_samples(tokenized)
    if empty:  # no filtering pass (and no progress bar) when every sample kept a trained token
        tokenized = tokenized.filter(
            lambda ids: [len(row) > 0 for row in ids],
            input_columns="input_ids",
            batched=True,
            num_proc=data_args.preprocessing_num_workers,
            desc="Dropping samples with no trained token",
        )
    dropped = before - len(tokenized)
    if dropped:
        logger.warning(
            f"Dropped {dropped} of {before} samples that had no trained token left after truncation to "
            f"cutoff_len={data_args.cutoff_len}: {_describe_samples(dataset, empty)} (raise cutoff_len to keep them)."
        )
    if len(tokenized) == 0:
        source = source or f"dataset(s) {', '.join(data_args.dataset or [])}"
        raise DatasetError(
            f"No {split} sample is left after tokenisation of {source}.",
            f"Every sample lost its response to truncation: raise cutoff_len (now {data_args.cutoff_len}).",
        )
    return _pack(tokenized, data_args) if pack else tokenized


def _tokenize_rl(dataset: "Dataset", stage: str, template: Optional["Template"], tokenizer: "PreTrainedTokenizer",
                 data_args: "DataArguments", split: str) -> "Dataset":
    from .registry import get_dataset_specs

    names = sorted(set(dataset["_dataset"]))
    infos = {spec.name: dataset_gold_info(spec) for spec in get_dataset_specs(names, data_args.dataset_dir)}
    fn = partial(preprocess_rl_dataset, template=template, tokenizer=tokenizer, data_args=data_args, infos=infos)
    tokenized = tokenize_rows(dataset, fn, tokenizer, data_args, f"Rendering prompts ({stage})")
    empty = _empty_samples(tokenized, "prompt_ids")
    if empty:
        tokenized = tokenized.select(sorted(set(range(len(tokenized))) - set(empty)))
        logger.warning(f"Dropped {len(empty)} of {len(dataset)} {split} prompts longer than cutoff_len="
                       f"{data_args.cutoff_len}: {_describe_samples(dataset, empty)} (raise cutoff_len to keep them).")
    if len(tokenized) == 0:
        raise DatasetError(f"No {split} prompt of {', '.join(names)} fits in cutoff_len={data_args.cutoff_len}.",
                           "Raise cutoff_len (the prompt alone must fit; completions add max_completion_length).")
    return tokenized


def tokenize_rows(dataset: "Dataset", fn: partial, tokenizer: "PreTrainedTokenizer", data_args: "DataArguments",
                  desc: str) -> "Dataset":
    """``dataset.map(fn)`` in batches, replacing the columns, cached by datasets under a key that identifies the
    tokenizer without pickling it (``fn`` is a partial holding ``tokenizer`` and its other arguments)."""
    return dataset.map(
        fn,
        batched=True,
        batch_size=data_args.preprocessing_batch_size,
        num_proc=data_args.preprocessing_num_workers,
        remove_columns=dataset.column_names,
        load_from_cache_file=not data_args.overwrite_cache,
        desc=desc,
        new_fingerprint=_tokenize_fingerprint(dataset, fn, tokenizer),
    )


def _tokenize_fingerprint(dataset: "Dataset", fn: partial, tokenizer: "PreTrainedTokenizer") -> str:
    """datasets' cache key of the tokenising map, computed without pickling the tokenizer.

    datasets fingerprints a map by pickling the function with its arguments. Pickling a 151k-token tokenizer
    takes several seconds, on every run, cache hit or not; its own JSON serialisation (vocabulary, merges, added
    tokens, normalizer, pre- and post-processor) identifies it in a fraction of that.
    """
    from datasets.fingerprint import Hasher

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:  # a slow (pure Python) tokenizer: let datasets pickle it
        identity = Hasher.hash(tokenizer)
    else:
        extras = (type(tokenizer).__name__, tokenizer.special_tokens_map, getattr(tokenizer, "chat_template", None),
                  len(tokenizer), tokenizer.padding_side, tokenizer.truncation_side)
        identity = hashlib.sha256((backend.to_str() + repr(extras)).encode("utf-8")).hexdigest()
    arguments = {key: value for key, value in fn.keywords.items() if key != "tokenizer"}
    return Hasher.hash([dataset._fingerprint, fn.func, arguments, identity])


def _pack(tokenized: "Dataset", data_args: "DataArguments") -> "Dataset":
    """sft samples -> rows of several samples each (preprocess/packing.py), cached by datasets like tokenising."""
    packed = tokenized.map(
        partial(pack_supervised_dataset, data_args=data_args),
        batched=True,
        batch_size=data_args.preprocessing_batch_size,
        num_proc=data_args.preprocessing_num_workers,
        remove_columns=tokenized.column_names,
        load_from_cache_file=not data_args.overwrite_cache,
        desc="Packing samples",
    )
    tokens = sum(packed.data.column("input_ids").combine_chunks().value_lengths().to_pylist())
    logger.info(
        f"Packed {len(tokenized)} samples into {len(packed)} rows of at most {data_args.cutoff_len} tokens "
        f"({tokens / (len(packed) * data_args.cutoff_len):.1%} full)."
    )
    return packed


def _empty_samples(tokenized: "Dataset", column: str = "input_ids") -> list[int]:
    """Positions of the samples left with no tokens, read from the Arrow column without loading it in Python."""
    import pyarrow.compute as pc

    lengths = pc.list_value_length(tokenized.data.column(column))
    return pc.indices_nonzero(pc.equal(lengths, 0)).to_pylist()


def _describe_samples(conversations: "Dataset", positions: list[int], shown: int = 5) -> str:
    """``samples 3, 8 (sft_demo)``: a few dropped samples, numbered from 1 among the converted rows."""
    numbers = ", ".join(str(position + 1) for position in positions[:shown])
    numbers += ", ..." if len(positions) > shown else ""
    names = []
    if "_dataset" in conversations.column_names:
        names = sorted(set(conversations.select(positions[:shown])["_dataset"]))
    return f"sample{'s' if len(positions) > 1 else ''} {numbers}" + (f" ({', '.join(names)})" if names else "")


def split_validation(dataset: "Dataset", val_size: float, seed: int) -> tuple["Dataset", Optional["Dataset"]]:
    """Split ``val_size`` (a fraction, or a count when >= 1) of ``dataset`` off as the evaluation set.

    Raises DatasetError when the split would leave no training sample.
    """
    if val_size <= 0:
        return dataset, None
    size = int(val_size) if val_size >= 1 else val_size
    if (size if isinstance(size, int) else max(1, round(size * len(dataset)))) >= len(dataset):
        raise DatasetError(
            f"val_size={val_size} leaves no training samples out of {len(dataset)}.",
            "Use a smaller val_size (a fraction such as 0.1, or a count below the number of samples).",
        )
    split = dataset.train_test_split(test_size=size, seed=seed)
    return split["train"], split["test"]


def _log_summary(name: str, dataset: "Dataset") -> None:
    if "gold" in dataset.column_names:  # RL prompts: nothing is trained on them, completions are sampled
        lengths = [len(ids) for ids in dataset["prompt_ids"]]
        logger.info(f"{name}: {len(dataset)} prompts, {sum(lengths)} prompt tokens (longest {max(lengths)}).")
        return
    if "prompt_ids" in dataset.column_names:  # preference rows: the labels each answer is trained with
        rows = [sequence_and_labels(row["prompt_ids"], ids)[1] for row in dataset for _, ids in answers_of(row)]
        stats = count_trained_tokens(rows)
        logger.info(f"{name}: {len(dataset)} preference rows, {stats['samples']} answers, {stats['tokens']} tokens, "
                    f"{stats['trained_tokens']} trained.")
        return
    stats = count_trained_tokens(dataset["labels"])
    logger.info(
        f"{name}: {stats['samples']} samples, {stats['tokens']} tokens, {stats['trained_tokens']} trained tokens "
        f"({stats['trained_tokens'] / max(stats['tokens'], 1):.1%})."
    )


def get_dataset(
    template: Optional["Template"],
    tokenizer: "PreTrainedTokenizer",
    data_args: "DataArguments",
    training_args: "Seq2SeqTrainingArguments",
    stage: str,
) -> DatasetModule:
    """Load (or reload from ``tokenized_path``) and tokenise the datasets of a run.

    Conversion and tokenisation run on the main process first so that other ranks read the datasets cache
    instead of tokenising N times.
    """
    from datasets import DatasetDict, load_from_disk

    from .loader import load_conversations, load_split_conversations
    from .templates import format_example_for_display

    if data_args.tokenized_path and os.path.isdir(data_args.tokenized_path):
        saved = load_from_disk(data_args.tokenized_path)
        logger.info(f"Loaded tokenised datasets from {data_args.tokenized_path} (dataset settings are ignored).")
        return DatasetModule(saved.get("train"), saved.get("validation"))

    with training_args.main_process_first(desc="tokenise dataset"):
        # val_size is split off per dataset and task before mixing, so every task is validated (data/loader.py).
        val_size = 0.0 if data_args.eval_dataset else data_args.val_size
        conversations, eval_rows = load_split_conversations(
            data_args.dataset, data_args, stage, seed=training_args.seed, val_size=val_size
        )
        if data_args.replay_dataset:  # general data against forgetting, part of every epoch (data/mixing.py)
            from .mixing import mix_replay

            replay = load_conversations(data_args.replay_dataset, data_args, stage, seed=training_args.seed)
            conversations = mix_replay(conversations, replay, data_args.replay_ratio, training_args.seed)
        train = _tokenize(conversations, stage, template, tokenizer, data_args, pack=data_args.packing)
        if data_args.eval_dataset:
            eval_rows = load_conversations(data_args.eval_dataset, data_args, stage, seed=training_args.seed)
        # Generation needs one prompt per row, so an eval set that is generated from stays unpacked.
        pack_eval = data_args.packing and not training_args.predict_with_generate
        evaluation = None
        if eval_rows is not None:
            source = (f"eval_dataset {', '.join(data_args.eval_dataset)}" if data_args.eval_dataset else
                      f"the val_size split of dataset(s) {', '.join(data_args.dataset or [])}")
            evaluation = _tokenize(eval_rows, stage, template, tokenizer, data_args, pack=pack_eval,
                                   split="evaluation", source=source)

    if training_args.should_log:
        if training_args.do_train:  # an evaluation- or predict-only run trains on nothing: no train summary
            _log_summary("train", train)
        if evaluation is not None:
            _log_summary("eval", evaluation)
    if training_args.should_log and training_args.do_train:
        if "gold" in train.column_names:
            print("First training prompt (the policy samples its completions after it):")
            print(format_example_for_display(tokenizer, train[0]["prompt_ids"], [IGNORE_INDEX] * len(
                train[0]["prompt_ids"])))
            print(f"Its gold answer (what the rewards compare with): {train[0]['gold']!r}")
        elif "prompt_ids" in train.column_names:
            print("First training example (masked spans are not trained):")
            for name, answer in answers_of(train[0]):
                print(f"[{name}] " + format_example_for_display(
                    tokenizer, *sequence_and_labels(train[0]["prompt_ids"], answer)))
        else:
            print("First training example (masked spans are not trained):")
            print(format_example_for_display(tokenizer, train[0]["input_ids"], train[0]["labels"]))

    if data_args.tokenized_path:
        if training_args.should_save:
            splits = {"train": train, **({"validation": evaluation} if evaluation is not None else {})}
            DatasetDict(splits).save_to_disk(data_args.tokenized_path)
            print(f"Tokenised datasets saved to {data_args.tokenized_path}; run again with the same "
                  f"tokenized_path to train on them.")
        # Saving the tokenised data is the whole job of this run (as in LLaMA-Factory): stop before the model loads.
        raise PreprocessingDone(f"Tokenised datasets saved to {data_args.tokenized_path}; run again with the same "
                                "tokenized_path to train on them.")

    return DatasetModule(train, evaluation)
