"""The user's checkpoint cut to its first decoder layers, for the numerics and resume checks.

The real embeddings, first ``KEPT_LAYERS`` decoder layers, final norm and output head are copied (with
safetensors' ``safe_open``, tensor by tensor, in their stored dtype) from the checkpoint's shards into a temporary
folder with a config.json that says ``num_hidden_layers: 2``; the model then loads from there through the
project's own loader and adapter (``model.load_model``), as training loads it. A 7B checkpoint costs its
embeddings and two layers (Qwen2.5-7B: 1.56B parameters, 3.1 GB in bf16 on disk, 6.2 GB in fp32 in memory)
instead of 7.6B. Tied embeddings need nothing special (no head is stored, the config ties it); a sharded
checkpoint is read through its ``model.safetensors.index.json``.

The folder lives inside the report folder until the context that made it is dropped (``TemporaryDirectory``).
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

from ...extras.errors import ModelError
from .report import DoctorContext

KEPT_LAYERS = 2
INDEX_FILE, SINGLE_FILE = "model.safetensors.index.json", "model.safetensors"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".h5", ".msgpack")
LAYER_KEY = re.compile(r"\.layers\.(\d+)\.")  # a decoder layer's weight, in a checkpoint or a model
_CACHE_KEY = "truncated_checkpoint"


def weight_files(folder: str | Path) -> list[Path]:
    """The safetensors files of a checkpoint: the shards its index names, or its single file."""
    folder = Path(folder)
    index = folder / INDEX_FILE
    if index.is_file():
        names = json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()
        return [folder / name for name in sorted(set(names))]
    if (folder / SINGLE_FILE).is_file():
        return [folder / SINGLE_FILE]
    raise ModelError(f"{folder} holds no {SINGLE_FILE} or {INDEX_FILE}: the doctor reads safetensors weights only.",
                     "Save the model with save_pretrained(safe_serialization=True) (transformers' default).")


def kept_key(key: str, layers: int = KEPT_LAYERS) -> bool:
    """Whether a weight belongs to the truncated model: everything but the decoder layers from ``layers`` on."""
    match = LAYER_KEY.search(key)
    return match is None or int(match.group(1)) < layers


def truncated_config(config: dict[str, Any], layers: int = KEPT_LAYERS) -> dict[str, Any]:
    """config.json of the model cut to ``layers`` decoder layers (per-layer lists such as ``layer_types`` cut too).
    Attention dropout is set to 0: the checks compare runs whose random dropout masks would differ."""
    found = config.get("num_hidden_layers")
    if not isinstance(found, int) or found < layers:
        raise ModelError(f"config.json has num_hidden_layers={found!r}; the doctor needs a decoder of at least "
                         f"{layers} layers.", "Check the model folder's config.json.")
    cut = copy.deepcopy(config)
    target = cut.get("text_config") or cut  # a multimodal config keeps the decoder's sizes in text_config
    for key, value in list(target.items()):
        if isinstance(value, list) and len(value) == found and found != layers:
            target[key] = value[:layers]
    target["num_hidden_layers"] = layers
    if "attention_dropout" in target:
        target["attention_dropout"] = 0.0
    return cut


def write_truncated_checkpoint(source: str | Path, dest: str | Path, layers: int = KEPT_LAYERS) -> dict[str, Any]:
    """Copy config.json (cut to ``layers``) and the kept weights of ``source`` into ``dest``, one output shard per
    input shard that holds any (so memory holds one shard's kept tensors at a time). Returns what was copied."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    source, dest = Path(source), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for file in source.iterdir():  # tokenizer and generation files: the loader checks the folder is a model's
        if file.is_file() and file.suffix not in WEIGHT_SUFFIXES and file.name not in (INDEX_FILE, "config.json"):
            shutil.copyfile(file, dest / file.name)
    config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    (dest / "config.json").write_text(json.dumps(truncated_config(config, layers), indent=2), encoding="utf-8")
    weight_map: dict[str, str] = {}
    kept = skipped = size = 0
    for number, file in enumerate(weight_files(source), start=1):
        tensors = {}
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():
                if kept_key(key, layers):
                    tensors[key] = handle.get_tensor(key)
                else:
                    skipped += 1
        if not tensors:
            continue
        name = f"model-{number:05d}.safetensors"
        save_file(tensors, str(dest / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(tensors, name))
        kept += len(tensors)
        size += sum(tensor.numel() * tensor.element_size() for tensor in tensors.values())
        del tensors
    index = {"metadata": {"total_size": size}, "weight_map": weight_map}
    (dest / INDEX_FILE).write_text(json.dumps(index, indent=2), encoding="utf-8")
    return {"layers": layers, "of_layers": (config.get("text_config") or config)["num_hidden_layers"],
            "tensors": kept, "tensors_skipped": skipped, "bytes": size}


def truncated_checkpoint(ctx: DoctorContext) -> tuple[str, dict[str, Any]]:
    """The truncated copy of the user's checkpoint (written once per doctor run; kept in ``ctx.cache``, removed
    with it), and what was copied."""
    if _CACHE_KEY not in ctx.cache:
        Path(ctx.out_dir).mkdir(parents=True, exist_ok=True)
        folder = tempfile.TemporaryDirectory(prefix=".truncated-model-", dir=ctx.out_dir)
        info = write_truncated_checkpoint(ctx.model_args.model_name_or_path, folder.name)
        ctx.cache[_CACHE_KEY] = (folder, info)
    folder, info = ctx.cache[_CACHE_KEY]
    return folder.name, info


def scratch_folder(ctx: DoctorContext) -> tempfile.TemporaryDirectory:
    """A temporary folder in the report folder for a check's runs (removed when the ``with`` block ends)."""
    Path(ctx.out_dir).mkdir(parents=True, exist_ok=True)
    return tempfile.TemporaryDirectory(prefix=".doctor-run-", dir=ctx.out_dir)


def release_truncated_checkpoint(ctx: DoctorContext) -> None:
    """Remove the truncated copy now (the last check that needs it calls this)."""
    entry = ctx.cache.pop(_CACHE_KEY, None)
    if entry is not None:
        entry[0].cleanup()


def doctor_model_args(ctx: DoctorContext, folder: str) -> Any:
    """The run's model arguments, pointed at the truncated copy, as the checks load it on a CPU: fp32 (the
    tolerances are fp32's; half precision is emulated on CPUs), unquantized (bitsandbytes kernels need a GPU; the
    adapter attaches to the same layers), sdpa where flash attention was asked for (it needs a GPU; packed rows
    then take the same cu_seq_lens path through ``llmtuner_packed_sdpa``), no adapter to resume (its weights are
    the full model's)."""
    args = copy.copy(ctx.model_args)
    args.model_name_or_path = folder
    args.torch_dtype = "float32"
    args.quantization_bit = None
    args.adapter_name_or_path = None
    if "flash" in str(args.attn_implementation):
        args.attn_implementation = "sdpa"
    return args


def doctor_finetuning_args(ctx: DoctorContext, layers: int = KEPT_LAYERS) -> Any:
    """The run's finetuning arguments for the truncated model: no LoRA dropout (runs compared token for token
    must draw no random masks), freeze_trainable_layers clipped to the layers kept (scaled back by the checks)."""
    args = copy.copy(ctx.finetuning_args)
    args.lora_dropout = 0.0
    count = args.freeze_trainable_layers
    args.freeze_trainable_layers = max(-layers, min(layers, count))
    return args


def load_truncated_model(ctx: DoctorContext, packed_rows: bool = False) -> Any:
    """The truncated model with the run's adapter, ready to train (``model.load_model``), on the CPU."""
    import gc

    from ...model import load_model

    # A Trainer and its model sit in reference cycles: free the previous run's model before this one loads
    # (a 7B's truncated copy is 6 GB in fp32).
    gc.collect()
    folder, _ = truncated_checkpoint(ctx)
    return load_model(ctx.tokenizer, doctor_model_args(ctx, folder), doctor_finetuning_args(ctx), True, packed_rows)


@contextmanager
def without_deepspeed(ctx: DoctorContext) -> Iterator[None]:
    """The checks' CPU runs without DeepSpeed: parsing a config with ``deepspeed`` registered its ZeRO config
    with transformers (a weak reference held by ``ctx.training_args``), and with ZeRO-3 registered
    ``from_pretrained`` would partition the truncated model through ``deepspeed.zero.Init``. The registration is
    lifted for the ``with`` block and put back after."""
    from transformers.integrations.deepspeed import set_hf_deepspeed_config, unset_hf_deepspeed_config

    registered = getattr(ctx.training_args, "hf_deepspeed_config", None)
    unset_hf_deepspeed_config()
    try:
        yield
    finally:
        if registered is not None:
            set_hf_deepspeed_config(registered)


def doctor_training_args(ctx: DoctorContext, output_dir: str, **changes: Any) -> Any:
    """The run's training arguments for a short CPU run of the truncated model in ``output_dir``: no DeepSpeed,
    fp32, no reporting, no progress bar, no data loader workers; ``changes`` on top."""
    import dataclasses

    settings = {"output_dir": output_dir, "deepspeed": None, "bf16": False, "fp16": False, "use_cpu": True,
                "report_to": [], "disable_tqdm": True, "dataloader_num_workers": 0, "torch_compile": False,
                "resume_from_checkpoint": None, "do_train": True, "do_eval": False, "do_predict": False,
                "eval_strategy": "no", "load_best_model_at_end": False, "push_to_hub": False,
                "max_steps": 1, "logging_steps": 1, "save_strategy": "no", **changes}
    return dataclasses.replace(ctx.training_args, **settings)


def quiet_trainer(trainer: Any) -> Any:
    """The trainer without the callback that prints each step's metrics (the doctor prints its own table)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    for callback in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(callback)
    return trainer


def first_samples(ctx: DoctorContext, count: int, cutoff_len: Optional[int] = None) -> list[dict[str, list[int]]]:
    """Up to ``count`` tokenised training samples (``input_ids``, ``attention_mask``, ``labels``) of the first
    rows of the config's datasets, taken in turn from each, through the stage's own preprocessing; samples left
    with no trained token are left out. ``cutoff_len``: a shorter cutoff than the run's, to keep the checks fast."""
    from ...data.preprocess.pretrain import preprocess_pretrain_dataset
    from ...data.preprocess.supervised import preprocess_supervised_dataset

    data_args = copy.copy(ctx.data_args)
    if cutoff_len:
        data_args.cutoff_len = min(data_args.cutoff_len, cutoff_len)
    per_dataset = []
    for name in ctx.data_args.dataset:
        rows = ctx.first_rows(name)
        columns = {key: rows[key] for key in ("messages", "system") if key in rows.column_names}
        columns.setdefault("system", [None] * len(rows))
        if ctx.stage == "pt":
            encoded = preprocess_pretrain_dataset(columns, ctx.tokenizer, data_args)
        else:
            encoded = preprocess_supervised_dataset(columns, ctx.template, ctx.tokenizer, data_args)
        keys = list(encoded)
        per_dataset.append([dict(zip(keys, values)) for values in zip(*encoded.values()) if values[0]])
    samples: list[dict[str, list[int]]] = []
    for position in range(max((len(found) for found in per_dataset), default=0)):
        samples += [found[position] for found in per_dataset if position < len(found)]
    return samples[:count]


SAMPLED_ELEMENTS = 4096  # per parameter: enough to see a scaled or shifted gradient, small for a 7B embedding


def parameter_sample(model: Any, gradients: bool = False) -> "Any":
    """A fixed strided sample of every trained parameter (or of its gradient), as one fp32 vector: what two runs
    are compared on, without keeping a copy of a full model's weights."""
    import torch

    parts = []
    for _, param in sorted(model.named_parameters(), key=lambda item: item[0]):
        if not param.requires_grad:
            continue
        tensor = param.grad if gradients else param
        if tensor is None:
            tensor = torch.zeros_like(param)
        flat = tensor.detach().reshape(-1)
        parts.append(flat[:: max(1, flat.numel() // SAMPLED_ELEMENTS)].float().clone())
    return torch.cat(parts) if parts else torch.zeros(0)


def relative_difference(found: Any, expected: Any) -> float:
    """|found - expected| / |expected| (norms for vectors), with 0/0 = 0."""
    import torch

    found, expected = torch.as_tensor(found, dtype=torch.float64), torch.as_tensor(expected, dtype=torch.float64)
    scale = float(torch.linalg.vector_norm(expected))
    gap = float(torch.linalg.vector_norm(found - expected))
    return gap / scale if scale else gap
