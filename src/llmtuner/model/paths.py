"""Is this a local model / adapter folder? Checked from the file system alone, before torch is imported.

Offline first: llmtuner never downloads, so a path that is not a local folder gets an error saying how to fetch it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

from ..extras.errors import ConfigError, ModelError

ADAPTER_CONFIG = "adapter_config.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_DOWNLOAD_EXAMPLE = "Qwen/Qwen2.5-0.5B-Instruct"


def check_local_folder(path: Optional[str], what: str = "model_name_or_path") -> Path:
    """Return ``path`` as an existing local folder, or explain that llmtuner never downloads."""
    if path is None:
        raise ConfigError(f"{what} is not set.", f"Set {what} to a local folder holding the model.")
    folder = Path(path).expanduser()
    if folder.is_dir():
        return folder
    if folder.exists():
        raise ModelError(f"{what}={path!r} is a file, not a folder.", f"Set {what} to the folder that holds it.")
    tiny = re.fullmatch(r"tiny-(qwen2|qwen3|llama|bert)", folder.name) if what == "model_name_or_path" else None
    if tiny:  # the demo configs' model: built locally, never downloaded
        raise ModelError(
            f"{what}={path!r} does not exist yet: it is the tiny demo model, built locally on first use.",
            f"Build it with `llmtuner make-tiny-model --arch {tiny.group(1)} --out {path}` "
            f"(`bash run_sft.sh` does this for models/tiny-qwen2), then run the command again.",
        )
    # "org/name" whose "org" is no local folder is a Hub id; "models/name" beside an existing models/ is a typo.
    looks_like_hub_id = bool(_HUB_ID.match(path)) and not folder.parent.is_dir()
    example = path if looks_like_hub_id else _DOWNLOAD_EXAMPLE
    reason = " (it looks like a Hugging Face Hub id)" if looks_like_hub_id else ""
    raise ModelError(
        f"{what}={path!r} is not a local folder{reason}; llmtuner never downloads models.",
        f"Download the model first (e.g. `huggingface-cli download {example} --local-dir "
        f"models/{example.split('/')[-1]}`) and pass its path.",
    )


def check_model_path(path: Optional[str], what: str = "model_name_or_path") -> Path:
    """Validate that ``path`` is a local model folder with a config and a tokenizer, without importing torch."""
    folder = check_local_folder(path, what)
    if not (folder / "config.json").is_file():
        raise ModelError(
            f"{what}={path!r}: the folder {folder} has no config.json, so it is not a transformers model folder.",
            "Point it at the folder that holds config.json, the *.safetensors weights and the tokenizer files.",
        )
    has_tokenizer = any((folder / name).is_file() for name in TOKENIZER_FILES) or any(folder.glob("vocab.*"))
    if not has_tokenizer:
        raise ModelError(
            f"{what}={path!r}: the folder {folder} has no tokenizer files "
            f"({', '.join(TOKENIZER_FILES)} or vocab.*).",
            "Copy the tokenizer files of the base model into the folder (save_pretrained writes them).",
        )
    return folder


def check_adapter_path(path: str) -> Path:
    """Validate that ``path`` is a local PEFT adapter folder (adapter_config.json), without importing torch."""
    folder = check_local_folder(path, "adapter_name_or_path")
    if not (folder / ADAPTER_CONFIG).is_file():
        raise ModelError(
            f"adapter_name_or_path={path!r}: the folder {folder} has no {ADAPTER_CONFIG}, so it is not a PEFT adapter.",
            "Point it at the output_dir of a LoRA run (it holds adapter_config.json and adapter_model.safetensors).",
        )
    return folder
