"""The generation engine on a model that has memorised four rows: prompts, batching, stop tokens, streaming."""

from __future__ import annotations

import pytest

from llmtuner.model.engine import ChatEngine
from llmtuner.hparams import GeneratingArguments

pytestmark = pytest.mark.slow  # a tiny model trained in a subprocess until it memorises rows

QWEN_DEFAULT_SYSTEM = "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>"


def user_turn(row: dict) -> list[dict]:
    """The training prompt of an alpaca row: instruction and input joined by a newline."""
    return [{"role": "user", "content": f"{row['instruction']}\n{row['input']}"}]


def test_left_padded_batch_reproduces_every_memorised_row(memorised_engine, memorised_rows):
    # The four prompts differ in length, so three of them are left-padded in the batch.
    lengths = {len(memorised_engine.encode(user_turn(row))) for row in memorised_rows}
    assert len(lengths) > 1
    responses = memorised_engine.generate_batch([user_turn(row) for row in memorised_rows])
    assert [response.text for response in responses] == [row["output"] for row in memorised_rows]
    tokenizer = memorised_engine.tokenizer
    for response, row in zip(responses, memorised_rows):
        assert response.finish_reason == "stop"  # ended by <|im_end|>, which is not part of the text
        assert response.completion_tokens == len(tokenizer(row["output"], add_special_tokens=False)["input_ids"])
        assert response.prompt_tokens == len(memorised_engine.encode(user_turn(row)))


def test_max_new_tokens_cuts_the_reply(memorised_engine, memorised_rows):
    row = memorised_rows[2]  # the question-answering row: a long reply
    response = memorised_engine.chat(user_turn(row), max_new_tokens=3)
    first_three = memorised_engine.tokenizer(row["output"], add_special_tokens=False)["input_ids"][:3]
    assert response.finish_reason == "length" and response.completion_tokens == 3
    assert response.text == memorised_engine.tokenizer.decode(first_three)


def test_stream_gives_the_same_text_as_chat(memorised_engine, memorised_rows):
    messages = user_turn(memorised_rows[2])
    pieces = list(memorised_engine.stream(messages))
    assert len(pieces) > 1  # streamed, not one block at the end
    assert "".join(pieces) == memorised_engine.chat(messages).text == memorised_rows[2]["output"]


def test_prompt_is_the_training_render_with_the_system_prompt(memorised_engine, memorised_rows):
    messages = user_turn(memorised_rows[0])
    default = memorised_engine.prompt_text(messages)
    assert default.startswith(QWEN_DEFAULT_SYSTEM)
    assert default.endswith(f"{messages[0]['content']}<|im_end|>\n<|im_start|>assistant\n")
    custom = memorised_engine.prompt_text(messages, system="你是数据平台助手。")
    assert custom.startswith("<|im_start|>system\n你是数据平台助手。<|im_end|>\n<|im_start|>user\n")
    engine_with_default = ChatEngine(memorised_engine.model, memorised_engine.tokenizer, memorised_engine.template,
                                     GeneratingArguments(), default_system="你是数据平台助手。")
    assert engine_with_default.prompt_text(messages) == custom


def test_sampling_settings_and_stop_ids_reach_generate(memorised_engine):
    stop_id = memorised_engine.tokenizer.convert_tokens_to_ids("<|im_end|>")
    sampled = ChatEngine(memorised_engine.model, memorised_engine.tokenizer, memorised_engine.template,
                         GeneratingArguments(do_sample=True, temperature=0.5, top_p=0.9, top_k=7,
                                             repetition_penalty=1.3, max_new_tokens=11))
    kwargs = sampled.generate_kwargs()
    assert {key: kwargs[key] for key in ("do_sample", "temperature", "top_p", "top_k", "repetition_penalty",
                                         "max_new_tokens")} == {
        "do_sample": True, "temperature": 0.5, "top_p": 0.9, "top_k": 7, "repetition_penalty": 1.3,
        "max_new_tokens": 11}
    assert kwargs["eos_token_id"] == [stop_id]
    assert kwargs["pad_token_id"] == memorised_engine.tokenizer.pad_token_id
    greedy = memorised_engine.generate_kwargs(max_new_tokens=5)
    assert greedy["do_sample"] is False and greedy["max_new_tokens"] == 5 and "temperature" not in greedy


def test_sampling_draws_different_replies(memorised_engine):
    import torch

    messages = [{"role": "user", "content": "随便说点什么"}]
    replies = set()
    for seed in range(4):
        torch.manual_seed(seed)
        replies.add(memorised_engine.chat(messages, do_sample=True, temperature=5.0, top_k=0, top_p=1.0,
                                          max_new_tokens=6).text)
    assert len(replies) > 1


def test_generate_many_keeps_the_order(memorised_engine, memorised_rows):
    prompts = [memorised_engine.encode(user_turn(row)) for row in reversed(memorised_rows)]
    responses = memorised_engine.generate_many(prompts, batch_size=3, show_progress=False)
    assert [response.text for response in responses] == [row["output"] for row in reversed(memorised_rows)]


def test_missing_adapter_is_refused_before_loading(memorised):
    from llmtuner.extras.errors import ModelError

    bad = "/no/such/adapter"
    with pytest.raises(ModelError) as info:
        ChatEngine.from_args({"model_name_or_path": str(memorised.model_dir), "template": "qwen",
                              "adapter_name_or_path": bad})
    assert info.value.message.startswith(f"adapter_name_or_path={bad!r} is not a local folder")


def test_an_error_while_streaming_reaches_the_caller(memorised_engine, memorised_rows):
    # transformers refuses a streamer with beam search; that happens in the generating thread.
    with pytest.raises(ValueError, match="beam"):
        list(memorised_engine.stream(user_turn(memorised_rows[0]), num_beams=2))


def test_template_is_required(memorised):
    from llmtuner.extras.errors import ConfigError

    with pytest.raises(ConfigError, match="template is not set"):
        ChatEngine.from_args({"model_name_or_path": str(memorised.model_dir)})
