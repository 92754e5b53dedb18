"""A stage cls run (tiny BERT + LoRA) served by ``llmtuner api``: POST /v1/classify gives the same labels and
probabilities as the in-process classifier, for one text and for a batch; generation endpoints say what to use."""

from __future__ import annotations

import math
import signal

import httpx
import pytest

from .conftest import REPO_ROOT, start_server

pytestmark = pytest.mark.slow
TEXTS = ["帮我重跑昨天失败的调度任务", "数据仓库的分层是什么意思", "请把这个表的权限开给我"]


@pytest.fixture(scope="module")
def cls_run(tmp_path_factory) -> tuple[str, str]:
    from llmtuner.model.tiny import make_tiny_model
    from llmtuner.train.tuner import run_exp

    root = tmp_path_factory.mktemp("api-cls")
    bert = make_tiny_model("bert", str(root / "bert"))
    output_dir = root / "lora"
    run_exp({"model_name_or_path": bert, "stage": "cls", "finetuning_type": "lora", "dataset": "question_type_cls",
             "dataset_dir": str(REPO_ROOT / "data"), "cutoff_len": 96, "max_steps": 4,
             "per_device_train_batch_size": 8, "learning_rate": 3e-3, "save_strategy": "no", "seed": 42,
             "output_dir": str(output_dir), "disable_tqdm": True})
    return bert, str(output_dir)


@pytest.fixture(scope="module")
def server(cls_run, tmp_path_factory):
    bert, adapter = cls_run
    running = start_server([f"model_name_or_path={bert}", f"adapter_name_or_path={adapter}"],
                           tmp_path_factory.mktemp("api-cls-server") / "server.log")
    yield running
    running.stop(signal.SIGKILL)


def test_classify_matches_the_in_process_classifier(server, cls_run):
    from llmtuner.chat.classify import TextClassifier

    bert, adapter = cls_run
    expected = TextClassifier.from_args({"model_name_or_path": bert, "adapter_name_or_path": adapter}).predict_batch(TEXTS)
    body = httpx.post(f"{server.base_url}/classify", json={"input": TEXTS}, timeout=60).json()
    assert [row["index"] for row in body["data"]] == [0, 1, 2]
    for row, reference in zip(body["data"], expected):
        assert row["predicted_label"] == reference["predicted_label"]
        assert math.isclose(row["confidence"], reference["confidence"], abs_tol=1e-5)
        assert math.isclose(sum(row["probabilities"].values()), 1.0, abs_tol=1e-5)
        assert row["predicted_label"] == max(row["probabilities"], key=row["probabilities"].get)
    one = httpx.post(f"{server.base_url}/classify", json={"input": TEXTS[0]}, timeout=60).json()["data"]
    assert len(one) == 1 and one[0]["predicted_label"] == expected[0]["predicted_label"]


@pytest.mark.parametrize("path, body", [
    ("/classify", {"input": []}),
    ("/classify", {"input": [""]}),
    ("/classify", {"input": "x", "model": "other"}),
    ("/chat/completions", {"model": "lora", "messages": [{"role": "user", "content": "x"}]}),
    ("/completions", {"model": "lora", "prompt": "x"}),
])
def test_classifier_server_refuses_what_it_cannot_do(server, path, body):
    response = httpx.post(f"{server.base_url}{path}", json=body, timeout=60)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["message"]
