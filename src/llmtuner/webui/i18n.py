"""Every label and help text of the UI in English and 中文, and the switch between them.

Components are created with ``Localizer.label(key)`` etc. and registered; the language radio returns one
``gr.update`` per registered component, so switching language rewrites labels in place without a reload.
"""

from __future__ import annotations

from typing import Any

LANGUAGES = {"English": "en", "中文": "zh"}

# key -> (English, 中文). A key ending in ".info" is the help text under the field of the same key.
STRINGS: dict[str, tuple[str, str]] = {
    "title": ("# llmtuner web UI", "# llmtuner 网页界面"),
    "lang": ("Language", "语言"),
    "tab_train": ("Train", "训练"), "tab_eval": ("Evaluate", "评测"), "tab_chat": ("Chat", "对话"),
    "tab_export": ("Export", "导出"),
    # train: model and method
    "model_name_or_path": ("Model folder", "模型文件夹"),
    "model_name_or_path.info": ("Local folder with config.json, weights and the tokenizer.",
                                "本地文件夹，包含 config.json、权重和分词器。"),
    "template": ("Chat template", "对话模板"),
    "template.info": ("auto = the tokenizer's own chat template.", "auto = 使用分词器自带的对话模板。"),
    "stage": ("Stage", "训练阶段"),
    "stage.info": ("pt: continued pretraining, sft: supervised fine-tuning, cls: classification.",
                   "pt：继续预训练，sft：监督微调，cls：分类。"),
    "finetuning_type": ("Finetuning type", "微调方法"),
    "finetuning_type.info": ("lora, freeze (last layers) or full.", "lora、freeze（只训练最后几层）或 full（全参数）。"),
    "lora_rank": ("LoRA rank", "LoRA 秩"), "lora_alpha": ("LoRA alpha", "LoRA alpha"),
    "lora_dropout": ("LoRA dropout", "LoRA dropout"), "lora_target": ("LoRA target modules", "LoRA 目标模块"),
    "lora_target.info": ("all = every linear layer except the output head.", "all = 除输出层外的所有线性层。"),
    # train: data
    "dataset_dir": ("Dataset folder", "数据集文件夹"),
    "dataset_dir.info": ("Folder holding dataset_info.json.", "包含 dataset_info.json 的文件夹。"),
    "dataset": ("Datasets", "数据集"),
    "dataset.info": ("Names registered in dataset_info.json.", "dataset_info.json 中登记的名称。"),
    "cutoff_len": ("Max tokens per example", "每条样本最大 token 数"),
    "val_size": ("Validation share", "验证集比例"),
    "max_samples": ("Max samples per dataset", "每个数据集最多样本数"),
    "max_samples.info": ("Empty or 0: all rows.", "留空或 0：全部样本。"),
    "preview_data": ("Preview data", "预览数据"),
    "first_rows": ("First rows of the first dataset", "第一个数据集的前几行"),
    "first_example": ("First example as the model sees it ([MASKED: ...] is not trained)",
                      "模型看到的第一条样本（[MASKED: ...] 部分不参与训练）"),
    # train: hyper-parameters
    "learning_rate": ("Learning rate", "学习率"), "num_train_epochs": ("Epochs", "训练轮数"),
    "max_steps": ("Max steps", "最大步数"), "max_steps.info": ("Empty or 0: use the epochs.", "留空或 0：按轮数训练。"),
    "per_device_train_batch_size": ("Batch size per device", "每设备批大小"),
    "gradient_accumulation_steps": ("Gradient accumulation", "梯度累积步数"),
    "lr_scheduler_type": ("LR scheduler", "学习率调度"), "warmup_steps": ("Warmup steps", "预热步数"),
    "logging_steps": ("Log every N steps", "每 N 步记录日志"), "save_steps": ("Save every N steps", "每 N 步保存"),
    "seed": ("Seed", "随机种子"),
    # train: output and runs
    "output_dir": ("Output folder", "输出文件夹"),
    "output_dir.info": ("Must be new or empty, unless you tick overwrite or resume.",
                        "必须是新的或空文件夹，除非勾选覆盖或继续训练。"),
    "overwrite_output_dir": ("Overwrite the run in this folder", "覆盖此文件夹中的训练结果"),
    "resume": ("Resume from the last checkpoint", "从最近的检查点继续训练"),
    "extra": ("Other settings (YAML)", "其他设置（YAML）"),
    "extra.info": ("Any other config key, one `key: value` per line.", "其他任意配置项，每行一个 `key: value`。"),
    "preset": ("Preset", "预设"), "load_preset": ("Load preset", "加载预设"),
    "preview_yaml": ("Preview command / YAML", "预览命令 / YAML"), "start": ("Start", "开始"),
    "doctor": ("Check (llmtuner doctor)", "检查（llmtuner doctor）"),
    "doctor_table": ("Checks before a long run: template, masks, special tokens, numerics, resume, data mix, fit",
                     "长时间训练前的检查：模板、掩码、特殊 token、数值、续训、数据配比、显存"),
    "stop": ("Stop (save a checkpoint)", "停止（保存检查点）"), "resume_run": ("Resume", "继续训练"),
    "yaml": ("Config YAML (what `llmtuner train` runs)", "配置 YAML（即 `llmtuner train` 运行的内容）"),
    "command": ("Command", "命令"), "run": ("Run", "运行"), "run_status": ("Status", "状态"),
    "loss": ("Loss", "损失"), "log": ("Log", "日志"), "runs": ("Runs", "运行列表"),
    # evaluate
    "eval_mode": ("What to run", "评测内容"), "mode_bench": ("Benchmark", "基准评测"),
    "mode_forget": ("Forgetting report (base vs tuned)", "遗忘报告（基座 vs 微调）"),
    "adapter_name_or_path": ("Adapter folder (optional)", "适配器文件夹（可选）"),
    "adapter_name_or_path.info": ("A LoRA run's output folder.", "LoRA 训练的输出文件夹。"),
    "task": ("Benchmarks", "基准"), "task_dir": ("Benchmark folder", "基准数据文件夹"),
    "subjects": ("Subjects (comma-separated, empty: all)", "科目（逗号分隔，留空：全部）"),
    "n_shot": ("Shots", "示例数 (n-shot)"), "eval_max_samples": ("Questions per subject", "每个科目的题目数"),
    "save_dir": ("Results folder", "结果文件夹"), "overwrite_save_dir": ("Overwrite results", "覆盖已有结果"),
    "run_eval": ("Evaluate", "开始评测"), "results": ("Results", "结果"), "radar": ("Radar", "雷达图"),
    "drops": ("Largest drops", "下降最多的科目"),
    # chat
    "load": ("Load model", "加载模型"), "unload": ("Unload", "卸载"), "system": ("System prompt", "系统提示词"),
    "temperature": ("Temperature", "温度"), "top_p": ("Top-p", "Top-p"),
    "max_new_tokens": ("Max new tokens", "最大生成 token 数"), "do_sample": ("Sample", "采样"),
    "message": ("Message", "消息"), "send": ("Send", "发送"), "clear": ("Clear", "清空"),
    "chatbot": ("Chat", "对话"), "classify_text": ("Text to classify", "待分类文本"),
    "classify": ("Classify", "分类"), "probabilities": ("Label probabilities", "标签概率"),
    # export
    "export_dir": ("Export folder", "导出文件夹"), "export_size": ("Shard size (GB)", "分片大小（GB）"),
    "export_dtype": ("Weight dtype", "权重精度"), "overwrite_export_dir": ("Replace a non-empty folder", "替换非空文件夹"),
    "export": ("Export", "导出"),
    # messages
    "model_ok": ("✔ model folder: {}", "✔ 模型文件夹：{}"),
    "no_run": ("No run selected: nothing to stop.", "未选择运行：没有可停止的训练。"),
    "not_running": ("Run {} is not running ({}): nothing to stop.", "运行 {} 未在进行（{}）：没有可停止的训练。"),
    "stopping": ("Stopping run {}: it saves a checkpoint after the current step.",
                 "正在停止运行 {}：当前步结束后保存检查点。"), "loaded": ("Loaded: {}", "已加载：{}"),
    "not_loaded": ("Load a model first.", "请先加载模型。"),
    "valid": ("✔ the config passes the CLI's checks.", "✔ 配置通过了命令行的检查。"),
}


def error_markdown(exc: Any) -> str:
    """How a CLI error (``LlmtunerError``) reads in the page: the same error: / hint: lines the CLI prints."""
    hint = f"\n\nhint: {exc.hint}" if exc.hint else ""
    return f"**error:** {exc.message}{hint}"


def text(key: str, lang: str = "en") -> str:
    """The string of ``key`` in ``lang`` (``en`` or ``zh``); the key itself when it has none (a visible gap)."""
    pair = STRINGS.get(key)
    if pair is None:
        return key
    return pair[1] if lang == "zh" else pair[0]


def accepts(component: Any, name: str) -> bool:
    """Whether the component's class takes ``name`` (Gradio rebuilds a component from an update's keys)."""
    import inspect

    return name in inspect.signature(type(component).__init__).parameters


class Localizer:
    """Creates labels in the start language and remembers which component shows which key."""

    def __init__(self, lang: str = "en") -> None:
        self.lang = lang
        self._entries: list[tuple[Any, str, str]] = []  # (component, key, kind: label | value | info)

    def t(self, key: str) -> str:
        return text(key, self.lang)

    def add(self, component: Any, key: str, kind: str = "label") -> Any:
        """Register ``component`` (already made with ``t(key)``) to follow language switches; returns it."""
        self._entries.append((component, key, kind))
        if kind == "label" and f"{key}.info" in STRINGS and accepts(component, "info"):
            self._entries.append((component, f"{key}.info", "info"))
        return component

    def kw(self, key: str) -> dict[str, str]:
        """``label=`` and, when the key has one, ``info=`` keyword arguments for a component."""
        kwargs = {"label": self.t(key)}
        if f"{key}.info" in STRINGS:
            kwargs["info"] = self.t(f"{key}.info")
        return kwargs

    @property
    def components(self) -> list[Any]:
        return list(dict.fromkeys(component for component, _, _ in self._entries))

    def updates(self, lang: str) -> list[Any]:
        """One ``gr.update`` per registered component (in ``components`` order) with its strings in ``lang``."""
        import gradio as gr

        changes: dict[int, dict[str, str]] = {}
        for component, key, kind in self._entries:
            changes.setdefault(id(component), {})[kind] = text(key, lang)
        return [gr.update(**changes[id(component)]) for component in self.components]
