"""How llmtuner writes files: whole or not at all, with the permissions the user's umask asks for, and never
into a folder that holds other files unless the user said to overwrite.

- ``write_text_atomically`` / ``write_folder_atomically``: written under a temporary sibling name, then renamed
  into place (a rename within one file system is atomic), so a crash never leaves half a file or folder.
- ``apply_umask``: temporary folders (``mkdtemp``) are created 0700 and safetensors writes its files 0600 whatever
  the umask; on a shared server a teammate could not read an exported model. Every folder llmtuner publishes
  gets 0777 & ~umask and every file 0666 & ~umask (executables keep their x bits), as ``mkdir``/``open`` would.
- ``check_folder_empty``: the one "folder must be empty unless overwrite" rule, naming the flag that allows it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence, Union

from .errors import ConfigError

PathLike = Union[str, "os.PathLike[str]"]


def current_umask() -> int:
    """The process's umask (read by setting it and putting it straight back; there is no read-only call)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(path: PathLike) -> None:
    """Give ``path`` (and everything under it, for a folder) the modes a plain mkdir/open would have given."""
    mask = current_umask()
    root = Path(path)
    if not root.exists():
        return
    _chmod(root, mask)
    if root.is_dir():
        for folder, dirs, files in os.walk(root):
            for name in dirs + files:
                _chmod(Path(folder) / name, mask)


def _chmod(path: Path, mask: int) -> None:
    if path.is_symlink():
        return
    mode = path.stat().st_mode
    if path.is_dir():
        wanted = 0o777 & ~mask
    else:
        wanted = (0o777 if mode & 0o111 else 0o666) & ~mask
    if mode & 0o777 != wanted:
        os.chmod(path, wanted)


def write_text_atomically(path: PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to a temporary sibling, then rename it to ``path``; returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding=encoding) as sink:
            sink.write(text)
        apply_umask(temporary)  # mkstemp creates 0600
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return path



def write_jsonl_atomically(path: PathLike, rows: Iterable[dict]) -> Path:
    """One JSON object per line (UTF-8, not escaped), written whole or not at all; returns ``path``."""
    return write_text_atomically(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))

def write_file_atomically(path: PathLike, write: Callable[[Path], None]) -> Path:
    """Run ``write(temporary_path)`` (e.g. ``figure.savefig``), then rename the result to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(handle)
    try:
        write(Path(temporary))
        apply_umask(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return path


def write_folder_atomically(target: PathLike, write: Callable[[Path], None]) -> Path:
    """Run ``write(staging_dir)`` in a sibling temporary folder, then rename it to ``target`` (replacing what was
    there); the published folder and its files get the umask's permissions. Returns ``target``."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        write(staging)
        apply_umask(staging)
        if target.is_dir() and any(target.iterdir()):
            retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent)) / target.name
            os.replace(target, retired)
            os.replace(staging, target)
            shutil.rmtree(retired.parent, ignore_errors=True)
        else:
            os.replace(staging, target)  # rename(2) replaces an empty directory in one step
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def check_folder_empty(path: PathLike, overwrite: bool, name: str, overwrite_flag: str,
                       only: Optional[Sequence[str]] = None) -> Path:
    """``path`` as a Path when it is absent, an empty folder, or ``overwrite`` is set.

    Raises ConfigError naming the argument (``name``) and the flag that allows replacing (``overwrite_flag``) when
    it is a file or a folder that holds files (with ``only``: one of those files, e.g. an earlier report's, so
    a report can be written beside other things).
    """
    folder = Path(path).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{name}={path} is a file, not a folder.", f"Choose a folder path for {name}.")
    if folder.is_dir() and not overwrite:
        entries = sorted(entry.name for entry in folder.iterdir() if only is None or entry.name in only)
        if entries:
            shown = ", ".join(entries[:4]) + (", ..." if len(entries) > 4 else "")
            raise ConfigError(f"{name}={path} already holds files ({shown}).",
                              f"Choose a new {name}, or set {overwrite_flag}: true to replace its contents.")
    return folder
