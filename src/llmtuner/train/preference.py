"""TRL's preference trainers behind our data path: the pieces the dpo, kto and rm recipes share.

Our rows arrive tokenised by our chat templates (data/preprocess/preference.py); each trainer class here is TRL's
with ``LlmtunerTrainerMixin`` in front (atomic checkpoints, resume and graceful stop, the JSONL log) and its dataset preparation replaced by "already done", so TRL never
re-tokenises with the tokenizer's own template:

- ``DPOTrainer``  = LlmtunerTrainerMixin + ReferenceAdapterMixin + trl.DPOTrainer
  (pref_loss sigmoid/hinge/ipo/...; pref_ftx adds TRL's "sft" loss)
- ``CPOTrainer``  = LlmtunerTrainerMixin + trl.experimental.cpo.CPOTrainer (pref_loss simpo)
- ``ORPOTrainer`` = LlmtunerTrainerMixin + trl.experimental.orpo.ORPOTrainer (pref_loss orpo)
- ``KTOTrainer``  = LlmtunerTrainerMixin + ReferenceAdapterMixin + trl.KTOTrainer (stage kto)
- ``RewardTrainer`` = LlmtunerTrainerMixin + trl.RewardTrainer (stage rm)
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from typing import TYPE_CHECKING, Any, Optional

from ..extras.constants import IGNORE_INDEX
from ..extras.logging import get_logger
from .trainer import LlmtunerTrainerMixin

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import PreTrainedModel, PreTrainedTokenizer, Seq2SeqTrainingArguments, Trainer, TrainerCallback

    from ..data.dataset import DatasetModule
    from ..hparams import FinetuningArguments, ModelArguments

logger = get_logger(__name__)

REWARD_KEYS = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies")
RM_KEYS = ("margin", "accuracy")  # RewardTrainer's names: score margin chosen - rejected, share ranked right


def trl_config(config_cls: type, training_args: "Seq2SeqTrainingArguments", **options: Any) -> Any:
    """``training_args`` as TRL's config class: every value the run resolved (TRL's own different defaults, such as
    gradient checkpointing on and bf16, do not apply), plus the trainer's ``options``."""
    accepted = {field.name for field in dataclasses.fields(config_cls) if field.init}
    values = {field.name: getattr(training_args, field.name) for field in dataclasses.fields(training_args)
              if field.init and field.name in accepted}
    return config_cls(**{**values, **options})


class ReferenceAdapterMixin:
    """TRL's DPO, KTO, GRPO and RLOO copy a PEFT model's adapter into a frozen "ref" adapter, the reference. For a
    new adapter that copy equals the base, so it is dropped and the reference is the base with the adapter off
    (TRL's own fallback); a continued SFT adapter keeps its copy. The copy is never saved: outputs hold the trained
    adapter only."""

    def __init__(self, *args: Any, new_adapter: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        model = self.accelerator.unwrap_model(self.model)
        if new_adapter and "ref" in (getattr(model, "peft_config", None) or {}):
            model.delete_adapter("ref")

    def _save(self, output_dir: Optional[str] = None, state_dict: Any = None) -> None:
        super()._save(output_dir, state_dict)
        model = self.accelerator.unwrap_model(self.model)
        if "ref" in (getattr(model, "peft_config", None) or {}) and self.args.should_save:
            shutil.rmtree(os.path.join(output_dir or self.args.output_dir, "ref"), ignore_errors=True)


def _trainer_classes() -> dict[str, type]:
    """Built on first use: importing TRL takes seconds, and most runs never need it."""
    from trl import DPOTrainer, KTOTrainer, RewardTrainer
    from trl.experimental.cpo import CPOTrainer
    from trl.experimental.orpo import ORPOTrainer

    class _DPOTrainer(LlmtunerTrainerMixin, ReferenceAdapterMixin, DPOTrainer):
        def _prepare_dataset(self, dataset: "Dataset", *args: Any, **kwargs: Any) -> "Dataset":
            return dataset  # prompt_ids / chosen_ids / rejected_ids from our templates

    class _KTOTrainer(LlmtunerTrainerMixin, ReferenceAdapterMixin, KTOTrainer):
        def _prepare_dataset(self, dataset: "Dataset", processing_class: Any, args: Any, name: str) -> "Dataset":
            # TRL's KL estimate pairs each prompt with the previous row's completion in the same batch.
            def add_kl(batch: dict[str, list]) -> dict[str, list]:
                return {"KL_completion_ids": batch["completion_ids"][-1:] + batch["completion_ids"][:-1]}

            return dataset.map(add_kl, batched=True, batch_size=args.per_device_train_batch_size,
                               desc=f"KL completions ({name})")

    class _PairTokensMixin:
        """CPO and ORPO read the older column layout: whole sequences with SFT labels; tokens come from our rows."""

        def tokenize_row(self, feature: dict[str, Any], model: Any = None) -> dict[str, Any]:
            return feature

    class _CPOTrainer(LlmtunerTrainerMixin, _PairTokensMixin, CPOTrainer):
        pass

    class _ORPOTrainer(LlmtunerTrainerMixin, _PairTokensMixin, ORPOTrainer):
        pass

    class _RewardTrainer(LlmtunerTrainerMixin, RewardTrainer):
        def _prepare_dataset(self, dataset: "Dataset", *args: Any, **kwargs: Any) -> "Dataset":
            return dataset.map(lambda row: {"chosen_ids": row["prompt_ids"] + row["chosen_ids"],
                                            "rejected_ids": row["prompt_ids"] + row["rejected_ids"]},
                               remove_columns=["prompt_ids"], desc="Joining prompts and answers")

    return {"dpo": _DPOTrainer, "kto": _KTOTrainer, "simpo": _CPOTrainer, "orpo": _ORPOTrainer, "rm": _RewardTrainer}


def to_sequence_rows(dataset: Optional["Dataset"]) -> Optional["Dataset"]:
    """prompt/chosen/rejected ids -> CPO/ORPO's ``{chosen,rejected}_{input_ids,attention_mask,labels}`` columns."""
    if dataset is None:
        return None

    def convert(row: dict[str, Any]) -> dict[str, Any]:
        prompt = row["prompt_ids"]
        out: dict[str, Any] = {"prompt_input_ids": prompt, "prompt_attention_mask": [1] * len(prompt)}
        for name in ("chosen", "rejected"):
            ids = prompt + row[f"{name}_ids"]
            out[f"{name}_input_ids"] = ids
            out[f"{name}_attention_mask"] = [1] * len(ids)
            out[f"{name}_labels"] = [IGNORE_INDEX] * len(prompt) + row[f"{name}_ids"]
        return out

    return dataset.map(convert, remove_columns=dataset.column_names, desc="Sequences for CPO/ORPO")


def load_reference_model(
    tokenizer: "PreTrainedTokenizer", model_args: "ModelArguments", finetuning_args: "FinetuningArguments"
) -> Optional["PreTrainedModel"]:
    """The frozen reference of a dpo/kto run, or None where TRL needs no separate model.

    ``ref_model`` (+ ``ref_model_adapters``, merged) when the user names one; otherwise None for LoRA (TRL scores the
    reference with the adapter's starting weights: the base for a new adapter, the SFT adapter a run continues), and
    a frozen copy of the starting model for freeze/full tuning. Under ZeRO-3 it loads partitioned like the policy
    (transformers reads the DeepSpeed config of the run) and TRL wraps it in an inference engine.
    """
    from ..model import load_model

    reference_free = finetuning_args.stage == "dpo" and finetuning_args.pref_loss in ("orpo", "simpo")
    if reference_free:
        return None
    if finetuning_args.ref_model:
        ref_args = dataclasses.replace(model_args, model_name_or_path=finetuning_args.ref_model,
                                       adapter_name_or_path=finetuning_args.ref_model_adapters)
        ref_finetuning = dataclasses.replace(finetuning_args, finetuning_type="lora" if ref_args.adapter_name_or_path
                                             else finetuning_args.finetuning_type)
        logger.info(f"Reference model: {finetuning_args.ref_model}"
                    + (f" + {', '.join(ref_args.adapter_name_or_path)}" if ref_args.adapter_name_or_path else ""))
        return load_model(tokenizer, ref_args, ref_finetuning, is_trainable=False)
    if finetuning_args.finetuning_type == "lora":
        return None
    logger.info("Reference model: a frozen copy of the starting model.")
    return load_model(tokenizer, model_args, finetuning_args, is_trainable=False)


def build_preference_trainer(
    kind: str,
    model: "PreTrainedModel",
    tokenizer: "PreTrainedTokenizer",
    training_args: "Seq2SeqTrainingArguments",
    finetuning_args: "FinetuningArguments",
    dataset_module: "DatasetModule",
    callbacks: Optional[list["TrainerCallback"]] = None,
    ref_model: Optional["PreTrainedModel"] = None,
    cutoff_len: int = 1024,
    new_adapter: bool = True,
) -> "Trainer":
    """The trainer of ``kind``: dpo (DPO-family losses), simpo, orpo, kto or rm, with ``callbacks``.
    ``new_adapter``: the LoRA adapter was just created (not continued from adapter_name_or_path)."""
    beta, ftx = finetuning_args.pref_beta, finetuning_args.pref_ftx
    train, evaluation = dataset_module.train_dataset, dataset_module.eval_dataset
    common = {"max_length": None, "disable_dropout": True, "remove_unused_columns": False}
    extra: dict[str, Any] = {}
    if kind == "dpo":
        from trl import DPOConfig

        losses = [finetuning_args.pref_loss] + (["sft"] if ftx > 0 else [])
        config = trl_config(DPOConfig, training_args, **common, beta=beta, loss_type=losses,
                            loss_weights=[1.0, ftx] if ftx > 0 else None)
        extra.update(ref_model=ref_model, new_adapter=new_adapter)
    elif kind in ("simpo", "orpo"):
        if kind == "simpo":
            from trl.experimental.cpo import CPOConfig as config_cls

            options = {"loss_type": "simpo", "simpo_gamma": finetuning_args.simpo_gamma, "cpo_alpha": ftx}
        else:
            from trl.experimental.orpo import ORPOConfig as config_cls

            options = {}
        # Rows are already cut to cutoff_len; CPO/ORPO read max_length only in the tokenising skipped here.
        config = trl_config(config_cls, training_args, **{**common, "max_length": cutoff_len}, beta=beta, **options)
        train, evaluation = to_sequence_rows(train), to_sequence_rows(evaluation)
    elif kind == "kto":
        from trl import KTOConfig

        logger.info("stage kto: batches are drawn in order (train_sampling_strategy: sequential), as TRL's KTO "
                    "needs for its KL term.")
        config = trl_config(KTOConfig, training_args, **common, beta=beta,
                            desirable_weight=finetuning_args.kto_chosen_weight,
                            undesirable_weight=finetuning_args.kto_rejected_weight,
                            train_sampling_strategy="sequential")
        extra.update(ref_model=ref_model, new_adapter=new_adapter)
    else:
        from trl import RewardConfig

        config = trl_config(RewardConfig, training_args, max_length=None, disable_dropout=True,
                            remove_unused_columns=False)
    trainer_cls = _trainer_classes()[kind]
    return trainer_cls(model=model, args=config, train_dataset=train, eval_dataset=evaluation,
                       processing_class=tokenizer, callbacks=callbacks, **extra)


def plot_rewards(trainer: "Trainer", training_args: "Seq2SeqTrainingArguments",
                 finetuning_args: "FinetuningArguments") -> None:
    """training_rewards.png beside the loss plot: chosen/rejected/margins and the reward accuracy per step."""
    if finetuning_args.plot_loss and training_args.do_train and trainer.is_world_process_zero():
        from ..extras.plotting import plot_metric_panels

        panels = [RM_KEYS[:1], RM_KEYS[1:]] if finetuning_args.stage == "rm" else [REWARD_KEYS[:3], REWARD_KEYS[3:]]
        plot_metric_panels(training_args.output_dir, "training_rewards.png", panels, title="rewards")
