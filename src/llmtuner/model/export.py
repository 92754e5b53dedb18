"""``llmtuner export``: merge LoRA adapters into the base and write a standalone model.

The export holds safetensors shards (+ index), config.json, the tokenizer with the template's Jinja chat template
(so ``apply_chat_template`` on the export renders what training saw), generation_config.json whose eos ids are the
template's stop tokens, a README recording the base, the adapters and the llmtuner version, and the last adapter's
run_args.yaml (the record of its training run, which ``llmtuner test`` reads) when it has one. It loads with plain
``AutoModelForCausalLM.from_pretrained``; llmtuner is not needed to use it.

Everything that can be refused is refused before the weights load: a non-empty export_dir (unless
``overwrite_export_dir``), an export_dir that is the base or an adapter folder, a quantized base, adapters trained on a
base of other shapes. The files are written to a temporary sibling folder and renamed into place at the end, so a
crash never leaves a half-written export.
"""

from __future__ import annotations

import dataclasses
import datetime
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

from ..extras.constants import RUN_ARGS_FILE
from ..extras.errors import ConfigError, ModelError
from ..extras.files import check_folder_empty
from ..extras.logging import get_logger
from .inference import read_model_config
from .loader import check_adapter_path, check_model_path

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizer

    from ..data.templates import Template
    from ..hparams import ModelArguments
    from ..hparams.export_args import ExportArguments

logger = get_logger(__name__)

DEFAULT_TEMPLATE = "auto"  # without a template the export keeps the tokenizer's own chat template


def export_model(args: Union[dict[str, Any], list[str], None] = None) -> Path:
    """Merge, shard and save; returns the export folder. ``args`` as for ``read_args`` (dict, argv or sys.argv).

    Raises:
        ConfigError: missing/invalid arguments, or an export_dir that holds files (without overwrite_export_dir) or is
            the base / an adapter folder.
        ModelError: a quantized base, or an adapter that does not fit the base.
    """
    from ..hparams.parser import get_export_args, read_args

    raw = read_args(args)
    # Before parsing: the parser would first ask for bitsandbytes, which the refusal makes pointless to install.
    check_not_quantized_bits(raw.get("quantization_bit"))
    model_args, data_args, finetuning_args, _, export_args = get_export_args(raw)
    source = check_model_path(model_args.model_name_or_path)
    adapters = [check_adapter_path(path) for path in model_args.adapter_name_or_path or []]
    check_not_quantized_checkpoint(source)
    target = check_export_dir(export_args, [source, *adapters])
    dtype = export_dtype(export_args.export_dtype, source)
    check_load_dtype(raw.get("torch_dtype"), dtype, export_args.export_dtype)
    model_args = dataclasses.replace(model_args, torch_dtype=dtype)  # load straight into the export precision
    from .classifier import export_classifier, is_classifier_run

    if is_classifier_run(model_args.adapter_name_or_path, model_args.model_name_or_path):  # a stage cls run
        return export_classifier(model_args, finetuning_args, target, int(export_args.export_size * 10**9))

    from ..extras.files import write_folder_atomically
    from .adapter import merge_adapters
    from .inference import load_for_inference

    template_name = data_args.template or DEFAULT_TEMPLATE
    tokenizer, template, model = load_for_inference(model_args, template_name, finetuning_args)
    model = merge_adapters(model)
    prepare_for_export(model, tokenizer, template, data_args.default_system)

    shard_bytes = int(export_args.export_size * 10**9)
    readme = export_readme(model_args, adapters, template_name, dtype, export_args)

    # The training run's record of the last adapter (data, template, task tags) stays with the merged weights, so
    # `llmtuner test` with task_prompt: auto prompts the export the way it was trained.
    run_args = adapters[-1] / RUN_ARGS_FILE if adapters else None

    def write(staging: Path) -> None:
        model.save_pretrained(staging, max_shard_size=shard_bytes)
        tokenizer.save_pretrained(staging)
        (staging / "README.md").write_text(readme, encoding="utf-8")
        if run_args is not None and run_args.is_file():
            shutil.copyfile(run_args, staging / RUN_ARGS_FILE)

    write_folder_atomically(target, write)
    shards = sorted(path.name for path in target.glob("*.safetensors"))
    logger.info(f"Exported {len(shards)} safetensors shard(s) to {target}.")
    print(f"Exported the merged model to {target} ({len(shards)} shard(s), {dtype}).")
    return target


def check_load_dtype(torch_dtype: Any, dtype: str, export_dtype_setting: str) -> None:
    """Export loads the weights in the export precision, so a torch_dtype the user set must agree with it (it is
    never silently replaced)."""
    if torch_dtype in (None, "auto") or torch_dtype == dtype:
        logger.info(f"export loads the base in {dtype} (export_dtype={export_dtype_setting}) and saves in {dtype}.")
        return
    raise ConfigError(
        f"torch_dtype={torch_dtype} and export_dtype={export_dtype_setting} (= {dtype}) disagree: export loads and "
        f"saves the weights in one precision.",
        f"Remove torch_dtype (export_dtype sets it), or set export_dtype: {torch_dtype}.",
    )


def check_not_quantized_bits(quantization_bit: Any) -> None:
    """Merging needs full-precision base weights: refuse quantization_bit."""
    if quantization_bit is not None:
        raise ConfigError(
            f"quantization_bit={quantization_bit}: adapters cannot be merged into quantized weights "
            "(the merged sum would be rounded back to 4/8 bits and lose the adapter).",
            "Remove quantization_bit: export loads the base unquantized and merges there; an adapter trained with "
            "QLoRA applies to the unquantized base as it is.",
        )


def check_not_quantized_checkpoint(source: Path) -> None:
    """Refuse a checkpoint saved quantized (GPTQ, AWQ, bitsandbytes ...): its weights cannot take a merge."""
    quantization = read_model_config(source).get("quantization_config")
    if quantization:
        method = quantization.get("quant_method", "unknown") if isinstance(quantization, dict) else "unknown"
        raise ModelError(
            f"model_name_or_path={source} is a quantized checkpoint (quant_method={method}); adapters cannot be "
            "merged into quantized weights.",
            "Export from the original unquantized checkpoint (load the base unquantized), then quantize the export "
            "if you need a small model.",
        )


def check_export_dir(export_args: "ExportArguments", sources: list[Path]) -> Path:
    """The export folder, resolved; refused when it holds files (unless overwrite_export_dir) or overlaps a source."""
    target = Path(export_args.export_dir).expanduser().resolve()
    if target.exists() and not target.is_dir():
        raise ConfigError(f"export_dir={export_args.export_dir} is a file, not a folder.",
                          "Choose a folder path for export_dir.")
    for source in sources:
        source = source.resolve()
        if target == source or source in target.parents or target in source.parents:
            raise ConfigError(
                f"export_dir={export_args.export_dir} overlaps {source}, which the export reads from.",
                "Choose a new folder outside the base model and the adapters.",
            )
    check_folder_empty(export_args.export_dir, export_args.overwrite_export_dir, "export_dir", "overwrite_export_dir")
    return target


def export_dtype(name: str, source: Path) -> str:
    """``auto`` = the dtype recorded in the base's config.json (float32 when it records none)."""
    if name != "auto":
        return name
    config = read_model_config(source)
    recorded = config.get("dtype") or config.get("torch_dtype")
    return recorded if recorded in ("float32", "float16", "bfloat16") else "float32"


def prepare_for_export(
    model: "PreTrainedModel", tokenizer: "PreTrainedTokenizer", template: "Template", default_system: Optional[str]
) -> None:
    """Chat template on the tokenizer, the template's stop ids in generation_config, inference-ready settings."""
    from .chat_template import chat_template_for

    tokenizer.chat_template = chat_template_for(template, default_system)
    tokenizer.padding_side = "left"  # batched generation pads on the left; training reloads with its own side
    set_stop_ids(model, tokenizer, template)
    model.config.use_cache = True


def set_stop_ids(model: "PreTrainedModel", tokenizer: "PreTrainedTokenizer", template: "Template") -> None:
    """The template's stop ids first among generation_config's eos ids (and its pad id), so generation (an export,
    RL rollouts) ends where the template ends a turn."""
    stop_ids = template.stop_token_ids(tokenizer)
    config_eos = model.generation_config.eos_token_id
    config_eos = config_eos if isinstance(config_eos, list) else [config_eos] if config_eos is not None else []
    model.generation_config.eos_token_id = list(dict.fromkeys([*stop_ids, *config_eos]))
    model.generation_config.pad_token_id = tokenizer.pad_token_id


def export_readme(
    model_args: "ModelArguments", adapters: list[Path], template_name: str, dtype: str,
    export_args: "ExportArguments",
) -> str:
    """README.md of the export: where it came from and how to load it."""
    import json

    from ..extras.env import library_versions

    versions = library_versions()
    lines = [
        f"# {Path(export_args.export_dir).name}",
        "",
        f"Standalone model exported by llmtuner {versions['llmtuner']} on "
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC.",
        "",
        "| | |",
        "| --- | --- |",
        f"| base model | `{model_args.model_name_or_path}` |",
    ]
    for index, adapter in enumerate(adapters, 1):
        config = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
        targets = config.get("target_modules")
        targets = ", ".join(sorted(targets)) if isinstance(targets, list) else targets
        lines.append(f"| adapter {index} (merged in order) | `{adapter}` (r={config.get('r')}, "
                     f"alpha={config.get('lora_alpha')}, targets: {targets}) |")
    if not adapters:
        lines.append("| adapters | none (re-saved base) |")
    lines += [
        f"| chat template | `{template_name}` |",
        f"| dtype | {dtype} |",
        f"| shard size | at most {export_args.export_size:g} GB |",
        f"| libraries | transformers {versions['transformers']}, peft {versions['peft']}, torch {versions['torch']} |",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        'tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")',
        'model = AutoModelForCausalLM.from_pretrained("path/to/this/folder")',
        'ids = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True, '
        'return_tensors="pt", return_dict=True)',
        "print(tokenizer.decode(model.generate(**ids, max_new_tokens=64)[0]))",
        "```",
        "",
        f"Chat in a terminal: `llmtuner chat model_name_or_path=<this folder> template={template_name}`",
        "",
    ]
    return "\n".join(lines)
