"""Data mix: the share of each dataset in the training set equals what the config asks, within sampling error.

The training conversations come from the code training runs (``load_split_conversations``: per-task validation
split, ``dataset_ratios``, then ``mix_datasets`` by ``mix_strategy`` / ``interleave_probs``; then ``mix_replay``),
on every row, converted but not tokenised. Each row names its dataset (``_dataset``), so the realised shares are
counted, not assumed. What the config asks:

- concat: dataset i brings ratio_i x its rows (its rows after the validation split, loaded again with no ratio);
- interleave with ``interleave_probs``: p_i, each row a random draw, so a binomial sampling error;
- interleave without: equal turns, 1/k each;
- ``replay_dataset``: replay_ratio of the rows, the datasets above sharing the rest.

Every epoch trains on this same set (the Trainer's sampler reshuffles it), so its shares are each epoch's.
"""

from __future__ import annotations

import copy
import math
from collections import Counter
from typing import Any

from .report import Check, DoctorContext

NAME, TITLE = "data_mix", "each dataset's share of an epoch is what the config asks"
ROW_SLACK = 1  # rows a ratio may round off by, per dataset and task (each task's count is rounded on its own)
SIGMAS = 4  # a realised share further than 4 standard errors from the asked one is not chance (p < 1e-4)


def training_rows(ctx: DoctorContext, data_args: Any) -> Any:
    """The run's training conversations, as ``get_dataset`` builds them before tokenising."""
    from ...data.loader import load_conversations, load_split_conversations
    from ...data.mixing import mix_replay

    seed = ctx.training_args.seed
    val_size = 0.0 if data_args.eval_dataset else data_args.val_size
    train, _ = load_split_conversations(data_args.dataset, data_args, ctx.stage, seed=seed, val_size=val_size)
    if data_args.replay_dataset:
        replay = load_conversations(data_args.replay_dataset, data_args, ctx.stage, seed=seed)
        train = mix_replay(train, replay, data_args.replay_ratio, seed)
    return train


def asked_shares(ctx: DoctorContext) -> tuple[dict[str, float], dict[str, float], bool]:
    """Each dataset's share the config asks for; with concat, also its rows (ratio x its own rows); and whether
    rows are random draws (interleave_probs)."""
    data_args, names = ctx.data_args, list(ctx.data_args.dataset)
    rows: dict[str, float] = {}
    if data_args.mix_strategy == "concat":
        plain = copy.copy(data_args)  # the same rows with every ratio 1 and no replay: each dataset's own size
        plain.dataset_ratios, plain.replay_dataset = None, None
        sizes = Counter(training_rows(ctx, plain)["_dataset"])
        ratios = data_args.dataset_ratios or [1.0]
        ratios = ratios * len(names) if len(ratios) == 1 else ratios
        rows = {name: ratio * sizes[name] for name, ratio in zip(names, ratios)}
        shares, random = {name: count / sum(rows.values()) for name, count in rows.items()}, False
    elif data_args.interleave_probs:
        shares, random = dict(zip(names, data_args.interleave_probs)), True
    else:
        shares, random = {name: 1 / len(names) for name in names}, False
    if data_args.replay_dataset:
        shares = {name: share * (1 - data_args.replay_ratio) for name, share in shares.items()}
        replay = list(data_args.replay_dataset)
        shares.update({name: data_args.replay_ratio / len(replay) for name in replay})
    return shares, rows, random


def tolerance(share: float, rows: int, random: bool, parts: int) -> float:
    """How far a realised share may be from the asked one: rounding (a row per part: each dataset, each task, the
    replay count) and, for random draws, SIGMAS binomial standard errors."""
    rounding = parts / max(rows, 1)
    return rounding + (SIGMAS * math.sqrt(share * (1 - share) / max(rows, 1)) if random else 0.0)


def run(ctx: DoctorContext) -> list[Check]:
    data_args = ctx.data_args
    if ctx.stage == "cls":
        return [Check(NAME, TITLE, "skip", message="stage cls reads its rows per task (train/cls.py): no mixing.")]
    if len(data_args.dataset) == 1 and not data_args.replay_dataset and not data_args.dataset_ratios:
        return [Check(NAME, TITLE, "pass", 1.0, f"one dataset ({data_args.dataset[0]}), nothing mixed.")]
    realised = Counter(training_rows(ctx, data_args)["_dataset"])
    rows = sum(realised.values())
    asked, asked_rows, random = asked_shares(ctx)
    parts = len(asked) + 1
    table = [{"dataset": name, "asked": round(share, 4), "realised": round(realised[name] / rows, 4),
              "rows": realised[name], "asked_rows": round(asked_rows[name], 1) if name in asked_rows else None,
              "tolerance": round(tolerance(share, rows, random, parts), 4)} for name, share in asked.items()]
    # dataset_ratios also set how many rows a dataset brings (one dataset alone is always 100% of the rows)
    off = [item for item in table if abs(item["realised"] - item["asked"]) > item["tolerance"]
           or (item["asked_rows"] is not None and abs(item["rows"] - item["asked_rows"]) > ROW_SLACK * parts)]
    worst = max(table, key=lambda item: abs(item["realised"] - item["asked"]))
    value = round(abs(worst["realised"] - worst["asked"]), 4)
    shown = ", ".join(f"{item['dataset']} {item['rows']} rows = {item['realised']:.1%} (asked {item['asked']:.1%}"
                      + (f", {item['asked_rows']:g} rows" if item["asked_rows"] is not None else "") + ")"
                      for item in table)
    details = {"shares": table, "rows": rows, "mix_strategy": data_args.mix_strategy,
               "epochs": ctx.training_args.num_train_epochs if ctx.training_args.max_steps <= 0 else None}
    if off:
        return [Check(NAME, TITLE, "fail", value,
                      f"of {rows} training rows: {shown}; {', '.join(item['dataset'] for item in off)} off by more "
                      "than the sampling error.",
                      "The mixing does not do what the config asks: check mix_strategy, interleave_probs, "
                      "dataset_ratios and replay_ratio (docs/data.md).", details)]
    return [Check(NAME, TITLE, "pass", value, f"of {rows} training rows (the same set every epoch): {shown}.",
                  details=details)]
