"""The ``curriculum:`` block of a config: the stages a curriculum trains in order (train/curriculum.py runs them).

Parsed like every other argument (hparams/convert.parse_block): unknown keys are named with their closest valid
ones and values get their field's type, so ``learning_rate: 1e-4`` (a string to PyYAML) is a number here too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from ..extras.errors import ConfigError
from .validation import check_choice, split_list

TASK_KEYS = ("dataset", "scoring_dimensions")
# The arguments the curriculum itself gives each stage (train/curriculum.stage_args): not settable in a stage's args.
STAGE_SET_KEYS = (*TASK_KEYS, "dataset_ratios", "num_train_epochs", "learning_rate", "output_dir",
                  "adapter_name_or_path", "model_name_or_path", "curriculum")
_STAGE_NAME = re.compile(r"^[\w\-.]+$")  # letters (any script), digits, _ - . : safe in a folder name


@dataclass
class CurriculumStage:
    """One stage: its tasks (datasets or scoring dimensions), its share of the data, epochs and learning rate."""

    name: str = field(default="", metadata={"help": "The stage's name (its folder is stage_<i>_<name>)."})
    tasks: Union[list[str], str, None] = field(
        default=None, metadata={"help": "The stage's tasks: datasets, or scoring dimensions (task_key)."})
    data_ratio: float = field(default=1.0, metadata={"help": "Share of each task's training rows (dataset_ratios)."})
    epochs: Optional[float] = field(default=None, metadata={"help": "num_train_epochs (default: the config's)."})
    learning_rate: Optional[float] = field(default=None, metadata={"help": "learning_rate (default: the config's)."})
    args: Optional[dict[str, Any]] = field(default=None, metadata={
        "help": "Other arguments of this stage only, e.g. {stage: grpo, reward_funcs: score}: an RL stage after "
                "SFT stages (the stage's other keys and the chained weights still win)."})
    position: int = field(default=0, metadata={"help": "Set by the parser: the stage's number, from 1."})

    def __post_init__(self) -> None:
        where = f"curriculum stage {self.position}"
        if not isinstance(self.name, str) or not _STAGE_NAME.match(self.name):
            raise ConfigError(f"{where} has name={self.name!r}.",
                              "Give it a name made of letters, digits, '_', '-' or '.', e.g. name: basic_scoring.")
        raw_tasks = self.tasks
        self.tasks = split_list(self.tasks) if isinstance(self.tasks, str) else self.tasks
        if not isinstance(self.tasks, list) or not self.tasks or not all(isinstance(t, str) and t for t in self.tasks):
            raise ConfigError(f"{where} ({self.name}) has tasks={raw_tasks!r}.",
                              "List the stage's tasks, e.g. tasks: [competitiveness, innovation].")
        for key in ("data_ratio", "epochs", "learning_rate"):
            value = getattr(self, key)
            if value is not None and not value > 0:
                raise ConfigError(f"{where} ({self.name}): {key}={value!r} is not a positive number.",
                                  "Set a number above 0, e.g. 0.5.")
        if self.args is not None:
            if not isinstance(self.args, dict) or not self.args:
                raise ConfigError(f"{where} ({self.name}) has args={self.args!r}.",
                                  "Give args as a block of arguments, e.g. args: {stage: grpo, reward_funcs: score}.")
            # These come from the stage's own keys or from the chain of stages: an args value would be replaced.
            taken = sorted(set(self.args) & set(STAGE_SET_KEYS))
            if taken:
                raise ConfigError(f"{where} ({self.name}) sets {', '.join(taken)} in args, but the curriculum sets "
                                  "it for each stage.",
                                  "Use the stage's tasks / data_ratio / epochs / learning_rate keys, and leave the "
                                  "output folders and the chained weights to the curriculum.")


@dataclass
class CurriculumArguments:
    """``task_key`` (the argument each stage's tasks go to) and the ``stages``, in training order."""

    stages: list[Any] = field(default_factory=list, metadata={"help": "The stages, in training order."})
    task_key: str = field(default="dataset", metadata={"help": "Where each stage's tasks go: dataset or "
                                                              "scoring_dimensions."})

    def __post_init__(self) -> None:
        check_choice("curriculum task_key", self.task_key, TASK_KEYS)
        if not isinstance(self.stages, list) or not self.stages:
            raise ConfigError("`curriculum:` must hold a non-empty list of `stages`.",
                              "Write curriculum: {stages: [{name: basic, tasks: [a, b], data_ratio: 0.3, epochs: 1}]}")
        self.stages = [stage if isinstance(stage, CurriculumStage) else parse_stage(position, stage)
                       for position, stage in enumerate(self.stages, start=1)]
        names = [stage.name for stage in self.stages]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ConfigError(f"Curriculum stage name(s) used twice: {', '.join(repeated)}.",
                              "Give each stage its own name.")


def parse_stage(position: int, raw: Any) -> CurriculumStage:
    from .convert import parse_block

    return parse_block(CurriculumStage, raw, f"curriculum stage {position}", fixed={"position": position})


def parse_curriculum_block(block: Any) -> CurriculumArguments:
    """The ``curriculum:`` value (a block with ``stages``, or just the list of stages) as arguments."""
    from .convert import parse_block

    if isinstance(block, list):
        block = {"stages": block}
    return parse_block(CurriculumArguments, block, "curriculum")
