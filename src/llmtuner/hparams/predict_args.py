"""The options of ``llmtuner predict`` (a stage cls classifier labelling texts, or a stage rm reward model scoring
responses), parsed like every argument."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from ..extras.errors import ConfigError


@dataclass
class PredictArguments:
    """One ``text``, or ``input_file`` -> ``output_file`` (JSON lines); neither = interactive."""

    text: Optional[str] = field(default=None, metadata={"help": "One text to label (prints one JSON result); for a "
                                                         "reward model, the question whose response is scored."})
    response: Optional[str] = field(default=None, metadata={"help": "Reward models (stage rm): the response to "
                                                                 "`text` to score."})
    input_file: Optional[str] = field(
        default=None, metadata={"help": "Rows to label: JSON list, JSON lines, CSV with a header, or text lines."})
    output_file: Optional[str] = field(default=None, metadata={"help": "Where the labelled rows go (JSON lines)."})
    batch_size: int = field(default=32, metadata={"help": "Texts per forward pass."})
    overwrite_output_file: bool = field(default=False, metadata={"help": "Replace an existing output_file."})

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"batch_size={self.batch_size!r} is not a positive whole number.",
                              "Set e.g. batch_size=32.")
        if bool(self.input_file) != bool(self.output_file):
            raise ConfigError("input_file and output_file go together.",
                              "Pass both: input_file=<rows to classify> output_file=<predictions.jsonl>.")
        if self.text and self.input_file:
            raise ConfigError("Pass either text or input_file, not both.", "Classify one text, or one file.")
