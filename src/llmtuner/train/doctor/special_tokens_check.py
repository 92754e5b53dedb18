"""Special tokens: the model learns to stop, and padding never becomes a target.

- the template's end-of-turn token (the last special token of a reply) is trained in every answer that truncation
  leaves whole, and is among the ids generation stops at (``Template.stop_token_ids``: what the engine, the API
  and an export's generation_config use);
- pad differs from eos, or the collator's masks make them the same harmlessly: padding labels are -100, so the
  eos inside the rows stays trained (a collator that masks "every pad id" would untrain eos: the model never stops);
- no label is a pad: a batch of the first rows padded by the training collator has no target at a pad position.
"""

from __future__ import annotations

from typing import Any

from ...extras.constants import IGNORE_INDEX
from .masks_check import encoded, trained
from .report import Check, DoctorContext

NAME = "special_tokens"
TITLES = ("end-of-turn token trained and among the stop ids", "pad differs from eos, or masks make it harmless",
          "no label is a pad")
BATCH_ROWS = 8  # rows of different lengths padded together, as one training batch


def end_of_turn_id(ctx: DoctorContext) -> Any:
    """The last special (added) token of a rendered reply: what the template writes to end a turn, or None."""
    reply = ctx.template.encode_multiturn(ctx.tokenizer, [{"role": "user", "content": "hi"},
                                                          {"role": "assistant", "content": "ok"}])[-1][1]
    special = set(ctx.tokenizer.all_special_ids) | set(ctx.tokenizer.get_added_vocab().values())
    return next((token for token in reversed(reply) if token in special), None)


def _name(ctx: DoctorContext, token_id: Any) -> str:
    return f"{ctx.tokenizer.convert_ids_to_tokens(token_id)} ({token_id})" if token_id is not None else "none"


def run(ctx: DoctorContext) -> list[Check]:
    from .masks_check import TRAINED_STAGES

    if ctx.template is None:  # pt, cls
        return [Check(NAME, TITLES[0], "skip", message=f"stage {ctx.stage} trains no chat replies.")]
    # RL stages train sampled completions, not the rows' answers: only the stop ids are theirs to check
    trains_rows = ctx.stage in TRAINED_STAGES
    pairs = [pair for dataset in ctx.data_args.dataset for pair in encoded(ctx, dataset).pairs()] if trains_rows else []
    checks = [_end_of_turn(ctx, pairs, trains_rows)]
    if ctx.stage != "sft":  # TRL's collators pad prompts and answers (or completions) and mask by their lengths
        note = f"stage {ctx.stage} is padded by TRL's trainer, which masks answers by their lengths."
        return checks + [Check(NAME, title, "skip", message=note) for title in TITLES[1:]]
    features = [{"input_ids": kept[0], "labels": kept[1]} for kept, _ in pairs[:BATCH_ROWS]]
    return checks + _padding(ctx, features)


def _end_of_turn(ctx: DoctorContext, pairs: list, trains_rows: bool = True) -> Check:
    eot = end_of_turn_id(ctx)
    stop_ids = ctx.template.stop_token_ids(ctx.tokenizer)
    whole = [kept for kept, full in pairs if trained(kept[1]) == trained(full[1])]
    missing = sum(eot not in kept[1] for kept in whole)
    value = f"{len(whole) - missing}/{len(whole)}"
    details = {"end_of_turn": _name(ctx, eot), "stop_ids": [_name(ctx, token) for token in stop_ids]}
    if eot is None:
        return Check(NAME, TITLES[0], "fail", value, f"template {ctx.template.name} ends a reply with no special "
                     "token, so nothing trained tells generation to stop.",
                     "Use the template of the model (its replies end with an end-of-turn token).", details)
    if eot not in stop_ids:
        return Check(NAME, TITLES[0], "fail", value, f"the end-of-turn token {_name(ctx, eot)} is not among the "
                     f"stop ids {details['stop_ids']}: generation runs past the end of each reply.",
                     "Use a template whose stop_words name its end-of-turn token (or set the tokenizer's eos).",
                     details)
    if missing:
        return Check(NAME, TITLES[0], "fail", value, f"{missing} of {len(whole)} whole answers do not train "
                     f"{_name(ctx, eot)}: the model does not learn to stop.",
                     "Train the end-of-turn token: check the template and that the response column holds the reply.",
                     details)
    if trains_rows and not whole:
        return Check(NAME, TITLES[0], "warn", value, f"{_name(ctx, eot)} stops generation, but truncation cuts "
                     "every answer before it: no row trains it (see masks: answers cut by cutoff_len).",
                     "Raise cutoff_len so that answers end with their end-of-turn token.", details)
    trained_note = "is trained in every whole answer and" if trains_rows else "(completions are sampled)"
    return Check(NAME, TITLES[0], "pass", value, f"{_name(ctx, eot)} {trained_note} stops generation.",
                 details=details)


def _padding(ctx: DoctorContext, features: list[dict[str, list[int]]]) -> list[Check]:
    """The two pad checks on one batch padded by the training collator."""
    from ...data.collator import SupervisedDataCollator

    tokenizer = ctx.tokenizer
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    if not features:
        return [Check(NAME, title, "skip", message="no row keeps a trained token.") for title in TITLES[1:]]
    batch = SupervisedDataCollator(tokenizer)(features)
    labels, lengths = batch["labels"].tolist(), [len(row["input_ids"]) for row in features]
    padded = [label for row, length in zip(labels, lengths) for label in row[length:]]
    pad_targets = sum(label != IGNORE_INDEX for label in padded)
    value = f"{pad_targets}/{len(padded)}"
    details = {"pad": _name(ctx, pad), "eos": _name(ctx, eos), "padded_positions": len(padded),
               "pad_positions_with_a_target": pad_targets}
    if pad_targets:
        no_pad = Check(NAME, TITLES[2], "fail", value, f"{pad_targets} of {len(padded)} padding positions of a "
                       f"batch of {len(features)} rows carry a target ({_name(ctx, pad)}): the model learns to "
                       "emit padding.", "Pad labels with -100 (IGNORE_INDEX) in the data collator.", details)
    else:
        no_pad = Check(NAME, TITLES[2], "pass", value, f"a batch of {len(features)} rows padded by the training "
                       f"collator: none of its {len(padded)} padding positions is a target.", details=details)
    if pad != eos:
        same = Check(NAME, TITLES[1], "pass", _name(ctx, pad), f"pad {_name(ctx, pad)} differs from eos "
                     f"{_name(ctx, eos)}.", details=details)
    elif pad_targets:
        same = Check(NAME, TITLES[1], "fail", _name(ctx, pad), f"pad is eos {_name(ctx, eos)} and padding is "
                     "trained: the model cannot tell the end of a reply from padding.",
                     "Give the tokenizer its own pad token, or pad labels with -100.", details)
    else:
        kept_eos = sum(row.count(eos) for row in labels)
        same = Check(NAME, TITLES[1], "pass", _name(ctx, pad), f"pad is eos {_name(ctx, eos)}, harmless here: "
                     f"padding labels are -100 and the {kept_eos} eos targets inside the rows stay trained.",
                     details=details)
    return [same, no_pad]
