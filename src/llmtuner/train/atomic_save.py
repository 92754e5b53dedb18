"""How checkpoints are written: each ``checkpoint-<step>`` folder appears complete or not at all.

transformers 5.23's ``Trainer._save_checkpoint`` writes the weights, optimizer, scheduler, RNG states and
``trainer_state.json`` one after another straight into ``checkpoint-<step>``, so a kill while saving leaves a
folder that ``get_last_checkpoint`` (and a person) takes for a checkpoint. ``AtomicCheckpointMixin`` lets the
Trainer write the folder under ``<output_dir>/.incomplete-checkpoints/`` and renames it into place once every
process has finished; a rename within one file system is atomic, so a kill leaves either the old set of
checkpoints or the new one. A partial folder left in the staging area is removed by the next save of that step.
"""

from __future__ import annotations

import os
import shutil
from typing import Any, Optional

from ..extras.resume_points import CHECKPOINT_PREFIX, STAGING_DIR, TRAINER_STATE, list_checkpoints
from ..extras.files import apply_umask
from ..extras.logging import get_logger

logger = get_logger(__name__)

# Trainer pickles its arguments into every checkpoint; nothing reads them back, and run_args.yaml records them.
_PICKLED_ARGS = "training_args.bin"


class AtomicCheckpointMixin:
    """Put before a ``transformers.Trainer`` class: checkpoints are staged, then renamed into place."""

    _staging_root: Optional[str] = None

    def _get_output_dir(self, trial: Any) -> str:
        # While a checkpoint is being written, the Trainer's run folder is the staging folder.
        return self._staging_root or super()._get_output_dir(trial)

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        from transformers.trainer_utils import rotate_checkpoints

        run_dir = super()._get_output_dir(trial)
        staging_root = os.path.join(run_dir, STAGING_DIR)
        name = f"{CHECKPOINT_PREFIX}-{self.state.global_step}"
        staged, final = os.path.join(staging_root, name), os.path.join(run_dir, name)
        if self.args.should_save:
            shutil.rmtree(staged, ignore_errors=True)  # left behind by a run killed while saving this step
        self.accelerator.wait_for_everyone()
        self._staging_root = staging_root
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._staging_root = None
        # Every rank writes into the checkpoint (RNG states, DeepSpeed shards): rename only when all are done.
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            self._point_best_checkpoint_at(staged, final)
            _remove_if_present(os.path.join(staged, _PICKLED_ARGS))
            apply_umask(staged)  # safetensors writes 0600 and the staging folder may be stricter than the umask
            _publish(staged, final)
            _remove_if_empty(staging_root)
            # The Trainer rotated inside the staging folder, where only the new checkpoint lives.
            rotate_checkpoints(
                output_dir=run_dir,
                save_total_limit=self.args.save_total_limit,
                best_model_checkpoint=self.state.best_model_checkpoint,
                use_mtime=True,
            )
        self.accelerator.wait_for_everyone()

    def _point_best_checkpoint_at(self, staged: str, final: str) -> None:
        """The Trainer recorded the staged path as the best checkpoint when this step is the best one."""
        best = self.state.best_model_checkpoint
        if best and os.path.abspath(best) == os.path.abspath(staged):
            self.state.best_model_checkpoint = final
            self.state.save_to_json(os.path.join(staged, TRAINER_STATE))


def remove_replaced_checkpoints(output_dir: str) -> list[str]:
    """Delete the checkpoints of the earlier run in an ``output_dir`` that ``overwrite_output_dir`` starts over.

    Left in place they would be mixed with the new run's: a later ``resume_from_checkpoint: auto`` would pick an
    old checkpoint whose step is higher than the new run's latest. Returns the folder names removed.
    """
    removed = [path.name for path in list_checkpoints(output_dir)]
    for name in removed:
        shutil.rmtree(os.path.join(output_dir, name))
    shutil.rmtree(os.path.join(output_dir, STAGING_DIR), ignore_errors=True)
    if removed:
        logger.warning(f"overwrite_output_dir: removed the earlier run's checkpoints in {output_dir}: "
                       f"{', '.join(removed)}.")
    return removed


def _publish(staged: str, final: str) -> None:
    if os.path.exists(final):  # the same step of an earlier attempt: swap it out, then delete it
        replaced = f"{staged}.replaced"
        shutil.rmtree(replaced, ignore_errors=True)
        os.replace(final, replaced)
        os.replace(staged, final)
        shutil.rmtree(replaced)
    else:
        os.replace(staged, final)
    _fsync_dir(os.path.dirname(final))


def _fsync_dir(path: str) -> None:
    """Make the rename itself durable (a power cut right after must not bring back the staged name)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot fsync a directory; the rename is still atomic
    finally:
        os.close(fd)


def _remove_if_present(path: str) -> None:
    if os.path.isfile(path):
        os.remove(path)


def _remove_if_empty(path: str) -> None:
    try:
        os.rmdir(path)
    except OSError:
        pass  # holds a partial checkpoint of another step: the save of that step removes it
