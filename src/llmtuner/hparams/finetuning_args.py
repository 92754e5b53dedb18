"""Arguments that say which stage runs and which parameters it trains."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional, Sequence, Union

from ..extras.errors import ConfigError
from .rl_args import RL_STAGES, RLArguments
from .validation import check_choice, check_range, split_list
from .watch_args import parse_watch_block

STAGES = ("pt", "sft", "cls", "dpo", "kto", "rm", *RL_STAGES)
PREFERENCE_STAGES = ("dpo", "kto", "rm")
# pref_loss values of stage dpo: TRL DPOTrainer's loss types, plus orpo (TRL's ORPOTrainer) and simpo (CPOTrainer),
# which LLaMA-Factory users reach through pref_loss too. kto has its own trainer (stage kto).
DPO_LOSSES = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
              "aot_unpaired", "apo_zero", "apo_down", "discopop", "sigmoid_norm")
PREF_LOSSES = (*DPO_LOSSES, "orpo", "simpo")
FINETUNING_TYPES = ("lora", "freeze", "full")


@dataclass
class FinetuningArguments(RLArguments):
    """Training stage and adapter settings (LoRA, freeze, full); the grpo/rloo settings come from RLArguments."""

    stage: Literal["pt", "sft", "cls", "dpo", "kto", "rm", "grpo", "rloo"] = field(
        default="sft",
        metadata={"help": "pt (continued pretraining), sft, cls (sequence classification), dpo (preference pairs; "
                  "pref_loss picks DPO/IPO/ORPO/SimPO ...), kto (responses tagged good/bad), rm (reward model), "
                  "grpo or rloo (online RL with rewards, docs/rl.md)."},
    )
    finetuning_type: Literal["lora", "freeze", "full"] = field(
        default="lora", metadata={"help": "lora, freeze (train the last layers only) or full."}
    )
    lora_rank: int = field(default=8, metadata={"help": "LoRA rank r."})
    lora_alpha: Optional[int] = field(default=None, metadata={"help": "LoRA alpha (default: 2 * lora_rank)."})
    lora_dropout: float = field(default=0.0, metadata={"help": "Dropout on the LoRA branch."})
    lora_target: str = field(
        default="all",
        metadata={"help": "Comma-separated module names for LoRA, or 'all' = every linear layer except the output head."},
    )
    additional_target: Optional[str] = field(
        default=None, metadata={"help": "Comma-separated modules trained fully and saved with the adapter (e.g. embed_tokens)."}
    )
    use_rslora: bool = field(default=False, metadata={"help": "Rank-stabilised LoRA scaling (alpha / sqrt(r))."})
    use_dora: bool = field(default=False, metadata={"help": "Weight-decomposed LoRA (DoRA)."})
    freeze_trainable_layers: int = field(
        default=2,
        metadata={"help": "freeze: train the last N decoder layers (negative: the first |N| layers)."},
    )
    freeze_trainable_modules: str = field(
        default="all",
        metadata={"help": "freeze: comma-separated module names inside the trainable layers, or 'all'."},
    )
    freeze_extra_modules: Optional[str] = field(
        default=None, metadata={"help": "freeze: extra non-layer modules to train, e.g. embed_tokens,lm_head."}
    )
    chunked_loss: Optional[bool] = field(
        default=None,
        metadata={"help": "pt/sft: cross-entropy at trained positions only, a chunk of logits at a time, gradients "
                  "formed in the same pass (no batch x length x vocabulary tensor; train/chunked_loss.py). Unset: "
                  "on for CPU runs where it can run (most of the peak memory of a large-vocabulary model), off on "
                  "GPUs; true: asked for (a warning when it cannot run); false: the model's own loss."},
    )
    plot_loss: bool = field(
        default=False,
        metadata={"help": "Write training_loss.png (and training_eval_loss.png when an eval split is logged; cls: "
                  "training_eval_accuracy.png and training_eval_macro_f1.png)."},
    )
    malloc_tuning: bool = field(
        default=True,
        metadata={"help": "CPU runs: keep large freed tensors in the malloc heap instead of returning them to the "
                  "kernel (no page faults every step; extras/cpu_runtime.py). LLMTUNER_MALLOC_TUNING=0 sets false."},
    )
    # transformers 5 dropped TrainingArguments.overwrite_output_dir; the parser's output_dir check still needs it.
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Allow an output_dir that already holds files (its run is overwritten)."}
    )
    class_weights: Optional[str] = field(
        default=None,
        metadata={"help": "cls: weight the loss per label: 'balanced' (inverse label frequency in the training "
                  "data) or comma-separated weights in label id order."},
    )

    # Preference stages (docs/preference.md); LLaMA-Factory's names, so its configs run unchanged.
    pref_beta: float = field(
        default=0.1, metadata={"help": "dpo/kto: beta, how far the policy may move from the reference (orpo: the "
                               "weight of the odds-ratio term; simpo: the reward scale)."}
    )
    pref_loss: str = field(
        default="sigmoid",
        metadata={"help": "dpo: sigmoid (DPO), hinge, ipo, orpo, simpo, or another TRL DPO loss type "
                  "(exo_pair, nca_pair, robust, bco_pair, sppo_hard, apo_zero, apo_down, discopop, ...)."},
    )
    pref_ftx: float = field(
        default=0.0, metadata={"help": "dpo/simpo: weight of an added SFT loss on the chosen responses (0: none)."}
    )
    simpo_gamma: float = field(default=0.5, metadata={"help": "simpo: target reward margin gamma."})
    kto_chosen_weight: float = field(default=1.0, metadata={"help": "kto: weight of the desirable responses' loss."})
    kto_rejected_weight: float = field(
        default=1.0, metadata={"help": "kto: weight of the undesirable responses' loss."}
    )
    ref_model: Optional[str] = field(
        default=None,
        metadata={"help": "dpo/kto: local folder of the reference model (default: LoRA runs use the base with the "
                  "adapter's starting weights, no second copy; freeze/full runs a frozen copy of the model)."},
    )
    ref_model_adapters: Optional[str] = field(
        default=None, metadata={"help": "dpo/kto: comma-separated LoRA adapters applied (merged) to ref_model."}
    )
    forgetting_watch: Optional[Union[dict, str]] = field(
        default=None,
        metadata={"help": "pt/sft: a block of benchmark keys (task, task_dir, subjects, n_shot, max_samples, seed) "
                  "and a forgetting budget; general ability is scored while training (docs/forgetting-aware.md)."},
    )

    def __post_init__(self) -> None:
        check_choice("stage", self.stage, STAGES)
        check_choice("finetuning_type", self.finetuning_type, FINETUNING_TYPES)
        check_range("lora_rank", self.lora_rank, 1)
        if self.lora_alpha is None:
            self.lora_alpha = self.lora_rank * 2
        check_range("lora_alpha", self.lora_alpha, 0, low_open=True)
        check_range("lora_dropout", self.lora_dropout, 0, 1)
        self.lora_target = split_list(self.lora_target) or ["all"]
        self.additional_target = split_list(self.additional_target)
        self.freeze_trainable_modules = split_list(self.freeze_trainable_modules) or ["all"]
        self.freeze_extra_modules = split_list(self.freeze_extra_modules)
        self.class_weights = parse_class_weights(self.class_weights)
        check_choice("pref_loss", self.pref_loss, PREF_LOSSES)
        check_range("pref_beta", self.pref_beta, 0, low_open=True)
        check_range("pref_ftx", self.pref_ftx, 0)
        check_range("simpo_gamma", self.simpo_gamma, 0)
        check_range("kto_chosen_weight", self.kto_chosen_weight, 0, low_open=True)
        check_range("kto_rejected_weight", self.kto_rejected_weight, 0, low_open=True)
        self.ref_model_adapters = split_list(self.ref_model_adapters)
        if self.ref_model_adapters and not self.ref_model:
            raise ConfigError(
                "ref_model_adapters is set but ref_model is not.",
                "Set ref_model: <base model folder the adapters belong to>, or remove ref_model_adapters.",
            )
        if self.chunked_loss and self.stage not in ("pt", "sft"):
            raise ConfigError(
                f"chunked_loss is for the language-model stages pt and sft, not stage {self.stage} (TRL's preference "
                "trainers compute their own log-probabilities; cls has a classification head).",
                "Remove chunked_loss, or set stage: sft / pt.",
            )
        self.check_rl_args(self.stage)
        self.forgetting_watch = parse_watch_block(self.forgetting_watch)
        if self.forgetting_watch is not None and self.stage not in ("pt", "sft"):
            raise ConfigError("forgetting_watch is for the language-model stages pt and sft.",
                              "Remove the forgetting_watch block, or set stage: sft / pt.")


def parse_class_weights(value: Union[str, Sequence[Union[str, float]], None]) -> Union[str, list[float], None]:
    """``balanced`` stays a word; ``"1,3.5"`` or ``[1, 3.5]`` becomes positive floats; None stays None."""
    items = split_list(value if isinstance(value, str) or value is None else [str(item) for item in value])
    if items is None or items == ["balanced"]:
        return None if items is None else "balanced"
    try:
        weights = [float(item) for item in items]
    except ValueError:
        weights = []
    if not weights or any(not weight > 0 for weight in weights):
        raise ConfigError(
            f"class_weights={value!r} is neither 'balanced' nor a list of positive numbers.",
            "Write class_weights: balanced, or one positive weight per label in label id order, e.g. 1.0,2.5",
        )
    return weights
