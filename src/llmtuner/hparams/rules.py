"""Every rule that involves several arguments or the machine, in one place, run before anything loads.

``check_args`` sees every setting of a training run (the user's value or the default) and raises a ConfigError
naming both settings of a combination that cannot work; it never rewrites what the user set. The defaults that
differ from the dataclasses' (``with_run_defaults``) fill in only keys the user left out.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..extras.resume_points import resolve_resume_checkpoint
from ..extras.env import GENERATION_METRIC_PACKAGES, has_cuda, require_packages
from ..extras.errors import ConfigError
from .finetuning_args import PREFERENCE_STAGES
from .rl_args import RL_STAGES, generation_batch_problem


def with_run_defaults(values: dict[str, Any]) -> dict[str, Any]:
    """Defaults that differ from the dataclasses' ones; keys the user set are never touched."""
    defaults: dict[str, Any] = {
        "report_to": "none",  # no experiment tracker unless asked: they log in or reach the network
        # Our collator needs our own columns (labels, ...); Trainer would drop those the model's forward() lacks.
        "remove_unused_columns": False,
    }
    if not {"do_train", "do_eval", "do_predict"} & set(values):
        defaults["do_train"] = True
    if "do_eval" not in values and (values.get("val_size") or values.get("eval_dataset")):
        defaults["do_eval"] = True  # a validation set was asked for, so its loss is reported after training
    if values.get("group_by_length"):  # the transformers 4 / LLaMA-Factory name of the sampler transformers 5 renamed
        defaults["train_sampling_strategy"] = "group_by_length"
    return {**defaults, **values}


def with_machine_defaults(values: dict[str, Any]) -> dict[str, Any]:
    """Defaults that depend on this machine (separate because finding out imports torch)."""
    if not has_cuda():
        # Without CUDA, TrainingArguments only sets up a CPU (gloo) process group when use_cpu is set; otherwise
        # DeepSpeed / torchrun CPU runs take the DeepSpeed/NCCL path, which needs a GPU. It also lets bf16 run.
        return values if "use_cpu" in values else {"use_cpu": True, **values}
    if not values.get("use_cpu") and not {"activation_checkpointing", "gradient_checkpointing"} & set(values):
        # GPU training keeps one layer's activations instead of all of them, as LLaMA-Factory does by default: a
        # 7B model at 2048 tokens needs tens of GB for activations without it, for about a third more compute.
        # CPU runs (small models, plenty of RAM) keep the faster path. Recorded in run_args.yaml either way.
        # (gradient_checkpointing is transformers 5's deprecated alias of activation_checkpointing.)
        return {"activation_checkpointing": True, **values}
    return values


# transformers' TrainingArguments accept these out of range and fail (or do nothing) later: -1 epochs trains zero
# steps, a negative learning rate climbs the loss. (name, lowest value; max_steps -1 means "use the epochs").
TRAINING_RANGES = (("learning_rate", 0), ("num_train_epochs", 0), ("max_steps", -1), ("per_device_train_batch_size", 1),
                   ("per_device_eval_batch_size", 1), ("gradient_accumulation_steps", 1))


def check_training_ranges(settings: dict[str, Any]) -> None:
    """The Trainer's numbers a user sets most often, in range (each field checks itself in the other dataclasses)."""
    for name, low in TRAINING_RANGES:
        value = settings.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value < low:
            raise ConfigError(f"{name}={value} is out of range.", f"Set {name} to a value >= {low}.")

def check_args(settings: dict[str, Any]) -> None:
    """Rules across arguments and the machine, on every setting (user value or default), before any is used."""
    check_model_given(settings)
    if not settings["output_dir"]:
        raise ConfigError(
            "output_dir is not set.", "Add output_dir: saves/<model>/<method>/<stage> (where results are written)."
        )
    if not (settings["do_train"] or settings["do_eval"] or settings["do_predict"]):
        raise ConfigError(
            "do_train, do_eval and do_predict are all false: there is nothing to run.", "Set do_train: true."
        )
    check_training_ranges(settings)
    if settings["do_train"] and not settings["dataset"]:
        raise ConfigError("Training needs a dataset, but dataset is not set.",
                          "Add dataset: <name from dataset_info.json> (comma-separate several).")
    if settings["stage"] == "sft" and not settings["template"]:
        raise ConfigError(
            "stage sft needs a chat template, but template is not set.",
            "Add template: <name> (qwen, qwen3, llama3, chatml, ...) or template: auto for the tokenizer's own.",
        )
    if settings["quantization_bit"] is not None and settings["finetuning_type"] != "lora":
        raise ConfigError(
            f"quantization_bit={settings['quantization_bit']} needs finetuning_type lora (QLoRA), "
            f"not finetuning_type={settings['finetuning_type']}.",
            "Set finetuning_type: lora, or remove quantization_bit to train unquantized weights.",
        )
    if settings["predict_with_generate"] and settings["stage"] != "sft":
        raise ConfigError(f"predict_with_generate needs stage sft, not stage={settings['stage']}.",
                          "Remove predict_with_generate, or set stage: sft.")
    if settings["adapter_name_or_path"] and settings["finetuning_type"] != "lora":
        raise ConfigError(
            f"adapter_name_or_path is set but finetuning_type={settings['finetuning_type']}; adapters are LoRA "
            "weights.",
            "Use finetuning_type: lora, or merge the adapter into a full model first with `llmtuner export`.",
        )
    if settings["stage"] == "cls":
        _check_cls(settings)
    if settings["stage"] == "rm":  # a reward model is a one-label sequence classifier
        check_classifier_args(settings)
    if settings["do_predict"] and settings["stage"] == "sft":
        _check_predict(settings)
    if settings["remove_unused_columns"]:
        raise ConfigError("remove_unused_columns=True is not supported.",
                          "Remove it: llmtuner feeds its own columns (input_ids, labels, ...) to its collator.")
    check_preference_args(settings)
    check_rl_args(settings)
    _check_output_dir(settings)
    check_dependencies(settings)
    _check_batching(settings)


def check_model_given(settings: dict[str, Any]) -> None:
    if not settings["model_name_or_path"]:
        raise ConfigError("model_name_or_path is not set.",
                          "Add model_name_or_path: <local folder with config.json, weights and tokenizer>.")


def _check_output_dir(settings: dict[str, Any]) -> None:
    """Refuse to mix a new run into a folder that holds files, unless the user says to overwrite or resume."""
    resume = settings["resume_from_checkpoint"]
    output_dir = Path(settings["output_dir"])
    if output_dir.exists() and not output_dir.is_dir():
        raise ConfigError(f"output_dir={output_dir} is a file, not a folder.", "Choose a folder path for output_dir.")
    # A missing or half-written checkpoint, or `auto` with nothing to continue, fails here, before any loading.
    checkpoint = resolve_resume_checkpoint(resume, output_dir, overwrite=settings["overwrite_output_dir"])
    # Continuing a run in its own folder is fine; continuing one from elsewhere into a folder that holds another
    # run's files would overwrite them.
    continues_here = checkpoint is not None and Path(checkpoint).resolve().parent == output_dir.resolve()
    if not output_dir.is_dir() or settings["overwrite_output_dir"] or continues_here:
        return
    entries = sorted(entry.name for entry in output_dir.iterdir())
    if entries:
        shown = ", ".join(entries[:4]) + (", ..." if len(entries) > 4 else "")
        raise ConfigError(
            f"output_dir={output_dir} already holds files ({shown}).",
            "Choose a new output_dir, set overwrite_output_dir: true to replace that run, "
            "or set resume_from_checkpoint: auto (or a checkpoint folder) to continue it.",
        )


def check_dependencies(settings: dict[str, Any]) -> None:
    """Options that need an optional package: fail now, not when the model loads or training starts; every
    missing package is named at once (``require_packages``)."""
    needs = []
    if settings.get("attn_implementation") == "flash_attention_2":
        needs.append(("attn_implementation: flash_attention_2", (("flash_attn", "flash-attn"),)))
    if settings.get("use_vllm") and settings.get("stage") in RL_STAGES:
        needs.append(("use_vllm: true (rollouts on vLLM)", (("vllm", "vllm"),)))
    if settings.get("quantization_bit") is not None:
        needs.append((f"quantization_bit: {settings['quantization_bit']}", (("bitsandbytes", "bitsandbytes"),)))
    deepspeed = settings.get("deepspeed")
    if deepspeed:
        if isinstance(deepspeed, str) and not deepspeed.lstrip().startswith("{") and not os.path.isfile(deepspeed):
            raise ConfigError(f"deepspeed={deepspeed} does not exist.",
                              "Point deepspeed at a DeepSpeed JSON config, e.g. deepspeed: deepspeed_config.json.")
        needs.append(("the deepspeed option", (("deepspeed", "deepspeed"),)))
    reporters = settings.get("report_to") or []
    reporters = [reporters] if isinstance(reporters, str) else reporters
    needs += [(f"report_to: {tracker}", ((tracker, tracker),)) for tracker in ("wandb", "tensorboard")
              if tracker in reporters]
    require_packages(needs)


def _check_batching(settings: dict[str, Any]) -> None:
    """``packing`` is sft's; ``group_by_length`` must not contradict an explicit ``train_sampling_strategy``."""
    if settings.get("packing") and settings["stage"] != "sft":
        raise ConfigError(
            f"packing=True needs stage sft, not stage={settings['stage']}.",
            "Remove packing: pt already joins texts into cutoff_len blocks, and cls trains on single texts.",
        )
    strategy = settings.get("train_sampling_strategy", "group_by_length")
    if settings.get("group_by_length") and strategy != "group_by_length":
        raise ConfigError(
            f"group_by_length=True contradicts train_sampling_strategy={strategy}.",
            "Keep one of them: group_by_length: true is the same as train_sampling_strategy: group_by_length.",
        )


def check_classifier_args(settings: dict[str, Any]) -> None:
    """What a sequence classifier (training it, or labelling texts with it) cannot do yet."""
    if settings["quantization_bit"] is not None:
        raise ConfigError(
            f"quantization_bit={settings['quantization_bit']} is not supported by stage cls yet.",
            "Remove quantization_bit: classifiers are small enough to train in bf16/fp32 with LoRA.",
        )


def _check_cls(settings: dict[str, Any]) -> None:
    """Stage cls: the classifier rules, and no tokenized_path."""
    check_classifier_args(settings)
    if settings.get("tokenized_path"):
        raise ConfigError(
            "tokenized_path is not supported by stage cls.",
            "Remove tokenized_path: classification rows are short and tokenise in seconds on every run.",
        )


def _check_predict(settings: dict[str, Any]) -> None:
    """do_predict in stage sft generates the replies and scores them with ROUGE/BLEU."""
    if not settings["predict_with_generate"]:
        raise ConfigError(
            "do_predict in stage sft generates the replies, so it needs predict_with_generate: true.",
            "Add predict_with_generate: true (and max_new_tokens to bound the replies), or remove do_predict.",
        )
    if not (settings["eval_dataset"] or settings["dataset"]):
        raise ConfigError("do_predict needs rows to predict, but neither eval_dataset nor dataset is set.",
                          "Set eval_dataset: <name from dataset_info.json>.")
    require_packages([("do_predict (ROUGE/BLEU)", GENERATION_METRIC_PACKAGES)])


def check_series_args(settings: dict[str, Any], what: str) -> None:
    """Rules for a run that is one of a series (a curriculum stage, a sweep run) rather than a run of its own."""
    if settings.get("tokenized_path"):
        # The saved rows are one run's data: a first run would stop the series after saving them, and a rerun
        # would train every stage/ratio on the first one's rows.
        raise ConfigError(
            f"tokenized_path={settings['tokenized_path']} cannot be used by a {what}: each of its runs trains on "
            "other rows, and tokenized_path holds the rows of one run.",
            f"Remove tokenized_path from the {what} config (the datasets cache already keeps each run's "
            "tokenised rows).",
        )


# ---- preference stages (dpo, kto, rm) ----

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
    strategy = settings.get("train_sampling_strategy")
    if stage == "kto" and (settings.get("group_by_length") or strategy not in (None, "random", "sequential")):
        # TRL's KTO pairs each row with the previous one's response for its KL term: batches are drawn in order.
        raise ConfigError(
            f"stage kto draws its batches in order (train_sampling_strategy: sequential, as TRL's KTO needs), but "
            + ("group_by_length: true is set." if settings.get("group_by_length") else
               f"train_sampling_strategy={strategy} is set."),
            "Remove group_by_length / train_sampling_strategy for stage kto.",
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


# Arguments a user reward function is called with (train/rewards.py calls it with these keywords).
USER_REWARD_ARGUMENTS = ("prompts", "completions", "gold")


def check_rl_args(settings: dict[str, Any]) -> None:
    """grpo/rloo: a template, a generation batch TRL accepts, rollout settings of the right stage, and a
    reward_module that loads (the user opted in to running it)."""
    stage = settings["stage"]
    if stage not in RL_STAGES:
        if settings.get("use_vllm"):
            raise ConfigError(f"use_vllm is an option of stage grpo/rloo, not stage {stage}.",
                              "Remove use_vllm (serve a model on vLLM with `llmtuner api infer_backend=vllm`).")
        return
    if not settings["template"]:
        raise ConfigError(
            f"stage {stage} needs a chat template, but template is not set.",
            "Add template: <name> (qwen, qwen3, llama3, ...): the one of the SFT run it continues, so the prompts "
            "are rendered as they were trained.",
        )
    from ..extras.processes import world_size

    problem = generation_batch_problem(stage, settings["num_generations"], settings["per_device_train_batch_size"],
                                       settings["gradient_accumulation_steps"], world_size())
    if problem:
        raise ConfigError(problem + ".",
                          "Make per_device_train_batch_size (completions per device and step) a multiple of "
                          "num_generations, e.g. per_device_train_batch_size: 4 with num_generations: 4.")
    if stage == "rloo":
        for key, default in (("grpo_loss_type", "dapo"), ("scale_rewards", "group")):
            if settings.get(key, default) != default:
                raise ConfigError(f"{key} is an option of stage grpo; rloo has its own objective.",
                                  f"Remove {key}, or set stage: grpo.")
    if settings.get("do_predict"):
        raise ConfigError(f"do_predict is not available for stage {stage}.",
                          "Remove do_predict; generate from the trained adapter with `llmtuner chat` or "
                          "`llmtuner predict`.")
    if settings.get("reward_module"):
        from ..extras.user_code import load_user_function

        load_user_function(settings["reward_module"], "reward_module", USER_REWARD_ARGUMENTS)


# ---- forgetting_watch (checked on the parsed arguments: it needs the run's resolved schedule) ----

def watch_every(watch: Any, training_args: Any) -> int:
    """Steps between evaluations: the block's eval_steps, else the run's (when it evaluates by steps), else its
    logging_steps."""
    if watch.eval_steps:
        return watch.eval_steps
    steps = training_args.eval_steps if training_args.eval_strategy == "steps" else None
    steps = steps or training_args.logging_steps
    if steps < 1:
        raise ConfigError(f"The run's eval_steps/logging_steps ({steps}) is a fraction of training; the watch needs "
                          "a step count.", "Set forgetting_watch.eval_steps: N (optimizer steps).")
    return int(steps)


def check_watch_schedule(finetuning_args: Any, training_args: Any) -> None:
    """Rules between the watch block and the training arguments, checked before the model loads."""
    watch = finetuning_args.forgetting_watch
    if watch is None:
        return
    every = watch_every(watch, training_args)
    if watch.target_metric.startswith("eval_") and (watch.load_best_within_budget or watch.forgetting_budget):
        evaluates = training_args.eval_strategy == "steps"  # a str enum: equal to its value
        if not evaluates or every % int(training_args.eval_steps or every) != 0:
            raise ConfigError(
                f"forgetting_watch.target_metric={watch.target_metric} needs the trainer to evaluate at the watch's "
                f"steps (every {every}), but eval_strategy={training_args.eval_strategy}, "
                f"eval_steps={training_args.eval_steps}.",
                "Set val_size (or eval_dataset), eval_strategy: steps and eval_steps equal to the watch's.",
            )
    if watch.load_best_within_budget:
        save_steps = training_args.save_steps
        if training_args.save_strategy != "steps" or save_steps < 1 \
                or int(save_steps) % every != 0:
            raise ConfigError(
                f"load_best_within_budget keeps a saved checkpoint, but save_strategy={training_args.save_strategy}"
                f", save_steps={save_steps} do not save at the watch's steps (every {every}).",
                f"Set save_strategy: steps and save_steps to a multiple of {every}.",
            )
        if training_args.save_total_limit:
            raise ConfigError("load_best_within_budget with save_total_limit: the checkpoint to keep could be deleted.",
                              "Remove save_total_limit for this run.")
