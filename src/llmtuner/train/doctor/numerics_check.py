"""Numerics on the user's real weights, truncated to their first two decoder layers (truncated_model.py), on the
first rows of the config's datasets, through the code training runs (preprocessing, packing, collator, loader and
adapter, ``LlmtunerTrainer`` and its loss):

- packing: the loss of the rows packed into one row equals their loss run one by one, and so do each sample's
  last hidden states (sft; checked whether or not the config packs: it is a property of the packed path). On a CPU the packed row runs ``llmtuner_packed_sdpa``;
  with ``attn_implementation: sdpa`` the path a GPU takes (sdpa with transformers' block-diagonal mask) is checked
  too.
- accumulation: batch n x accumulation 1 and batch 1 x accumulation n give the same loss and gradient (the loss
  is averaged over the real label tokens of all micro-batches, design.md), for each loss path the run can take
  (the chunked loss, the CPU default, and the model's own, the GPU default).
- adapter: what trains in the truncated model, scaled to the full model's layers, equals the count computed from
  config.json (LoRA of ``lora_target`` in every layer, the freeze layers, or everything).

The runs take one step with SGD at learning rate 0 (only the first step's loss and gradients are compared, so
the optimizer does not matter, and the weights stay as loaded for the next comparison), dropout off.
"""

from __future__ import annotations

import copy
from collections import Counter
from typing import Any

from .report import Check, DoctorContext
from .truncated_model import (
    LAYER_KEY,
    doctor_training_args,
    first_samples,
    load_truncated_model,
    parameter_sample,
    quiet_trainer,
    relative_difference,
    scratch_folder,
    truncated_checkpoint,
    without_deepspeed,
)

NAME = "numerics"
LOSS_STAGES = ("pt", "sft")  # the stages whose loss is LlmtunerTrainer's causal-LM loss
ROWS = 4  # rows packed together, and n of batch n x accumulation 1 vs batch 1 x accumulation n
CUTOFF_LEN = 256  # the checks' cutoff (at most the run's): the properties do not depend on length, the time does
# fp32 sums of the same terms in another order differ by ~1e-6 relative; a leak or a wrong normalisation by 1e-2+
LOSS_TOLERANCE = 1e-4
GRADIENT_TOLERANCE = 1e-3
# A random model's loss barely moves when samples leak (its predictions are near uniform); its hidden states do.
HIDDEN_TOLERANCE = 1e-4


def _trainer(ctx: DoctorContext, model: Any, samples: list[dict], output_dir: str, chunked: Any = None,
             **changes: Any) -> Any:
    """``build_lm_trainer`` (the trainer sft and pt build) on ``samples``, for a one-step SGD run at lr 0."""
    from datasets import Dataset

    from ...data.dataset import DatasetModule
    from ..trainer import build_lm_trainer

    args = doctor_training_args(ctx, output_dir, optim="sgd", learning_rate=0.0, max_grad_norm=0.0,
                                lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, **changes)
    finetuning_args = copy.copy(ctx.finetuning_args)
    if chunked is not None:
        finetuning_args.chunked_loss = chunked
    dataset = DatasetModule(train_dataset=Dataset.from_list(samples))
    return quiet_trainer(build_lm_trainer(model, ctx.tokenizer, args, finetuning_args, dataset))


def _trained_tokens(labels: Any) -> int:
    """Positions that carry a loss: labels shifted by one, as the causal-LM loss shifts them."""
    from ...extras.constants import IGNORE_INDEX

    return int((labels[..., 1:] != IGNORE_INDEX).sum())


def _batch_loss(trainer: Any, model: Any, features: list[dict]) -> tuple[float, int, list[tuple[list[int], Any]]]:
    """(the trainer's training loss of one collated batch, its trained tokens, and each sample's input ids with the
    decoder's last hidden states: the samples of a packed row cut where their positions restart)."""
    import torch

    batch = trainer._prepare_inputs(trainer.data_collator(features))  # noqa: SLF001 - the Trainer's own step
    model.train()
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    found: list[Any] = []  # the decoder's output on the way to the loss (both loss paths call the decoder once)
    hook = base.get_decoder().register_forward_hook(lambda module, args, output: found.append(output))
    try:
        with torch.no_grad():
            loss = trainer.compute_loss(model, batch)
    finally:
        hook.remove()
    hidden = found[-1].last_hidden_state
    samples = []
    for row, ids in enumerate(batch["input_ids"]):
        positions = batch["position_ids"][row] if "position_ids" in batch else torch.arange(len(ids))
        starts = [*torch.nonzero(positions == 0).flatten().tolist(), len(ids)]
        samples += [(ids[start:end].tolist(), hidden[row, start:end]) for start, end in zip(starts, starts[1:])]
    return float(loss), _trained_tokens(batch["labels"]), samples


def _hidden_difference(packed: list[tuple[list[int], Any]], alone: list[tuple[list[int], Any]]) -> float:
    """The largest relative difference between a sample's hidden states in the packed row and alone (samples
    matched by their ids; a sample missing from the packed row counts as 1)."""
    worst = 0.0
    unmatched = list(packed)
    for ids, hidden in alone:
        match = next((entry for entry in unmatched if entry[0] == ids), None)
        if match is None:
            return max(worst, 1.0)
        unmatched.remove(match)
        worst = max(worst, relative_difference(match[1], hidden))
    return worst


def packing_paths(ctx: DoctorContext, model: Any) -> list[str]:
    """The attention implementations packed rows take: the one loaded (on a CPU, the per-sample sdpa), and sdpa
    with the block-diagonal mask when a GPU run would take that one instead."""
    loaded = model.config._attn_implementation  # noqa: SLF001 - transformers' name of the kernel in use
    paths = [loaded]
    if ctx.model_args.attn_implementation == "sdpa" and loaded != "sdpa":
        paths.append("sdpa")
    return paths


def check_packing(ctx: DoctorContext, model: Any, samples: list[dict]) -> Check:
    title = "packed rows give the loss of each row alone"
    if ctx.stage != "sft":
        return Check(NAME, title, "skip", message=f"stage {ctx.stage} does not pack samples.")
    if len(samples) < 2:
        return Check(NAME, title, "skip", message="fewer than 2 rows with a trained token: nothing to pack.")
    from ...data.preprocess.packing import pack_supervised_dataset

    data_args = copy.copy(ctx.data_args)
    data_args.cutoff_len = sum(len(sample["input_ids"]) for sample in samples)  # every row in one packed row
    columns = {key: [sample[key] for sample in samples] for key in ("input_ids", "labels")}
    packed = pack_supervised_dataset(columns, data_args)
    packed_rows = [dict(zip(packed, values)) for values in zip(*packed.values())]
    results = {}
    with scratch_folder(ctx) as out:
        loaded = model.config._attn_implementation  # noqa: SLF001
        try:
            for path in packing_paths(ctx, model):
                model.set_attn_implementation(path)
                trainer = _trainer(ctx, model, samples, out)
                alone = [_batch_loss(trainer, model, [sample]) for sample in samples]
                alone_tokens = sum(tokens for _, tokens, _ in alone)
                alone_loss = sum(loss * tokens for loss, tokens, _ in alone) / max(alone_tokens, 1)
                packed_loss, packed_tokens, packed_hidden = _batch_loss(trainer, model, packed_rows)
                hidden = _hidden_difference(packed_hidden, [sample for _, _, found in alone for sample in found])
                results[path] = {"alone": alone_loss, "packed": packed_loss, "tokens": [alone_tokens, packed_tokens],
                                 "loss_difference": relative_difference(packed_loss, alone_loss),
                                 "hidden_difference": hidden}
        finally:
            model.set_attn_implementation(loaded)
    worst_loss = max(result["loss_difference"] for result in results.values())
    worst_hidden = max(result["hidden_difference"] for result in results.values())
    tokens_differ = [path for path, result in results.items() if result["tokens"][0] != result["tokens"][1]]
    shown = "; ".join(f"{path}: packed {r['packed']:.6f} vs alone {r['alone']:.6f}" for path, r in results.items())
    note = "" if ctx.data_args.packing else " (packing is off in this config: checked as a property of the path)"
    where = f"{len(samples)} rows in {len(packed_rows)} packed row{'s' if len(packed_rows) > 1 else ''}{note}"
    details = {"paths": results, "tolerance": {"loss": LOSS_TOLERANCE, "hidden": HIDDEN_TOLERANCE}}
    value = max(worst_loss, worst_hidden)
    if worst_loss <= LOSS_TOLERANCE and worst_hidden <= HIDDEN_TOLERANCE and not tokens_differ:
        return Check(NAME, title, "pass", value,
                     f"relative difference: loss {worst_loss:.2g} (tolerance {LOSS_TOLERANCE:g}), each sample's "
                     f"hidden states {worst_hidden:.2g} ({HIDDEN_TOLERANCE:g}); {shown}; {where}.", details=details)
    return Check(NAME, title, "fail", value,
                 f"packed rows differ from the rows alone: loss {worst_loss:.3g}, a sample's hidden states "
                 f"{worst_hidden:.3g} (relative; tolerance {LOSS_TOLERANCE:g} / {HIDDEN_TOLERANCE:g})"
                 + (f", trained tokens differ on {', '.join(tokens_differ)}" if tokens_differ else "")
                 + f"; {shown}; {where}: packed samples see each other, or their labels shift.",
                 "Train with packing: false until this passes, and report it with doctor.json (an attention "
                 "implementation that ignores the samples' boundaries lets packed samples attend to each other).",
                 details)


class _GradientProbe:
    """A TrainerCallback that keeps a sample of the gradients just before the optimizer steps."""

    def __init__(self) -> None:
        from transformers import TrainerCallback

        probe = self

        class Callback(TrainerCallback):
            def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):  # noqa: ANN001, ANN201
                probe.gradients = parameter_sample(model, gradients=True)

        self.callback = Callback()
        self.gradients: Any = None


def one_step(ctx: DoctorContext, model: Any, samples: list[dict], batch: int, accumulation: int,
             chunked: bool) -> tuple[float, Any]:
    """(loss, sampled gradients) of the first optimizer step of ``samples`` at this batch size and accumulation,
    through the Trainer's own training step."""
    with scratch_folder(ctx) as out:
        trainer = _trainer(ctx, model, samples, out, chunked, per_device_train_batch_size=batch,
                           gradient_accumulation_steps=accumulation)
        probe = _GradientProbe()
        trainer.add_callback(probe.callback)
        losses = []
        training_step = trainer.training_step

        def recorded(*args: Any, **kwargs: Any) -> Any:
            loss = training_step(*args, **kwargs)
            losses.append(float(loss))
            return loss

        trainer.training_step = recorded  # the step's loss is the sum of what each micro-batch adds
        trainer.train()
    return sum(losses), probe.gradients


def loss_paths(ctx: DoctorContext, model: Any) -> list[bool]:
    """The loss paths a run of this config can take: chunked (``chunked_loss`` true, or unset on a CPU) and the
    model's own (false, or unset on a GPU); the chunked one only where it can run on this model."""
    from ..chunked_loss import unsupported_reason

    requested = ctx.finetuning_args.chunked_loss
    paths = [True, False] if requested is None else [bool(requested)]
    if unsupported_reason(model, ctx.training_args) and True in paths:
        paths.remove(True)
    return paths or [False]


def check_accumulation(ctx: DoctorContext, model: Any, samples: list[dict]) -> Check:
    title = f"batch {min(ROWS, len(samples))} x accumulation 1 = batch 1 x accumulation {min(ROWS, len(samples))}"
    rows = samples[:ROWS]
    if len(rows) < 2:
        return Check(NAME, title, "skip", message="fewer than 2 rows with a trained token.")
    import torch

    tokens = [_trained_tokens(torch.tensor([sample["labels"]])) for sample in rows]
    results = {}
    for chunked in loss_paths(ctx, model):
        whole_loss, whole_gradients = one_step(ctx, model, rows, len(rows), 1, chunked)
        split_loss, split_gradients = one_step(ctx, model, rows, 1, len(rows), chunked)
        results["chunked_loss" if chunked else "model_loss"] = {
            "loss": [whole_loss, split_loss], "loss_difference": relative_difference(split_loss, whole_loss),
            "gradient_difference": relative_difference(split_gradients, whole_gradients)}
    worst_loss = max(result["loss_difference"] for result in results.values())
    worst_gradient = max(result["gradient_difference"] for result in results.values())
    shown = "; ".join(f"{path}: loss {r['loss'][0]:.6f} vs {r['loss'][1]:.6f}, gradient {r['gradient_difference']:.2g}"
                      for path, r in results.items())
    equal = " (every row has the same number: a per-micro-batch mean would pass too)" if len(set(tokens)) == 1 else ""
    details = {"paths": results, "trained_tokens_per_row": tokens,
               "tolerance": {"loss": LOSS_TOLERANCE, "gradient": GRADIENT_TOLERANCE}}
    value = max(worst_loss, worst_gradient)
    if worst_loss <= LOSS_TOLERANCE and worst_gradient <= GRADIENT_TOLERANCE:
        return Check(NAME, title, "pass", value,
                     f"relative difference: loss {worst_loss:.2g} (tolerance {LOSS_TOLERANCE:g}), gradient "
                     f"{worst_gradient:.2g} ({GRADIENT_TOLERANCE:g}); {shown}; trained tokens per row {tokens}{equal}.",
                     details=details)
    return Check(NAME, title, "fail", value,
                 f"gradient accumulation changes the step: loss {worst_loss:.3g}, gradient {worst_gradient:.3g} "
                 f"relative difference; {shown}; trained tokens per row {tokens}.",
                 "The loss must be summed over the trained tokens of every micro-batch and divided by their total "
                 "(num_items_in_batch), not averaged per micro-batch: report it with doctor.json.", details)


def _trained_by_layer(model: Any) -> tuple[Counter, int, list[str]]:
    """(trained parameters per decoder layer, trained parameters outside the layers, short names of the modules
    LoRA attached to in the first layer)."""
    per_layer: Counter = Counter()
    outside = 0
    attached = set()
    for name, param in model.named_parameters():
        match = LAYER_KEY.search(name)
        if match and "lora_A" in name and match.group(1) == "0":
            attached.add(name.split(".lora_A")[0].rsplit(".", 1)[-1])
        if not param.requires_grad:
            continue
        if match:
            per_layer[int(match.group(1))] += param.numel()
        else:
            outside += param.numel()
    return per_layer, outside, sorted(attached)


def check_adapter(ctx: DoctorContext, model: Any) -> Check:
    from .fit_check import FORMULA_MODEL_TYPES, Shapes, read_model_config, trainable_parameters

    finetuning_args = ctx.finetuning_args
    method = finetuning_args.finetuning_type
    title = f"{method} trains what the config says (parameters of the full model)"
    if ctx.model_args.adapter_name_or_path:
        return Check(NAME, title, "skip", message="adapter_name_or_path: the run resumes that adapter, whose own "
                                                  "adapter_config.json says where it attaches.")
    config = read_model_config(ctx.model_args.model_name_or_path)
    _, info = truncated_checkpoint(ctx)
    per_layer, outside, attached = _trained_by_layer(model)
    layers = info["of_layers"]
    trained_layers = min(abs(finetuning_args.freeze_trainable_layers), layers) if method == "freeze" else layers
    in_layers = round(sum(per_layer.values()) / max(len(per_layer), 1) * trained_layers) if per_layer else 0
    attached_total = in_layers + outside
    where = (f"LoRA on {', '.join(attached)} of every layer" if method == "lora" else
             f"layers trained: {trained_layers} of {layers}")
    details = {"trained_in_truncated_layers": dict(per_layer), "trained_outside_layers": outside,
               "scaled_to_layers": layers, "lora_modules": attached}
    known = config.get("model_type") in FORMULA_MODEL_TYPES and not (
        method == "freeze" and "all" not in finetuning_args.freeze_trainable_modules)
    if not known:
        return Check(NAME, title, "pass", f"{attached_total:,}",
                     f"{attached_total:,} trained parameters in the full model ({where}; from the loaded layers: "
                     "no config formula for this model type or module selection).", details=details)
    try:
        expected = trainable_parameters(Shapes.from_config(config), finetuning_args)
    except KeyError as exc:
        return Check(NAME, title, "fail", f"{attached_total:,}", f"lora_target {exc} is not a linear layer of this "
                     "model's decoder layers.", "Name the layers in lora_target (or use all).", details)
    if method != "full":
        expected += outside  # embeddings or head that also train (additional_target, resized vocabulary)
    details["expected_from_config"] = expected
    if expected == attached_total:
        return Check(NAME, title, "pass", f"{attached_total:,}",
                     f"{attached_total:,} trained parameters in the full model, as config.json says ({where}).",
                     details=details)
    return Check(NAME, title, "fail", f"{attached_total:,}",
                 f"{attached_total:,} parameters would train in the full model ({where}), config.json says "
                 f"{expected:,}.", "Check lora_target / freeze_trainable_layers / freeze_trainable_modules against "
                 "the model's module names (doctor.json lists where the adapter attached).", details)


def run(ctx: DoctorContext) -> list[Check]:
    if ctx.stage not in LOSS_STAGES:
        return [Check(NAME, "loss, accumulation and adapter on the truncated model", "skip",
                      message=f"stage {ctx.stage}: its loss is not the causal-LM loss these checks compare "
                              f"(they run for {', '.join(LOSS_STAGES)}).")]
    from transformers import set_seed

    samples = first_samples(ctx, ROWS * 4, CUTOFF_LEN)
    with without_deepspeed(ctx):
        set_seed(ctx.training_args.seed)  # the adapter's initial weights, as run_exp seeds them
        model = load_truncated_model(ctx, packed_rows=ctx.stage == "sft")
        return [check_packing(ctx, model, samples[:ROWS]), check_accumulation(ctx, model, varied_rows(samples)),
                check_adapter(ctx, model)]


def varied_rows(samples: list[dict], count: int = ROWS) -> list[dict]:
    """``count`` of the samples, rows with a trained-token count not seen yet first: with rows of equal counts a
    per-micro-batch mean would equal the right normalisation (pt's blocks are all cutoff_len long but the last)."""
    from ...extras.constants import IGNORE_INDEX

    seen, first, rest = set(), [], []
    for sample in samples:
        tokens = sum(label != IGNORE_INDEX for label in sample["labels"][1:])
        (rest if tokens in seen else first).append(sample)
        seen.add(tokens)
    return (first + rest)[:count]
