"""Which checkpoint a run resumes from, the log a resumed run keeps, and what overwrite_output_dir clears."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmtuner.extras.resume_points import (
    STAGING_DIR,
    incomplete_reason,
    latest_checkpoint,
    list_checkpoints,
    resolve_resume_checkpoint,
)
from llmtuner.extras.errors import ConfigError
from llmtuner.train.callbacks import keep_log_until
from llmtuner.train.atomic_save import AtomicCheckpointMixin, remove_replaced_checkpoints


def _checkpoint(output_dir: Path, step: int, state: str | None = "complete") -> Path:
    folder = output_dir / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "adapter_model.safetensors").write_bytes(b"weights")
    if state == "complete":
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    elif state == "cut":
        (folder / "trainer_state.json").write_text('{"global_step": ')
    return folder


@pytest.fixture()
def run_dir(tmp_path: Path) -> Path:
    out = tmp_path / "run"
    _checkpoint(out, 2)
    _checkpoint(out, 10)
    _checkpoint(out, 12, state="cut")
    _checkpoint(out, 14, state=None)
    (out / "trainer_log.jsonl").write_text("")
    return out


def test_latest_complete_checkpoint_skips_incomplete_ones(run_dir):
    assert [path.name for path in list_checkpoints(run_dir)] == ["checkpoint-2", "checkpoint-10", "checkpoint-12",
                                                                 "checkpoint-14"]
    assert latest_checkpoint(run_dir) == run_dir / "checkpoint-10"
    assert "cut short" in incomplete_reason(run_dir / "checkpoint-12")
    assert "has no trainer_state.json" in incomplete_reason(run_dir / "checkpoint-14")


def test_state_of_another_step_is_not_complete(tmp_path):
    folder = _checkpoint(tmp_path, 4)
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": 3}))
    assert incomplete_reason(folder) == "its trainer_state.json does not describe step 4"


def test_resolve_auto_and_paths(run_dir, tmp_path):
    assert resolve_resume_checkpoint(None, run_dir) is None
    assert resolve_resume_checkpoint("auto", run_dir) == str(run_dir / "checkpoint-10")
    assert resolve_resume_checkpoint("AUTO", run_dir) == str(run_dir / "checkpoint-10")
    assert resolve_resume_checkpoint(str(run_dir / "checkpoint-2"), tmp_path / "elsewhere") == str(
        run_dir / "checkpoint-2")
    # Nothing to continue yet: the first launch of a job that always passes `auto`.
    assert resolve_resume_checkpoint("auto", tmp_path / "new") is None
    (tmp_path / "empty").mkdir()
    assert resolve_resume_checkpoint("auto", tmp_path / "empty") is None


def test_resolve_refuses_incomplete_checkpoints_and_names_the_complete_ones(run_dir):
    with pytest.raises(ConfigError) as caught:
        resolve_resume_checkpoint(str(run_dir / "checkpoint-14"), run_dir)
    assert caught.value.message.endswith("is not a complete checkpoint: it has no trainer_state.json (the Trainer "
                                         "writes that file last, so the save did not finish).")
    assert caught.value.hint.startswith("Complete checkpoints beside it: checkpoint-2, checkpoint-10;")


def test_auto_on_a_folder_without_complete_checkpoint(tmp_path):
    out = tmp_path / "run"
    _checkpoint(out, 3, state=None)
    (out / "run_args.yaml").write_text("stage: sft\n")
    with pytest.raises(ConfigError) as caught:
        resolve_resume_checkpoint("auto", out)
    assert "found no complete checkpoint" in caught.value.message
    assert "(incomplete: checkpoint-3)" in caught.value.message
    # With overwrite_output_dir as well, `auto` means: continue if possible, else start over.
    assert resolve_resume_checkpoint("auto", out, overwrite=True) is None


def test_resumed_log_drops_what_the_stopped_run_wrote_after_its_checkpoint(tmp_path):
    log = tmp_path / "trainer_log.jsonl"
    lines = [json.dumps({"current_steps": step, "loss": 1.0 / step}) for step in range(1, 8)]
    log.write_text("\n".join(lines) + "\n" + '{"current_steps": 8, "lo')  # the kill cut the last line short
    keep_log_until(str(log), 5)
    assert [json.loads(line)["current_steps"] for line in log.read_text().splitlines()] == [1, 2, 3, 4, 5]
    assert not (tmp_path / "trainer_log.jsonl.partial").exists()


def test_overwrite_removes_only_the_replaced_runs_checkpoints(run_dir):
    (run_dir / STAGING_DIR / "checkpoint-16").mkdir(parents=True)
    (run_dir / "notes.txt").write_text("mine")
    removed = remove_replaced_checkpoints(str(run_dir))
    assert removed == ["checkpoint-2", "checkpoint-10", "checkpoint-12", "checkpoint-14"]
    assert sorted(path.name for path in run_dir.iterdir()) == ["notes.txt", "trainer_log.jsonl"]


def test_llmtuner_trainer_is_one_class_with_atomic_checkpoints_and_the_chunked_loss():
    from transformers import Seq2SeqTrainer

    from llmtuner.train.chunked_loss import ChunkedLossMixin
    from llmtuner.train.trainer import LlmtunerTrainer, LlmtunerTrainerMixin

    assert issubclass(LlmtunerTrainer, (LlmtunerTrainerMixin, AtomicCheckpointMixin, ChunkedLossMixin, Seq2SeqTrainer))
    order = LlmtunerTrainer.__mro__
    # the mixins come before the Trainer, so their _save_checkpoint / compute_loss are the ones called
    assert order.index(AtomicCheckpointMixin) < order.index(Seq2SeqTrainer)
    assert order.index(ChunkedLossMixin) < order.index(Seq2SeqTrainer)


def test_resuming_from_another_folder_into_a_folder_that_holds_a_run_is_refused(run_dir, tmp_path, tiny_qwen2_dir):
    from llmtuner.hparams.parser import check_train_args_early

    finished = tmp_path / "finished"
    finished.mkdir()
    (finished / "adapter_model.safetensors").write_bytes(b"weights")
    args = {"model_name_or_path": tiny_qwen2_dir, "dataset": "sft_demo_zh_en", "template": "qwen",
            "resume_from_checkpoint": str(run_dir / "checkpoint-10")}
    check_train_args_early({**args, "output_dir": str(run_dir)})  # its own folder: continue
    check_train_args_early({**args, "output_dir": str(tmp_path / "new")})  # a new folder: continue there
    with pytest.raises(ConfigError, match="already holds files"):
        check_train_args_early({**args, "output_dir": str(finished)})


def test_best_checkpoint_recorded_under_the_staging_name_is_pointed_at_the_final_one(tmp_path):
    from transformers import TrainerState

    staged = tmp_path / STAGING_DIR / "checkpoint-4"
    staged.mkdir(parents=True)
    final = tmp_path / "checkpoint-4"

    class Saving(AtomicCheckpointMixin):
        state = TrainerState(global_step=4, best_model_checkpoint=str(staged))

    saving = Saving()
    saving._point_best_checkpoint_at(str(staged), str(final))
    assert saving.state.best_model_checkpoint == str(final)
    assert json.loads((staged / "trainer_state.json").read_text())["best_model_checkpoint"] == str(final)
