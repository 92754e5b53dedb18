"""Preference-stage fixtures: a small pairwise set with short answers (fast on CPU), its kto variant, and runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

# Eight questions, a good short answer and a bad one: short sequences keep every step well under a second.
PAIRS = [
    ("发烧怎么办？", "多喝水，休息，高热就医。", "不用管。"),
    ("血压高吃什么？", "低盐饮食，按时吃药。", "随便吃。"),
    ("失眠怎么办？", "规律作息，睡前不看手机。", "多吃安眠药。"),
    ("胃痛怎么办？", "清淡饮食，反复痛要就医。", "吃辣的。"),
    ("被猫抓了怎么办？", "冲洗伤口，打狂犬疫苗。", "不用处理。"),
    ("中暑怎么办？", "去阴凉处，补充淡盐水。", "喝冰酒。"),
    ("便秘怎么办？", "多吃蔬菜，多喝水。", "天天吃泻药。"),
    ("牙龈出血怎么办？", "定期洗牙，软毛牙刷。", "别刷牙了。"),
]

REGISTRY = {
    "pairs": {"file_name": "pairs.json", "ranking": True},
    "pairs_sharegpt": {"file_name": "pairs_sharegpt.jsonl", "formatting": "sharegpt", "ranking": True,
                       "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"}},
    "tagged": {"file_name": "tagged.json", "columns": {"prompt": "instruction", "response": "output",
                                                         "kto_tag": "kto_tag"}},
    "sft_rows": {"file_name": "sft_rows.json"},
    "no_rejected": {"file_name": "no_rejected.json", "ranking": True},
    "tag_strings": {"file_name": "tag_strings.json", "columns": {"prompt": "instruction", "response": "output",
                                                                   "kto_tag": "kto_tag"}},
}


def write_json(path: Path, rows: Any) -> None:
    path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")


@pytest.fixture(scope="session")
def pref_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pref-data")
    write_json(folder / "dataset_info.json", REGISTRY)
    write_json(folder / "pairs.json", [{"instruction": q, "chosen": good, "rejected": bad} for q, good, bad in PAIRS])
    with open(folder / "pairs_sharegpt.jsonl", "w", encoding="utf-8") as sink:
        for q, good, bad in PAIRS[:2]:
            turns = [{"from": "human", "value": "你好"}, {"from": "gpt", "value": "你好，请问有什么可以帮您？"},
                     {"from": "human", "value": q}]
            sink.write(json.dumps({"conversations": turns,
                                   "chosen": {"from": "gpt", "value": good},
                                   "rejected": {"from": "gpt", "value": bad}}, ensure_ascii=False) + "\n")
    write_json(folder / "tagged.json", [{"instruction": q, "output": answer, "kto_tag": tag}
                                        for q, good, bad in PAIRS for answer, tag in ((good, True), (bad, False))])
    write_json(folder / "sft_rows.json", [{"instruction": q, "output": good} for q, good, _ in PAIRS])
    write_json(folder / "no_rejected.json", [{"instruction": q, "chosen": good} for q, good, _ in PAIRS])
    write_json(folder / "tag_strings.json", [{"instruction": q, "output": good, "kto_tag": "true"}
                                             for q, good, _ in PAIRS])
    return folder


def pref_args(model_dir: str, data_dir: Path, output_dir: Path, **overrides: Any) -> dict[str, Any]:
    """A small LoRA preference run on the pairs: 2 pairs a step, answers cut to 64 tokens, one log line a step."""
    return {
        "model_name_or_path": model_dir, "stage": "dpo", "dataset": "pairs", "dataset_dir": str(data_dir),
        "template": "qwen", "cutoff_len": 64, "output_dir": str(output_dir), "per_device_train_batch_size": 2,
        "learning_rate": 1e-2, "max_steps": 16, "lr_scheduler_type": "constant", "logging_steps": 1,
        "lora_rank": 8, "seed": 42, "report_to": "none", "save_strategy": "no", **overrides,
    }


def margin_vs_base(model_dir: str, data_dir: Path, output_dir: Path, adapter: Path | None) -> dict[str, float]:
    """DPO's implicit reward of ``adapter`` against the base on the pairs: eval rewards/margins and accuracies.

    Scored by an evaluation-only stage dpo run with ref_model = the base, the same measure for every loss."""
    from llmtuner.train.tuner import run_exp

    args = pref_args(model_dir, data_dir, output_dir, do_train=False, do_eval=True, eval_dataset="pairs",
                     ref_model=model_dir, per_device_eval_batch_size=8)
    if adapter is not None:
        args["adapter_name_or_path"] = str(adapter)
    return run_exp(args)
