"""Rules across arguments of the preference stages (dpo, kto, rm), run by the parser's ``_check_args`` before
anything loads. Kept apart so that parser.py only calls them."""

from __future__ import annotations

from typing import Any

from ..extras.errors import ConfigError
from .finetuning_args import PREFERENCE_STAGES

_NO_REFERENCE_LOSSES = ("orpo", "simpo")  # reference-free objectives: they never load a reference model


def check_preference_args(settings: dict[str, Any]) -> None:
    """Raise ConfigError for a combination a preference run cannot honour; silent for the other stages unless they
    set a preference-only option."""
    stage, loss = settings["stage"], settings["pref_loss"]
    if stage not in PREFERENCE_STAGES:
        if settings.get("ref_model") or loss != "sigmoid":
            set_key = "ref_model" if settings.get("ref_model") else f"pref_loss={loss}"
            raise ConfigError(f"{set_key} is an option of stage dpo/kto, not stage {stage}.",
                              f"Remove {set_key.split('=')[0]}, or set stage: dpo.")
        return
    if not settings["template"]:
        raise ConfigError(
            f"stage {stage} needs a chat template, but template is not set.",
            "Add template: <name> (qwen, qwen3, llama3, chatml, ...) or template: auto for the tokenizer's own; "
            "use the template of the SFT run the preference run continues.",
        )
    if loss != "sigmoid" and stage != "dpo":
        raise ConfigError(f"pref_loss={loss} is a loss of stage dpo; stage {stage} has its own objective.",
                          "Remove pref_loss, or set stage: dpo (orpo and simpo are pref_loss values of stage dpo).")
    if settings.get("ref_model") and (stage == "rm" or loss in _NO_REFERENCE_LOSSES):
        what = "stage rm" if stage == "rm" else f"pref_loss={loss}"
        raise ConfigError(f"ref_model is set, but {what} uses no reference model.",
                          "Remove ref_model (and ref_model_adapters).")
    if stage == "kto" and settings["per_device_train_batch_size"] < 2:
        raise ConfigError(
            f"stage kto needs per_device_train_batch_size of at least 2, not {settings['per_device_train_batch_size']}:"
            " its KL term pairs each prompt with another row's response in the same batch.",
            "Set per_device_train_batch_size: 2 or more.",
        )
    if stage == "rm" and settings.get("adapter_name_or_path"):
        raise ConfigError(
            "stage rm starts a new scoring head from a model, not from a language-model adapter "
            f"(adapter_name_or_path={settings['adapter_name_or_path']}).",
            "Merge the SFT adapter first (llmtuner export), then set model_name_or_path to the merged folder.",
        )
    if settings.get("do_predict"):
        raise ConfigError(f"do_predict is not available for stage {stage}.",
                          "Remove do_predict; score responses of a reward model with `llmtuner predict`, or generate "
                          "from a dpo/kto adapter with `llmtuner chat`.")
