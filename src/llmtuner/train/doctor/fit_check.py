"""Fit: an estimate of the GPU memory one training step of the full model needs, and the smallest common GPU it
fits on. Pure arithmetic from the model's config.json and the run's settings; nothing loads.

Per GPU, in GiB: weights (bytes per parameter of the dtype, or of the 4/8-bit quantization), gradients and
optimizer states of what trains (fp32: llmtuner keeps trained weights in fp32, ``model/adapter.py``), activations of
the step (per token and layer what the backward pass keeps, or only the layer inputs with activation
checkpointing, plus the logits of the loss), and the CUDA context. ZeRO stage s over n GPUs divides the optimizer
states (s >= 1), the gradients (s >= 2) and the weights (s = 3) by n. It is an estimate of the worst step (every
row ``cutoff_len`` tokens long); allocator fragmentation can add 5-15%.

The parameter shapes are those of the llama family (llama, mistral, qwen2, qwen3: the model types whose layer
names and sizes follow from config.json alone); another model type gets a ``skip``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from .report import Check, DoctorContext

NAME, TITLE = "fit", "estimated GPU memory of a training step"
GIB = 2**30
FORMULA_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")
# nvidia-smi's total memory of each card, in MiB (a "24 GB" card has 24564 MiB, an "80 GB" H100 81559 MiB).
GPUS = (("RTX 4090 24 GB", 24564), ("A100 40 GB", 40960), ("A100 80 GB", 81920), ("H100 80 GB", 81559),
        ("H200 141 GB", 143771))
CUDA_CONTEXT_GIB = 1.0  # CUDA context, cuBLAS/cuDNN workspaces and kernels: about 0.5-1 GiB on current drivers
# bytes per weight: 4-bit NF4 packs two per byte plus a float32 absmax per 64 weights (an 8-bit one per 64, and a
# float32 per 256 of those, with double quantization); 8-bit LLM.int8 is one byte plus a row scale (negligible).
QUANTIZED_BYTES = {4: 0.5 + 4 / 64, (4, "double"): 0.5 + 1 / 64 + 4 / (64 * 256), 8: 1.0}
# bytes of optimizer state per trained parameter: AdamW keeps two fp32 moments, its 8-bit variants two bytes.
OPTIMIZER_BYTES = {"adamw_torch": 8, "adamw_torch_fused": 8, "adamw_hf": 8, "adamw": 8, "adafactor": 4,
                   "adamw_bnb_8bit": 2, "adamw_8bit": 2, "paged_adamw_8bit": 2, "paged_adamw_32bit": 8,
                   "adamw_torch_8bit": 2, "sgd": 0, "lion_8bit": 1, "lion_32bit": 4}
DEFAULT_OPTIMIZER_BYTES = 8
PAIRED_STAGES = ("dpo", "rm")  # each row is a chosen and a rejected answer: two sequences per row
REFERENCE_STAGES = ("dpo", "kto")  # a frozen reference model; LoRA runs use the base model under the adapter
SCORE_STAGES = ("rm",)  # a score per sequence from a value head: no vocabulary logits
GENERATING_STAGES = ("grpo", "rloo")  # the step also samples completions: their KV cache is not estimated


@dataclass(frozen=True)
class Shapes:
    """The sizes of a llama-family decoder, read from config.json."""

    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    layers: int
    tied: bool
    biased: tuple[str, ...]  # linear layers with a bias: qwen2's q, k, v; llama's attention_bias / mlp_bias
    qk_norm: bool  # qwen3's per-head RMSNorm of queries and keys

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "Shapes":
        heads = config["num_attention_heads"]
        model_type = config.get("model_type")
        biased = ("q_proj", "k_proj", "v_proj") if model_type == "qwen2" else ()
        if model_type != "qwen2" and config.get("attention_bias"):
            biased += ("q_proj", "k_proj", "v_proj", "o_proj")
        if config.get("mlp_bias"):
            biased += ("gate_proj", "up_proj", "down_proj")
        return cls(hidden=config["hidden_size"], intermediate=config["intermediate_size"], heads=heads,
                   kv_heads=config.get("num_key_value_heads") or heads,
                   head_dim=config.get("head_dim") or config["hidden_size"] // heads, vocab=config["vocab_size"],
                   layers=config["num_hidden_layers"], tied=bool(config.get("tie_word_embeddings", False)),
                   biased=biased, qk_norm=model_type == "qwen3")

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) features of each linear layer of one decoder layer, by its short name."""
        q, kv, h, i = self.heads * self.head_dim, self.kv_heads * self.head_dim, self.hidden, self.intermediate
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    def layer_parameters(self) -> int:
        """Parameters of one decoder layer: its linear layers, biases, and norms."""
        shapes = self.linear_shapes()
        linear = sum(n_in * n_out for n_in, n_out in shapes.values())
        bias = sum(shapes[name][1] for name in self.biased)
        norms = 2 * self.hidden + (2 * self.head_dim if self.qk_norm else 0)
        return linear + bias + norms

    def outside_parameters(self) -> int:
        """Embeddings, the final norm and (untied) the output head."""
        return self.vocab * self.hidden * (1 if self.tied else 2) + self.hidden

    def parameters(self) -> int:
        return self.layers * self.layer_parameters() + self.outside_parameters()

    def lora_layer_parameters(self, targets: list[str], rank: int, dora: bool = False) -> int:
        """LoRA's A (rank x in) and B (out x rank) of each targeted linear layer of one decoder layer, plus DoRA's
        magnitude vector (out) when it is on. Raises KeyError for a name that is not a linear layer here."""
        shapes = self.linear_shapes()
        names = list(shapes) if "all" in targets else targets
        return sum(rank * (shapes[name][0] + shapes[name][1]) + (shapes[name][1] if dora else 0) for name in names)

    def activation_elements(self) -> int:
        """Elements one token keeps for the backward pass in one decoder layer: the layer input and the first
        norm's output, q, k, v and the attention output, the residual and the second norm's output, and the
        MLP's gate, up, activation and product."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        return 4 * self.hidden + 2 * q + 2 * kv + 4 * self.intermediate


def read_model_config(model_dir: str) -> dict[str, Any]:
    """The model's config.json (the text config of a multimodal one)."""
    config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    return config.get("text_config") or config


def zero_settings(deepspeed: Any) -> tuple[int, bool, bool]:
    """(ZeRO stage, optimizer offloaded to CPU, parameters offloaded to CPU) of a DeepSpeed config (path, JSON
    text or dict); (0, False, False) without one."""
    if not deepspeed:
        return 0, False, False
    if isinstance(deepspeed, str):
        text = deepspeed if deepspeed.lstrip().startswith("{") else Path(deepspeed).read_text(encoding="utf-8")
        deepspeed = json.loads(text)
    zero = deepspeed.get("zero_optimization") or {}

    def offloaded(key: str) -> bool:
        return str((zero.get(key) or {}).get("device", "none")).lower() in ("cpu", "nvme")

    return int(zero.get("stage", 0) or 0), offloaded("offload_optimizer"), offloaded("offload_param")


@dataclass
class FitSettings:
    """What the estimate depends on besides the model's shapes."""

    method: str  # lora, freeze, full
    quantization_bit: Optional[int] = None
    double_quantization: bool = True
    weight_bytes: float = 2.0  # the dtype the base weights load in on a GPU
    batch: int = 1  # sequences per micro-batch (a preference pair counts two)
    cutoff_len: int = 1024
    activation_checkpointing: bool = True
    chunked_loss: bool = False
    zero_stage: int = 0
    offload_optimizer: bool = False
    offload_params: bool = False
    optimizer_bytes: float = DEFAULT_OPTIMIZER_BYTES
    reference_model: bool = False  # a frozen copy of the weights (dpo/kto without LoRA)
    vocabulary_logits: bool = True  # the loss reads logits over the vocabulary (not a reward model's score)
    trainable: int = 0  # parameters that train


def trainable_parameters(shapes: Shapes, finetuning_args: Any) -> int:
    """Parameters that train in the full model under ``finetuning_type`` (LoRA: the adapter of ``lora_target``
    in every layer; freeze: the ``freeze_trainable_layers`` whole layers, when every module of them trains; full:
    all). ``additional_target`` / ``freeze_extra_modules`` outside the layers are ``outside_trained``'s. Raises
    KeyError when a named module is not a linear layer of the llama family."""
    method = finetuning_args.finetuning_type
    if method == "lora":
        return shapes.layers * shapes.lora_layer_parameters(list(finetuning_args.lora_target),
                                                            finetuning_args.lora_rank, finetuning_args.use_dora)
    if method == "freeze":
        return abs(finetuning_args.freeze_trainable_layers) * shapes.layer_parameters()
    return shapes.parameters()


def outside_trained(shapes: Shapes, names: list[str]) -> int:
    """Parameters of the modules outside the layers that train with them (``additional_target`` of LoRA,
    ``freeze_extra_modules`` of freeze) that the llama family names: embed_tokens, lm_head, norm (tied
    embeddings and head are one tensor)."""
    sizes = {"embed_tokens": shapes.vocab * shapes.hidden, "lm_head": shapes.vocab * shapes.hidden,
             "norm": shapes.hidden}
    short = {name.rsplit(".", 1)[-1] for name in names}
    if shapes.tied and {"embed_tokens", "lm_head"} <= short:
        short.discard("lm_head")
    return sum(sizes.get(name, 0) for name in short)


def estimate(shapes: Shapes, settings: FitSettings, gpus: int = 1) -> dict[str, float]:
    """Bytes per GPU of each part of a training step: weights, gradients, optimizer, activations, CUDA context."""
    total = shapes.parameters()
    quantized_bytes = None
    if settings.quantization_bit:
        quantized_bytes = QUANTIZED_BYTES[(4, "double") if settings.quantization_bit == 4 and
                                          settings.double_quantization else settings.quantization_bit]
    trained = settings.trainable
    if settings.method == "full":
        weights = 4.0 * total  # trained weights are kept in fp32 (model/adapter.py _upcast_trainable_params)
    else:
        frozen = total - (trained if settings.method == "freeze" else 0)
        if quantized_bytes is not None:  # the decoder's linear layers are quantized; embeddings, norms, head not
            linear = shapes.layers * sum(a * b for a, b in shapes.linear_shapes().values())
            frozen_bytes = linear * quantized_bytes + (frozen - linear) * settings.weight_bytes
        else:
            frozen_bytes = frozen * settings.weight_bytes
        weights = frozen_bytes + 4.0 * trained
    if settings.reference_model:
        weights += total * settings.weight_bytes
    gradients = 4.0 * trained
    optimizer = settings.optimizer_bytes * trained
    if settings.zero_stage >= 1:
        optimizer /= gpus
    if settings.zero_stage >= 2:
        gradients /= gpus
    if settings.zero_stage >= 3:
        weights /= gpus
    if settings.offload_optimizer:
        optimizer = 0.0
    if settings.offload_params and settings.zero_stage >= 3:
        weights = 0.0
    compute_bytes = 4.0 if settings.weight_bytes >= 4 else 2.0
    tokens = settings.batch * settings.cutoff_len
    per_layer = shapes.activation_elements() * compute_bytes * tokens
    if settings.activation_checkpointing:  # layer inputs kept; one layer's activations rebuilt at a time
        layers = shapes.layers * shapes.hidden * compute_bytes * tokens + per_layer
    else:
        layers = shapes.layers * per_layer
    if not settings.vocabulary_logits:
        logits = 0.0
    elif settings.chunked_loss:  # one 128 MiB chunk of fp32 logits and its gradient at a time
        logits = 2 * 2**27 + tokens * shapes.hidden * 4.0
    else:  # logits in the compute dtype, their fp32 copy in the loss, and its gradient
        logits = tokens * shapes.vocab * (compute_bytes + 8.0)
    return {"weights": weights, "gradients": gradients, "optimizer": optimizer, "activations": layers + logits,
            "cuda_context": CUDA_CONTEXT_GIB * GIB}


def smallest_gpu(total_bytes: float) -> Optional[str]:
    """The name of the smallest card of ``GPUS`` with at least ``total_bytes``, or None."""
    fitting = [(mib, name) for name, mib in GPUS if mib * 2**20 >= total_bytes]
    return min(fitting)[1] if fitting else None


def fit_settings(ctx: DoctorContext, shapes: Shapes) -> FitSettings:
    """The settings of the run the config describes, as it will run on a GPU."""
    model_args, training_args, finetuning_args = ctx.model_args, ctx.training_args, ctx.finetuning_args
    dtype = model_args.torch_dtype
    weight_bytes = 4.0 if dtype == "float32" else 2.0  # auto is bf16 (or fp16) on a GPU
    stage, offload_optimizer, offload_params = zero_settings(training_args.deepspeed)
    rows = 2 if ctx.stage in PAIRED_STAGES else 1
    chunked = bool(finetuning_args.chunked_loss) and not training_args.deepspeed  # off under DeepSpeed
    optim = str(getattr(training_args.optim, "value", training_args.optim))
    checkpointing = True  # a GPU run's default when the config says nothing (hparams/rules.with_machine_defaults)
    if {"activation_checkpointing", "gradient_checkpointing"} & set(ctx.raw):
        checkpointing = bool(getattr(training_args, "activation_checkpointing", False)
                             or training_args.gradient_checkpointing)
    extra = {"lora": finetuning_args.additional_target, "freeze": finetuning_args.freeze_extra_modules}.get(
        finetuning_args.finetuning_type) or []
    return FitSettings(
        method=finetuning_args.finetuning_type, quantization_bit=model_args.quantization_bit,
        double_quantization=bool(getattr(model_args, "double_quantization", True)), weight_bytes=weight_bytes,
        batch=training_args.per_device_train_batch_size * rows, cutoff_len=ctx.data_args.cutoff_len,
        activation_checkpointing=checkpointing,
        chunked_loss=chunked, zero_stage=stage, offload_optimizer=offload_optimizer, offload_params=offload_params,
        optimizer_bytes=OPTIMIZER_BYTES.get(optim, DEFAULT_OPTIMIZER_BYTES),
        reference_model=ctx.stage in REFERENCE_STAGES and finetuning_args.finetuning_type != "lora",
        vocabulary_logits=ctx.stage not in SCORE_STAGES,
        trainable=trainable_parameters(shapes, finetuning_args) + outside_trained(shapes, extra))


def format_fit_table(rows: dict[int, dict[str, float]]) -> str:
    """The estimate as a text table: one column per GPU count, one row per part, GiB."""
    counts = sorted(rows)
    parts = list(rows[counts[0]])
    header = "part".ljust(14) + "".join(f"{f'{n} GPU' + ('s' if n > 1 else '')}".rjust(12) for n in counts)
    lines = [header + "  (GiB per GPU)"]
    for part in parts + ["total"]:
        values = [sum(rows[n].values()) if part == "total" else rows[n][part] for n in counts]
        lines.append(part.ljust(14) + "".join(f"{value / GIB:12.2f}" for value in values))
    for n in counts:
        lines.append(f"smallest GPU, {n} GPU{'s' if n > 1 else ''}: "
                     f"{smallest_gpu(sum(rows[n].values())) or 'none of ' + ', '.join(g for g, _ in GPUS)}")
    return "\n".join(lines)


def run(ctx: DoctorContext) -> list[Check]:
    config = read_model_config(ctx.model_args.model_name_or_path)
    model_type = config.get("model_type")
    if ctx.stage == "cls" or model_type not in FORMULA_MODEL_TYPES:
        what = "stage cls trains a classifier" if ctx.stage == "cls" else f"model_type {model_type!r}"
        return [Check(NAME, TITLE, "skip", message=f"{what}: the estimate knows the llama-family causal LMs "
                                                   f"({', '.join(FORMULA_MODEL_TYPES)}) only.")]
    shapes = Shapes.from_config(config)
    try:
        settings = fit_settings(ctx, shapes)
    except KeyError as exc:
        return [Check(NAME, TITLE, "skip", message=f"lora_target {exc} is not a linear layer the estimate knows.")]
    counts = (1, 8) if settings.zero_stage else (1,)
    rows = {n: estimate(shapes, settings, n) for n in counts}
    totals = {n: sum(parts.values()) for n, parts in rows.items()}
    fits = {n: smallest_gpu(total) for n, total in totals.items()}
    how = (f"{settings.method}" + (f" {settings.quantization_bit}-bit" if settings.quantization_bit else "")
           + f", {shapes.parameters() / 1e9:.2f}B parameters ({settings.trainable:,} trained), batch "
           f"{settings.batch} x {settings.cutoff_len} tokens, activation checkpointing "
           f"{'on' if settings.activation_checkpointing else 'off'}"
           + (f", ZeRO-{settings.zero_stage}" if settings.zero_stage else ""))
    where = "; ".join(f"{n} GPU{'s' if n > 1 else ''}: {totals[n] / GIB:.1f} GiB per GPU, "
                      + (f"fits on {fits[n]}" if fits[n] else "fits on none of " + ", ".join(g for g, _ in GPUS))
                      for n in counts)
    details = {"table": format_fit_table(rows), "settings": settings.__dict__, "parameters": shapes.parameters(),
               "gib_per_gpu": {n: {part: value / GIB for part, value in rows[n].items()} for n in counts},
               "smallest_gpu": fits}
    value = fits[1] or fits[counts[-1]] or f"{totals[1] / GIB:.0f} GiB"
    if ctx.stage in GENERATING_STAGES:
        where += f" (stage {ctx.stage} also samples completions: their KV cache comes on top)"
    if any(fits.values()):
        return [Check(NAME, TITLE, "pass", value, f"{how}. {where}. An estimate (+5-15% fragmentation).",
                      details=details)]
    return [Check(NAME, TITLE, "warn", value, f"{how}. {where}.",
                  "Lower per_device_train_batch_size (raise gradient_accumulation_steps), turn on "
                  "activation_checkpointing, use LoRA or QLoRA (quantization_bit: 4), or ZeRO-3 over more GPUs.",
                  details)]
