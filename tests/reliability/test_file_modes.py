"""Files and folders llmtuner writes get the permissions the user's umask asks for (a teammate on a shared server
can read an exported model), and are written whole or not at all."""

from __future__ import annotations

import os
import stat

import pytest

from llmtuner.extras.errors import ConfigError
from llmtuner.extras.files import check_folder_empty, write_folder_atomically, write_text_atomically


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_folders_and_weights_follow_the_umask(umask_022, tmp_path):
    import torch
    from safetensors.torch import save_file

    def write(staging):
        save_file({"w": torch.zeros(2)}, str(staging / "model.safetensors"))  # safetensors writes 0600
        (staging / "sub").mkdir()

    target = write_folder_atomically(tmp_path / "export", write)  # the staging folder is a mkdtemp (0700)
    assert _mode(target) == 0o755 and _mode(target / "sub") == 0o755
    assert _mode(target / "model.safetensors") == 0o644
    text = write_text_atomically(tmp_path / "notes" / "a.json", "{}")  # mkstemp creates 0600
    assert _mode(text) == 0o644 and text.read_text() == "{}"
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".")], "no temporary left behind"


def test_a_stricter_umask_is_kept(tmp_path):
    previous = os.umask(0o077)
    try:
        target = write_folder_atomically(tmp_path / "private", lambda staging: (staging / "f").write_text("x"))
    finally:
        os.umask(previous)
    assert _mode(target) == 0o700 and _mode(target / "f") == 0o600


def test_one_folder_check_names_the_flag(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    assert check_folder_empty(tmp_path / "new", False, "save_dir", "overwrite_save_dir") == tmp_path / "new"
    assert check_folder_empty(tmp_path / "full", True, "save_dir", "overwrite_save_dir") == tmp_path / "full"
    with pytest.raises(ConfigError) as info:
        check_folder_empty(tmp_path / "full", False, "export_dir", "overwrite_export_dir")
    assert info.value.message == f"export_dir={tmp_path / 'full'} already holds files (x)."
    assert "overwrite_export_dir: true" in info.value.hint
