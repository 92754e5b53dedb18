"""The Chat, Evaluate and Export tabs' functions on the tiny models (what their buttons call)."""

from __future__ import annotations

import json
import shutil

import pytest

from llmtuner.webui.chat_tab import load_model, model_args, stream_reply
from llmtuner.webui.eval_tab import eval_config, run_evaluation
from llmtuner.webui.export_tab import export_config, run_export


def test_chat_reply_streams_what_the_engine_generates(tiny_qwen2_dir):
    kind, engine = load_model(model_args(tiny_qwen2_dir, "", "qwen"))
    assert kind == "chat"
    history = [{"role": "user", "content": "你好"}]
    settings = {"do_sample": False, "max_new_tokens": 12}
    steps = list(stream_reply(engine, history, "你是助手。", settings))
    final = steps[-1][-1]
    assert steps[-1][:-1] == history and final["role"] == "assistant"
    assert final["content"] == engine.chat(history, "你是助手。", **settings).text  # greedy: the same reply
    texts = [step[-1]["content"] for step in steps]
    assert len(texts) > 2 and all(later.startswith(earlier) for earlier, later in zip(texts, texts[1:]))


def test_export_refusals_are_the_cli_messages(tiny_qwen2_dir, tmp_path):
    used = tmp_path / "used"
    used.mkdir()
    (used / "notes.txt").write_text("mine")
    message = run_export(export_config(tiny_qwen2_dir, "", "", str(used), 5.0, "auto", False))
    assert message.startswith("**error:**") and "already holds files (notes.txt)" in message
    assert "overwrite_export_dir" in message and (used / "notes.txt").read_text() == "mine"

    quantized = tmp_path / "quantized"
    shutil.copytree(tiny_qwen2_dir, quantized)
    config = json.loads((quantized / "config.json").read_text())
    (quantized / "config.json").write_text(json.dumps({**config, "quantization_config": {"quant_method": "gptq"}}))
    message = run_export(export_config(str(quantized), "", "", str(tmp_path / "new"), 5.0, "auto", False))
    assert "quantized checkpoint (quant_method=gptq)" in message and not (tmp_path / "new").exists()


def test_export_writes_shards_of_the_chosen_size(tiny_qwen2_dir, tmp_path):
    target = tmp_path / "export"
    message = run_export(export_config(tiny_qwen2_dir, "", "qwen", str(target), 0.01, "float32", False))
    shards = sorted(target.glob("*.safetensors"))
    assert message.startswith("✔") and len(shards) > 1 and f"{len(shards)} safetensors shard(s)" in message
    index = json.loads((target / "model.safetensors.index.json").read_text())
    assert sorted(set(index["weight_map"].values())) == [path.name for path in shards]


@pytest.mark.slow
def test_forgetting_report_in_the_page(tiny_qwen2_dir, lora_adapter_dir, benchmarks_dir, tmp_path):
    config = eval_config(tiny_qwen2_dir, str(lora_adapter_dir), "empty", ["ceval"], str(benchmarks_dir), "law",
                         0, 4, str(tmp_path / "forgetting"), False)
    message, rows, radar, drops = run_evaluation("forgetting", config)
    assert not message.startswith("**error:**"), message
    overall = [row for row in rows if row[1] == "overall"]
    assert overall and overall[0][0] == "ceval" and overall[0][5] == pytest.approx(overall[0][4] - overall[0][3])
    assert radar.endswith("radar.png") and drops.endswith("drops.png")
    with open(radar, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    # the same folder again without the overwrite choice: the CLI's refusal, nothing replaced
    again, rows, _, _ = run_evaluation("forgetting", config)
    assert again.startswith("**error:**") and "already holds files" in again and rows == []


@pytest.mark.slow
def test_benchmark_results_table(tiny_qwen2_dir, benchmarks_dir, tmp_path):
    config = eval_config(tiny_qwen2_dir, "", "empty", ["ceval"], str(benchmarks_dir), "law", 0, 4,
                         str(tmp_path / "eval"), False)
    message, rows, radar, drops = run_evaluation("benchmark", config)
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert rows[0] == ["ceval", "overall", "ceval", None, round(results["overall"]["accuracy"], 4), None]
    assert radar is None and drops is None and message.startswith("✔")


@pytest.mark.slow
def test_classifier_view_gives_label_probabilities(lora_run, tiny_bert_dir):
    out, _, captured = lora_run
    kind, classifier = load_model(model_args(tiny_bert_dir, str(out), "auto"))
    assert kind == "classifier"
    probabilities = classifier.predict(captured.texts[0])["probabilities"]
    assert set(probabilities) == set(classifier.labels) and sum(probabilities.values()) == pytest.approx(1.0)


def test_the_eval_tab_opens_on_the_demo_benchmark_of_the_clone(repo_root):
    from llmtuner.webui.eval_tab import DEMO_TASK_DIR

    # the tab's default tasks (cmmlu, mmlu) are there, in the files' own layout, without ../shared
    assert sorted(path.name for path in (repo_root / DEMO_TASK_DIR).iterdir()) == ["cmmlu", "mmlu"]
