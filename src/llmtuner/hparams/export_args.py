"""Arguments of ``llmtuner export``: where the merged model goes and how it is written."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from ..extras.errors import ConfigError
from .validation import check_choice, check_range

EXPORT_DTYPES = ("auto", "float32", "float16", "bfloat16")


@dataclass
class ExportArguments:
    """Destination, shard size and precision of an exported (adapter-merged) model."""

    export_dir: Optional[str] = field(
        default=None, metadata={"help": "Folder to write the standalone model to (must be empty or absent)."}
    )
    export_size: float = field(
        default=5, metadata={"help": "Largest safetensors shard, in GB (10^9 bytes); fractions allowed, e.g. 0.5."}
    )
    export_dtype: Literal["auto", "float32", "float16", "bfloat16"] = field(
        default="auto",
        metadata={"help": "Weight dtype of the export: auto = the dtype the base checkpoint was saved in."},
    )
    export_legacy_format: bool = field(
        default=False,
        metadata={"help": "Accepted for LLaMA-Factory configs; must stay false (only safetensors is written)."},
    )
    overwrite_export_dir: bool = field(
        default=False,
        metadata={"help": "Replace the contents of a non-empty export_dir (old name export_overwrite, still "
                  "accepted)."},
    )

    def __post_init__(self) -> None:
        if not self.export_dir:
            raise ConfigError("export_dir is not set.", "Add export_dir: <new folder for the merged model>.")
        check_range("export_size", self.export_size, 0, low_open=True)
        check_choice("export_dtype", self.export_dtype, EXPORT_DTYPES)
        if self.export_legacy_format:
            raise ConfigError(
                "export_legacy_format=true asks for pickled .bin weights, which llmtuner never writes "
                "(transformers 5 saves safetensors only, and pickles can run code when loaded).",
                "Remove export_legacy_format (or set it to false): every loader that reads .bin reads safetensors.",
            )
