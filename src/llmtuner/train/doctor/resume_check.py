"""Resume: a run of the truncated model resumed from its checkpoint of step 2 gives step 3 the same batch, the same
loss and the same weights as the run that never stopped.

Both runs go through the code a training run uses: ``build_lm_trainer`` (atomic checkpoints,
``train/atomic_save.py``), ``train_resumable`` with ``resume_from_checkpoint`` (``extras/resume_points.py``), and
transformers' restore of the optimizer, scheduler, RNG and data position. The rows are the first of the
config's datasets, the optimizer and schedule the config's; batch and accumulation are the config's, at most
``MAX_BATCH`` each and small enough that step 2 falls inside an epoch, so the runs stay short and the resumed run
must skip the batches it already trained. The runs' folders live in the report folder and are removed after.
"""

from __future__ import annotations

from typing import Any, Optional

from ...extras.resume_points import CHECKPOINT_PREFIX
from .report import Check, DoctorContext
from .truncated_model import (
    doctor_training_args,
    first_samples,
    load_truncated_model,
    parameter_sample,
    quiet_trainer,
    relative_difference,
    release_truncated_checkpoint,
    scratch_folder,
    without_deepspeed,
)

NAME, TITLE = "resume", "a resumed run continues with the same batch, loss and weights"
SAVED_AT, STEPS = 2, 3
MAX_BATCH = 2  # per-device batch and accumulation steps of the runs, each at most this (and what the rows allow)
CUTOFF_LEN = 128  # the rows' cutoff (at most the run's): the data order does not depend on length
TOLERANCE = 1e-5  # the same computation on the same CPU: equal up to fp32 rounding


class _StepRecorder:
    """A ``training_step`` wrapper: each step's micro-batches (input ids) and loss."""

    def __init__(self, trainer: Any) -> None:
        self.batches: dict[int, list[Any]] = {}
        self.losses: dict[int, float] = {}
        recorder, training_step = self, trainer.training_step

        def recorded(model: Any, inputs: dict, *args: Any, **kwargs: Any) -> Any:
            step = trainer.state.global_step + 1
            recorder.batches.setdefault(step, []).append(inputs["input_ids"].detach().clone())
            loss = training_step(model, inputs, *args, **kwargs)
            recorder.losses[step] = recorder.losses.get(step, 0.0) + float(loss)
            return loss

        trainer.training_step = recorded


def train_run(ctx: DoctorContext, samples: list[dict], output_dir: str, batch: int, accumulation: int,
              resume_from: Optional[str] = None) -> tuple[_StepRecorder, Any]:
    """One run of ``STEPS`` steps into ``output_dir``, saving a checkpoint at step ``SAVED_AT`` (resumed from the
    checkpoint ``resume_from``): what each step saw and lost, and the trained weights at the end."""
    from datasets import Dataset
    from transformers import set_seed

    from ...data.dataset import DatasetModule
    from ..trainer import build_lm_trainer

    set_seed(ctx.training_args.seed)  # the adapter's initial weights, as run_exp seeds them
    model = load_truncated_model(ctx)
    args = doctor_training_args(ctx, output_dir, max_steps=STEPS, save_strategy="steps", save_steps=SAVED_AT,
                                per_device_train_batch_size=batch, gradient_accumulation_steps=accumulation,
                                resume_from_checkpoint=resume_from, save_total_limit=None, warmup_steps=0)
    trainer = quiet_trainer(build_lm_trainer(model, ctx.tokenizer, args, ctx.finetuning_args,
                                             DatasetModule(train_dataset=Dataset.from_list(samples))))
    recorder = _StepRecorder(trainer)
    trainer.train_resumable()
    return recorder, parameter_sample(model)


def run(ctx: DoctorContext) -> list[Check]:
    if ctx.stage not in ("pt", "sft"):
        return [Check(NAME, TITLE, "skip", message=f"stage {ctx.stage} trains with TRL's trainer; the resume check "
                                                   "runs the pt/sft trainer.")]
    try:
        with without_deepspeed(ctx):
            return [check_resume(ctx)]
    finally:
        release_truncated_checkpoint(ctx)  # the last check that loads the truncated model


def check_resume(ctx: DoctorContext) -> Check:
    samples = first_samples(ctx, MAX_BATCH * MAX_BATCH * STEPS, CUTOFF_LEN)
    if len(samples) < STEPS:
        return Check(NAME, TITLE, "skip", message=f"{len(samples)} rows with a trained token: fewer than {STEPS} "
                                                  "steps of one row.")
    # The checkpoint must fall inside an epoch (at its end, a resumed run starts the next epoch and skips
    # nothing): the rows must make more than STEPS steps, so batch and accumulation shrink to fit.
    accumulation = min(ctx.training_args.gradient_accumulation_steps, MAX_BATCH, len(samples) // STEPS)
    batch = min(ctx.training_args.per_device_train_batch_size, MAX_BATCH, len(samples) // (STEPS * accumulation))
    with scratch_folder(ctx) as folder:
        # The uninterrupted run's checkpoint at step SAVED_AT is the folder a run killed right after it leaves
        # (checkpoints appear complete or not at all, train/atomic_save.py): resume from it in another folder.
        whole, whole_weights = train_run(ctx, samples, f"{folder}/uninterrupted", batch, accumulation)
        checkpoint = f"{folder}/uninterrupted/{CHECKPOINT_PREFIX}-{SAVED_AT}"
        resumed, resumed_weights = train_run(ctx, samples, f"{folder}/resumed", batch, accumulation, checkpoint)
    import torch

    same_batch = len(whole.batches.get(STEPS, [])) == len(resumed.batches.get(STEPS, [])) > 0 and all(
        torch.equal(a, b) for a, b in zip(whole.batches[STEPS], resumed.batches[STEPS]))
    resumed_steps = sorted(resumed.batches)
    loss_gap = relative_difference(resumed.losses.get(STEPS, float("nan")), whole.losses[STEPS])
    weight_gap = relative_difference(resumed_weights, whole_weights)
    value = max(loss_gap, weight_gap)
    shown = (f"step {STEPS}: loss {resumed.losses.get(STEPS, float('nan')):.6f} resumed vs "
             f"{whole.losses[STEPS]:.6f} uninterrupted, weights {weight_gap:.2g} apart; batch {batch} x "
             f"accumulation {accumulation}, {len(samples)} rows")
    details = {"steps_after_resume": resumed_steps, "losses": {"uninterrupted": whole.losses,
               "resumed": resumed.losses}, "same_batch": same_batch, "tolerance": TOLERANCE}
    if same_batch and resumed_steps == [STEPS] and loss_gap <= TOLERANCE and weight_gap <= TOLERANCE:
        return Check(NAME, TITLE, "pass", value, f"resumed from the checkpoint of step {SAVED_AT}: the same "
                                                 f"batch at step {STEPS}; {shown}.", details=details)
    problems = [] if same_batch else [f"step {STEPS} trained another batch (the data position or sampler was not "
                                      "restored)"]
    if resumed_steps != [STEPS]:
        problems.append(f"the resumed run trained steps {resumed_steps}, not just step {STEPS}")
    if loss_gap > TOLERANCE or weight_gap > TOLERANCE:
        problems.append(f"loss {loss_gap:.3g} and weights {weight_gap:.3g} apart (tolerance {TOLERANCE:g})")
    return Check(NAME, TITLE, "fail", value, "; ".join(problems) + f"; {shown}.",
                 "A resumed run would not continue the one that stopped: report it with doctor.json; until "
                 "fixed, rerun from the start instead of resuming.", details)
