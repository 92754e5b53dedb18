"""Argument dataclasses and the parser that fills them from YAML/JSON files and the command line."""

from .data_args import DataArguments
from .finetuning_args import FinetuningArguments
from .generating_args import GeneratingArguments
from .model_args import ModelArguments

__all__ = ["DataArguments", "FinetuningArguments", "GeneratingArguments", "ModelArguments"]
