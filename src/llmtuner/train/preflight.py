"""Checks that need files but no model: run before anything heavy is loaded, so typos fail in seconds."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..hparams import DataArguments, FinetuningArguments, ModelArguments


def preflight_checks(
    model_args: "ModelArguments", data_args: "DataArguments", finetuning_args: "FinetuningArguments"
) -> None:
    """Model folder, adapter folders, dataset registry entries and files (and whether the stage can read them),
    and the template name."""
    from ..data.converters import check_stage
    from ..data.registry import get_dataset_specs
    from ..data.templates import check_template_name
    from ..model.loader import check_adapter_path, check_model_path
    from .forgetting_budget import check_watch_files

    check_model_path(model_args.model_name_or_path)
    for adapter in model_args.adapter_name_or_path or []:
        check_adapter_path(adapter)
    for names in (data_args.dataset, data_args.eval_dataset, data_args.replay_dataset):
        for spec in get_dataset_specs(names, data_args.dataset_dir) if names else []:
            check_stage(spec, finetuning_args.stage)  # e.g. pairwise data for sft: refused before torch loads
    check_watch_files(finetuning_args)
    if finetuning_args.stage == "sft":
        check_template_name(data_args.template)
