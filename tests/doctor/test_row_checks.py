"""The doctor's row checks (template, masks, special tokens, data mix): each passes on the default job and the
presets, fails on a case built to break it, and reports the number it found."""

from __future__ import annotations

import dataclasses
import json

import pytest

from llmtuner.data.preprocess.supervised import count_trained_tokens
from llmtuner.train.doctor import data_mix_check, masks_check, special_tokens_check, template_check
from llmtuner.train.doctor.masks_check import encoded, keeping_cutoff
from llmtuner.train.doctor.runner import ROW_CHECK_MODULES, build_context, run_checks

from .conftest import REPO_ROOT


def by_title(checks: list, title: str):
    return next(check for check in checks if check.title == title)


# --- template -------------------------------------------------------------------------------------------------

def test_template_passes_on_the_tiny_qwen2_model_with_the_qwen_template(doctor_context):
    [check] = template_check.run(doctor_context(rows=6))
    assert (check.status, check.value) == ("pass", "6/6")


def test_template_compares_qwen3_with_thinking_on_and_off(doctor_context, tiny_qwen3_dir):
    ctx = doctor_context(rows=4, model_dir=tiny_qwen3_dir, template="qwen3")
    [check] = template_check.run(ctx)
    assert (check.status, check.value) == ("pass", "8/8")  # 4 rows, each rendered with thinking on and off


def test_template_one_token_off_the_models_jinja_fails_and_shows_the_first_difference(doctor_context):
    ctx = doctor_context(rows=3)
    # our replies lose the "\n" after <|im_end|>: one token fewer than the model's Jinja renders
    ctx.template = dataclasses.replace(ctx.template, assistant_format="{content}<|im_end|>")
    [check] = template_check.run(ctx)
    assert (check.status, check.value) == ("fail", "0/3")
    first = check.details["differences"][0]
    assert first["model"] == repr("\n") and first["ours"] != first["model"]
    assert first["context"].endswith("<|im_end|>") and first["lengths"][1] - first["lengths"][0] == 1
    assert "first difference at token" in check.message


# --- masks ------------------------------------------------------------------------------------------------------

def test_masks_report_the_trained_share_and_no_cut_answer_on_the_default_job(doctor_context):
    ctx = doctor_context(rows=8)
    printed = []
    ctx.progress = printed.append
    share, cut, dropped = masks_check.run(ctx)
    stats = count_trained_tokens([kept[1] for kept, _ in encoded(ctx, "sft_demo_zh_en").pairs()])
    assert share.status == "pass" and share.value == round(stats["trained_tokens"] / stats["tokens"], 4)
    assert (cut.status, cut.value, dropped.status, dropped.value) == ("pass", "0/8", "pass", "0/8")
    # the first example as `llmtuner train` prints it: the prompt masked, the reply and <|im_end|> trained
    assert printed[0].startswith("First training example (masked spans are not trained):\n[MASKED: <|im_start|>")
    assert share.details["first_example"] in printed[0] and "<|im_end|>" in share.details["first_example"]


def test_masks_a_cutoff_that_cuts_most_answers_fails_and_names_the_cutoff_that_keeps_99_percent(doctor_context):
    ctx = doctor_context(rows=8, cutoff_len=48)
    share, cut, _ = masks_check.run(ctx)
    full_lengths = [len(full[0]) for _, full in encoded(ctx, "sft_demo_zh_en").pairs()]
    cut_count = int(cut.value.split("/")[0])
    assert cut.status == "fail" and cut_count > 4
    assert cut.details["cutoff_keeping_99%"] == keeping_cutoff(full_lengths) == max(full_lengths)  # 8 rows: all
    assert f"cutoff_len: {max(full_lengths)}" in cut.fix


def test_masks_some_answers_cut_warn(doctor_context):
    ctx = doctor_context(rows=8)
    lengths = sorted(len(full[0]) for _, full in encoded(ctx, "sft_demo_zh_en").pairs())
    ctx = doctor_context(rows=8, cutoff_len=lengths[-2])  # cuts the longest row or two, not most
    _, cut, _ = masks_check.run(ctx)
    assert cut.status == "warn" and 0 < int(cut.value.split("/")[0]) <= 4


def test_masks_count_rows_the_converter_drops_with_its_reason(doctor_context, tmp_path):
    rows = [{"instruction": "Say hi.", "output": "Hi!"}, {"instruction": "Say nothing.", "output": ""},
            {"instruction": "Say bye.", "output": "Bye!"}]
    (tmp_path / "rows.json").write_text(json.dumps(rows), encoding="utf-8")
    (tmp_path / "dataset_info.json").write_text(json.dumps({"three": {"file_name": "rows.json"}}), encoding="utf-8")
    _, _, dropped = masks_check.run(doctor_context(rows=8, dataset="three", dataset_dir=str(tmp_path)))
    assert dropped.status == "warn" and dropped.value == "0/2 + converter drops"
    assert "dropped 1 of 3 rows" in dropped.message and "1 × empty assistant turn (row 2)." in dropped.message


# --- special tokens -----------------------------------------------------------------------------------------------

def test_special_tokens_pass_on_the_default_job(doctor_context):
    eot, pad, no_pad = special_tokens_check.run(doctor_context(rows=6))
    assert (eot.status, eot.value, eot.details["end_of_turn"]) == ("pass", "6/6", "<|im_end|> (151645)")
    assert pad.status == "pass" and "differs from eos" in pad.message
    assert no_pad.status == "pass" and no_pad.value.startswith("0/")


def test_special_tokens_pad_equal_to_eos_is_harmless_when_padding_labels_are_masked(doctor_context):
    ctx = doctor_context(rows=6)
    ctx.tokenizer.pad_token = ctx.tokenizer.eos_token
    _, pad, no_pad = special_tokens_check.run(ctx)
    assert (pad.status, no_pad.status) == ("pass", "pass") and "harmless" in pad.message


def test_special_tokens_pad_equal_to_eos_with_unmasked_pads_fails(doctor_context, monkeypatch):
    from llmtuner.data import collator

    ctx = doctor_context(rows=6)
    ctx.tokenizer.pad_token = ctx.tokenizer.eos_token
    # a collator that pads the labels with the pad id (instead of -100), as naive ones do
    monkeypatch.setattr(collator, "IGNORE_INDEX", ctx.tokenizer.pad_token_id)
    _, pad, no_pad = special_tokens_check.run(ctx)
    padded = no_pad.details["padded_positions"]
    assert padded > 0 and (pad.status, no_pad.status, no_pad.value) == ("fail", "fail", f"{padded}/{padded}")
    assert "pad is eos <|im_end|> (151645)" in pad.message


def test_special_tokens_an_end_of_turn_token_generation_does_not_stop_at_fails(doctor_context):
    ctx = doctor_context(rows=4)
    ctx.tokenizer.eos_token = "<|endoftext|>"
    ctx.template = dataclasses.replace(ctx.template, stop_words=())
    eot = special_tokens_check.run(ctx)[0]
    assert eot.status == "fail" and "is not among the stop ids" in eot.message


# --- data mix ------------------------------------------------------------------------------------------------------

MIX = {"dataset": "sft_demo_zh_en,medical_alpaca", "val_size": 0.1}


def test_data_mix_interleave_probabilities_pass_within_sampling_error(doctor_context):
    [check] = data_mix_check.run(doctor_context(mix_strategy="interleave_under", interleave_probs="0.9,0.1", **MIX))
    shares = {item["dataset"]: item for item in check.details["shares"]}
    assert check.status == "pass" and shares["sft_demo_zh_en"]["asked"] == 0.9
    assert abs(shares["medical_alpaca"]["realised"] - 0.1) <= shares["medical_alpaca"]["tolerance"]
    assert check.value == round(abs(shares["medical_alpaca"]["realised"] - 0.1), 4)


def test_data_mix_interleaving_that_ignores_the_probabilities_fails(doctor_context, monkeypatch):
    from llmtuner.data import loader

    real = loader.mix_datasets
    monkeypatch.setattr(loader, "mix_datasets", lambda parts, strategy, probabilities, seed: real(
        parts, strategy, None, seed))  # broken: equal turns whatever the config asks
    [check] = data_mix_check.run(doctor_context(mix_strategy="interleave_under", interleave_probs="0.9,0.1", **MIX))
    shares = {item["dataset"]: item["realised"] for item in check.details["shares"]}
    assert check.status == "fail" and shares == {"sft_demo_zh_en": 0.5, "medical_alpaca": 0.5}
    assert check.value == 0.4


def test_data_mix_dataset_ratios_pass_and_fail_when_the_ratio_is_not_applied(doctor_context, monkeypatch):
    from llmtuner.data import loader

    [check] = data_mix_check.run(doctor_context(dataset_ratios="0.5,1.0", **MIX))
    rows = {item["dataset"]: (item["rows"], item["asked_rows"]) for item in check.details["shares"]}
    assert check.status == "pass" and rows == {"sft_demo_zh_en": (36, 36.5), "medical_alpaca": (27, 27.0)}
    monkeypatch.setattr(loader, "_draw_samples", lambda dataset, num_samples, seed: dataset)  # ratio ignored
    [check] = data_mix_check.run(doctor_context(dataset_ratios="0.5,1.0", **MIX))
    assert check.status == "fail" and "sft_demo_zh_en 73 rows = 73.0% (asked 57.5%, 36.5 rows)" in check.message


# --- the sample configs ------------------------------------------------------------------------------------------

SAMPLE_CONFIGS = ["configs/sft_lora_tiny.yaml", *sorted(
    str(path.relative_to(REPO_ROOT)) for path in (REPO_ROOT / "configs" / "presets").glob("*.yaml"))]


@pytest.mark.parametrize("config", SAMPLE_CONFIGS)
def test_row_checks_pass_on_the_default_job_and_every_preset(config, tiny_qwen2_dir, tmp_path):
    args = [str(REPO_ROOT / config), f"model_name_or_path={tiny_qwen2_dir}", f"dataset_dir={REPO_ROOT / 'data'}",
            f"output_dir={tmp_path / 'run'}"]
    ctx, note = build_context(args, rows=8)
    checks = run_checks(ctx, ROW_CHECK_MODULES, progress=lambda text: None)
    assert not [(check.name, check.title, check.message) for check in checks if check.status in ("fail", "warn")]
    has_curriculum = "\ncurriculum:" in (REPO_ROOT / config).read_text(encoding="utf-8")
    assert ("curriculum: stage 1" in note) is has_curriculum  # a curriculum is checked on its first stage
