"""Arguments of the online RL stages grpo and rloo (docs/rl.md): TRL's GRPO/RLOO settings under our names, and the
rewards, declared by name (train/rewards.py computes them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union

from ..extras.errors import ConfigError
from ..extras.suggest import closest_names
from .validation import check_choice, check_range, split_list

RL_STAGES = ("grpo", "rloo")
# The built-in rewards (train/rewards.py); a user's own function comes in through reward_module.
REWARD_NAMES = ("score", "label", "math", "format", "json")
USER_REWARD = "custom"  # the name reward_module's function goes by in reward_funcs and in the logs
# TRL GRPOConfig's loss types and reward scalings (rloo has its own objective: its loss type is fixed).
GRPO_LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo")
SCALE_REWARDS = ("group", "batch", "none")


@dataclass
class RLArguments:
    """grpo / rloo settings. FinetuningArguments inherits them, so they are ordinary flags of a run."""

    reward_funcs: Optional[str] = field(
        default=None,
        metadata={"help": "grpo/rloo: comma-separated rewards: score (distance to the gold score), label (exact "
                  "label), math (GSM8K final number), format (thinking markers or format_regex), json (JSON with "
                  "the entry's json_keys), custom (reward_module's function)."},
    )
    reward_weights: Optional[str] = field(
        default=None,
        metadata={"help": "grpo/rloo: comma-separated weight of each reward, in the order of reward_funcs "
                  "(default: 1 each); the total reward is the weighted sum."},
    )
    reward_module: Optional[str] = field(
        default=None,
        metadata={"help": "grpo/rloo: your own reward, path/to/file.py:function, called as function(prompts, "
                  "completions, gold, **columns) -> one float per completion; runs your code (off by default, "
                  "like trust_remote_code). Named 'custom' in reward_funcs (added there when left out)."},
    )
    format_regex: Optional[str] = field(
        default=None,
        metadata={"help": "grpo/rloo: the format reward's pattern (Python regex, matched against the whole answer); "
                  "default: the template's thinking markers, <think>...</think> then a non-empty answer."},
    )
    score_within_k: Optional[float] = field(
        default=None,
        metadata={"help": "grpo/rloo: the score reward is 1 within this distance of the gold score, else 0 "
                  "(default: 1 at the gold score, falling linearly to 0 at the score range's width)."},
    )
    num_generations: int = field(
        default=4, metadata={"help": "grpo/rloo: completions sampled per prompt (a group); it must divide the "
                             "generation batch, per_device_train_batch_size x gradient_accumulation_steps x GPUs."}
    )
    max_completion_length: int = field(
        default=256, metadata={"help": "grpo/rloo: most tokens generated per completion."}
    )
    rollout_temperature: float = field(
        default=1.0, metadata={"help": "grpo/rloo: sampling temperature of the rollouts (TRL's temperature)."}
    )
    rollout_top_p: float = field(
        default=1.0, metadata={"help": "grpo/rloo: nucleus sampling mass of the rollouts (TRL's top_p)."}
    )
    grpo_beta: float = field(
        default=0.0,
        metadata={"help": "grpo/rloo: KL coefficient against the reference (TRL's beta; 0: no reference is "
                  "scored). LoRA: the reference is the starting adapter (the base for a new one); freeze/full: a "
                  "frozen copy."},
    )
    grpo_epsilon: float = field(default=0.2, metadata={"help": "grpo/rloo: clipping range of the policy ratio."})
    grpo_loss_type: str = field(
        default="dapo",
        metadata={"help": "grpo: TRL's loss aggregation: dapo (default), grpo, dr_grpo, bnpo, cispo, sapo, luspo, "
                  "vespo."},
    )
    scale_rewards: str = field(
        default="group",
        metadata={"help": "grpo: divide advantages by the reward std of the group (group), the batch (batch) or "
                  "not at all (none, as Dr. GRPO recommends)."},
    )
    mask_truncated_completions: bool = field(
        default=False,
        metadata={"help": "grpo/rloo: leave completions cut at max_completion_length out of the loss (DAPO)."},
    )
    use_vllm: bool = field(
        default=False, metadata={"help": "grpo/rloo: generate rollouts with vLLM (colocated) instead of transformers."}
    )
    rollout_log_samples: int = field(
        default=4,
        metadata={"help": "grpo/rloo: completions (with their prompt and rewards) written to rollouts.jsonl at each "
                  "logging step; 0: none."},
    )

    def check_rl_args(self, stage: str) -> None:
        """Each value alone (called from FinetuningArguments.__post_init__, which knows the stage)."""
        self.reward_funcs = split_list(self.reward_funcs)
        weights = split_list(self.reward_weights)
        if stage not in RL_STAGES:
            if self.reward_funcs or self.reward_module or self.reward_weights:
                key = "reward_funcs" if self.reward_funcs else "reward_module" if self.reward_module else \
                    "reward_weights"
                raise ConfigError(f"{key} is an option of stage grpo/rloo, not stage {stage}.",
                                  f"Remove {key}, or set stage: grpo.")
            self.reward_weights = None
            return
        if self.reward_module and USER_REWARD not in (self.reward_funcs or []):
            self.reward_funcs = [*(self.reward_funcs or []), USER_REWARD]
        if not self.reward_funcs:
            raise ConfigError(f"stage {stage} needs rewards, but reward_funcs is not set.",
                              "Set reward_funcs, e.g. reward_funcs: score,format (see docs/rl.md), or reward_module: "
                              "path/to/file.py:function for your own.")
        for name in self.reward_funcs:
            if name not in (*REWARD_NAMES, USER_REWARD):
                close = closest_names(name, (*REWARD_NAMES, USER_REWARD), n=1, cutoff=0.5)
                raise ConfigError(f"reward_funcs: {name!r} is not a reward" + (f" (did you mean {close[0]!r}?)"
                                                                                 if close else "") + ".",
                                  f"Use names from: {', '.join(REWARD_NAMES)}; or reward_module: file.py:function "
                                  "for your own reward.")
        if len(set(self.reward_funcs)) != len(self.reward_funcs):
            raise ConfigError(f"reward_funcs names a reward twice: {','.join(self.reward_funcs)}.",
                              "Name each reward once; give it more weight with reward_weights instead.")
        if USER_REWARD in self.reward_funcs and not self.reward_module:
            raise ConfigError("reward_funcs names custom, but reward_module is not set.",
                              "Set reward_module: path/to/file.py:function, or remove custom from reward_funcs.")
        self.reward_weights = _parse_weights(weights, self.reward_funcs)
        check_range("num_generations", self.num_generations, 2)
        check_range("max_completion_length", self.max_completion_length, 1)
        check_range("rollout_temperature", self.rollout_temperature, 0, low_open=True)
        check_range("rollout_top_p", self.rollout_top_p, 0, 1, low_open=True)
        check_range("grpo_beta", self.grpo_beta, 0)
        check_range("grpo_epsilon", self.grpo_epsilon, 0, low_open=True)
        check_range("score_within_k", self.score_within_k, 0)
        check_range("rollout_log_samples", self.rollout_log_samples, 0)
        check_choice("grpo_loss_type", self.grpo_loss_type, GRPO_LOSS_TYPES)
        check_choice("scale_rewards", self.scale_rewards, SCALE_REWARDS)
        if self.format_regex is not None:
            import re

            try:
                re.compile(self.format_regex)
            except re.error as exc:
                raise ConfigError(f"format_regex={self.format_regex!r} is not a valid regular expression: {exc}.",
                                  "Write a Python regular expression, e.g. '评分：\\d+/9' .") from exc


def _parse_weights(weights: Optional[list[str]], names: list[str]) -> list[float]:
    if weights is None:
        return [1.0] * len(names)
    try:
        values = [float(weight) for weight in weights]
    except ValueError:
        values = []
    if len(values) != len(names) or any(value < 0 for value in values) or not any(values):
        raise ConfigError(f"reward_weights={','.join(weights)} does not fit reward_funcs={','.join(names)}.",
                          "Give one non-negative weight per reward, in the order of reward_funcs (not all 0), "
                          "e.g. reward_weights: 1.0,0.2")
    return values


def generation_batch_problem(stage: str, num_generations: int, batch_size: int, accumulation: int,
                             processes: int) -> Optional[str]:
    """Why TRL would refuse the generation batch (prompts x generations per optimiser step), or None."""
    total = batch_size * accumulation * processes
    if total % num_generations:
        return (f"stage {stage}: num_generations={num_generations} does not divide the generation batch "
                f"per_device_train_batch_size x gradient_accumulation_steps x processes = {batch_size} x "
                f"{accumulation} x {processes} = {total}")
    return None


def weights_text(names: list[str], weights: Union[list[float], None]) -> str:
    """``score x1, format x0.2``: the rewards as a log line shows them."""
    return ", ".join(f"{name} x{weight:g}" for name, weight in zip(names, weights or [1.0] * len(names)))
