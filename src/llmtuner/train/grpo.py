"""Stages grpo and rloo: online RL with rewards computed from the data, on TRL's GRPOTrainer / RLOOTrainer.

The prompts are rendered by our templates exactly as SFT renders them (data/preprocess/rl.py), so a run that starts
from an SFT adapter (``adapter_name_or_path``) continues it on the prompts it was trained on; TRL samples
``num_generations`` completions per prompt and the rewards (train/rewards.py) score them against the row's gold
answer. The reference of the KL term (``grpo_beta`` > 0) is the starting adapter (the base with the adapter off for a
new one) for LoRA, a frozen copy for freeze/full. Besides the usual outputs: per-reward means and stds in
trainer_log.jsonl, ``training_rewards.png``, and ``rollouts.jsonl`` (a few completions with their rewards at each
logging step: reward hacking shows there first).
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any, Optional

from ..data.dataset import get_dataset
from ..extras.logging import get_logger
from ..hparams.rl_args import weights_text
from ..model import load_model
from ..model.export import set_stop_ids
from .preference import ReferenceAdapterMixin, trl_config
from .rewards import build_reward_funcs, check_gold
from .trainer import LlmtunerTrainerMixin
from .trainer_utils import load_tokenizer_and_template, print_outputs, train_and_evaluate

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import PreTrainedModel, PreTrainedTokenizer, Seq2SeqTrainingArguments, Trainer, TrainerCallback

    from ..data.dataset import DatasetModule
    from ..hparams import DataArguments, FinetuningArguments, ModelArguments

logger = get_logger(__name__)

ROLLOUTS_FILE = "rollouts.jsonl"
LENGTH_KEYS = ("completions/mean_length", "completions/clipped_ratio")


def run_grpo(
    model_args: "ModelArguments",
    data_args: "DataArguments",
    training_args: "Seq2SeqTrainingArguments",
    finetuning_args: "FinetuningArguments",
    callbacks: Optional[list["TrainerCallback"]] = None,
) -> dict[str, float]:
    """tokenizer -> template -> prompts + gold -> rewards -> model -> TRL trainer -> train/save/evaluate -> plots.

    Raises ConfigError / DatasetError for rewards that cannot run on this data or template, before weights load.
    """
    stage = finetuning_args.stage
    tokenizer, template = load_tokenizer_and_template(model_args, data_args)
    dataset_module = get_dataset(template, tokenizer, data_args, training_args, stage=stage)
    reward_funcs = build_reward_funcs(finetuning_args, template, data_args, dataset_module.train_dataset)
    if dataset_module.train_dataset is not None:
        check_gold(dataset_module.train_dataset, finetuning_args.reward_funcs)
    logger.info(f"stage {stage}: rewards {weights_text(finetuning_args.reward_funcs, finetuning_args.reward_weights)}"
                f"; {finetuning_args.num_generations} completions of at most {finetuning_args.max_completion_length}"
                " tokens per prompt.")
    model = load_model(tokenizer, model_args, finetuning_args, is_trainable=training_args.do_train)
    set_stop_ids(model, tokenizer, template)  # rollouts end where the template ends a turn
    trainer = build_rl_trainer(model, tokenizer, training_args, finetuning_args, dataset_module, reward_funcs,
                               callbacks, new_adapter=not model_args.adapter_name_or_path)
    metrics = train_and_evaluate(trainer, finetuning_args, perplexity=False)
    plot_rl_rewards(trainer, finetuning_args)
    print_outputs(trainer, finetuning_args)
    return metrics


def build_rl_trainer(
    model: "PreTrainedModel",
    tokenizer: "PreTrainedTokenizer",
    training_args: "Seq2SeqTrainingArguments",
    finetuning_args: "FinetuningArguments",
    dataset_module: "DatasetModule",
    reward_funcs: list[Any],
    callbacks: Optional[list["TrainerCallback"]] = None,
    new_adapter: bool = True,
) -> "Trainer":
    """TRL's GRPOTrainer (stage grpo) or RLOOTrainer (rloo) behind our prompts, rewards and trainer mixin."""
    options: dict[str, Any] = {
        "num_generations": finetuning_args.num_generations,
        "max_completion_length": finetuning_args.max_completion_length,
        "temperature": finetuning_args.rollout_temperature,
        "top_p": finetuning_args.rollout_top_p,
        "beta": finetuning_args.grpo_beta,
        "epsilon": finetuning_args.grpo_epsilon,
        "mask_truncated_completions": finetuning_args.mask_truncated_completions,
        "reward_weights": finetuning_args.reward_weights,
        "use_vllm": finetuning_args.use_vllm,
        "disable_dropout": True,
        "remove_unused_columns": False,
        "log_completions": False,  # rollouts.jsonl instead: TRL's table needs rich/wandb and writes parquet
    }
    if finetuning_args.use_vllm:
        options["vllm_mode"] = "colocate"
    if finetuning_args.stage == "grpo":
        from trl import GRPOConfig as config_cls

        options.update(loss_type=finetuning_args.grpo_loss_type, scale_rewards=finetuning_args.scale_rewards)
    else:
        from trl import RLOOConfig as config_cls
    config = trl_config(config_cls, training_args, **options)
    tokenizer.padding_side = "left"  # TRL pads prompts on the left for generation
    prompt_ids = _prompt_ids(dataset_module.train_dataset, dataset_module.eval_dataset)
    trainer_cls = _trainer_classes()[finetuning_args.stage]
    return trainer_cls(model=model, reward_funcs=reward_funcs, args=config,
                       train_dataset=dataset_module.train_dataset, eval_dataset=dataset_module.eval_dataset,
                       processing_class=tokenizer, callbacks=callbacks, new_adapter=new_adapter,
                       prompt_ids=prompt_ids, rollout_samples=finetuning_args.rollout_log_samples)


def _prompt_ids(*datasets: Optional["Dataset"]) -> dict[str, list[int]]:
    """Each prompt's text -> our template's ids of it (TRL hands the trainer prompts as text)."""
    return {text: ids for dataset in datasets if dataset is not None
            for text, ids in zip(dataset["prompt"], dataset["prompt_ids"])}


def _trainer_classes() -> dict[str, type]:
    """Built on first use: importing TRL takes seconds, and most runs never need it."""
    from transformers import TrainerCallback
    from trl import GRPOTrainer, RLOOTrainer

    from .callbacks import keep_log_until

    class _RolloutLogCallback(TrainerCallback):
        """A resumed run keeps rollouts.jsonl up to its checkpoint; a fresh one starts it anew."""

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            path = os.path.join(args.output_dir, ROLLOUTS_FILE)
            if not (state.is_world_process_zero and os.path.exists(path)):
                return
            if state.global_step == 0:
                os.remove(path)
            else:
                keep_log_until(path, state.global_step, "step")

    class _OurPromptsMixin:
        """Prompts tokenised once, by our template (never re-rendered by the tokenizer's Jinja); rollouts logged."""

        def __init__(self, *args: Any, prompt_ids: dict[str, list[int]], rollout_samples: int = 0,
                     **kwargs: Any) -> None:
            self._our_prompt_ids = prompt_ids
            self._rollout_samples = rollout_samples
            self._rollouts_logged_at = -1  # the end-of-training summary is logged at the last step again
            super().__init__(*args, **kwargs)
            self.add_callback(_RolloutLogCallback())

        def _tokenize_prompts(self, prompts: list[str]) -> tuple[list[list[int]], None, dict]:
            return [self._our_prompt_ids[prompt] for prompt in prompts], None, {}

        def log(self, logs: dict[str, float], start_time: Optional[float] = None) -> None:
            training = self.model.training
            super().log(logs, start_time)
            step = self.state.global_step
            if (training and self._rollout_samples and self.accelerator.is_main_process and self._logs["prompt"]
                    and step != self._rollouts_logged_at):
                self._rollouts_logged_at = step
                self._write_rollouts()

        def _write_rollouts(self) -> None:
            count = min(self._rollout_samples, len(self._logs["prompt"]))
            names = list(self._logs["rewards"])
            weights = self.reward_weights.tolist()
            rows = []
            for index in range(len(self._logs["prompt"]) - count, len(self._logs["prompt"])):
                rewards = {name: self._logs["rewards"][name][index] for name in names}
                total = sum(w * v for w, v in zip(weights, rewards.values()) if v == v)  # NaN: reward gave None
                rows.append({"step": self.state.global_step, "prompt": self._logs["prompt"][index],
                             "completion": self._logs["completion"][index],
                             "rewards": {key: (None if v != v else v) for key, v in rewards.items()},
                             "reward": total, "advantage": self._logs["advantages"][index]})
            with open(os.path.join(self.args.output_dir, ROLLOUTS_FILE), "a", encoding="utf-8") as f:
                f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)

    class _GRPOTrainer(LlmtunerTrainerMixin, ReferenceAdapterMixin, _OurPromptsMixin, GRPOTrainer):
        pass

    class _RLOOTrainer(LlmtunerTrainerMixin, ReferenceAdapterMixin, _OurPromptsMixin, RLOOTrainer):
        pass

    return {"grpo": _GRPOTrainer, "rloo": _RLOOTrainer}


def reward_keys(reward_names: list[str]) -> list[str]:
    """The log keys of each reward's mean (TRL's ``rewards/<name>/mean``) and of the weighted total."""
    return [f"rewards/{name}/mean" for name in reward_names] + ["reward"]


def plot_rl_rewards(trainer: "Trainer", finetuning_args: "FinetuningArguments") -> None:
    """training_rewards.png: one line per reward and the total; completion length and clipped share beside it."""
    if finetuning_args.plot_loss and trainer.args.do_train and trainer.is_world_process_zero():
        from ..extras.plotting import plot_metric_panels

        panels = [reward_keys(finetuning_args.reward_funcs), LENGTH_KEYS[:1], LENGTH_KEYS[1:]]
        plot_metric_panels(trainer.args.output_dir, "training_rewards.png", panels, title="rewards")
