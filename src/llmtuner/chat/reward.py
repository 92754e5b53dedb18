"""Scores from a reward model (stage rm): `llmtuner predict` prints one score per response.

A response is scored in the conversation the reward model was trained on: the question (``text``, or a row's
instruction + input) and the response, rendered by the run's chat template (recorded in label_map.json). Rows
with ``chosen``/``rejected`` get both scores, so a preference file can be checked against the model directly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Union

from ..extras.errors import ConfigError, DatasetError
from ..extras.files import write_jsonl_atomically
from .classify import TextClassifier, read_rows, row_text

RESPONSE_KEYS = ("response", "output")


class RewardScorer:
    """A loaded reward model and its template."""

    def __init__(self, classifier: TextClassifier) -> None:
        from ..data.templates import get_template

        self.classifier = classifier
        self.template = get_template(classifier.label_map.template, classifier.tokenizer)

    def score(self, prompt: str, response: str) -> float:
        """The reward of ``response`` to the user turn ``prompt`` (higher is better)."""
        import torch

        pairs = self.template.encode_multiturn(self.classifier.tokenizer, [
            {"role": "user", "content": prompt}, {"role": "assistant", "content": response}])
        ids = [token for source, target in pairs for token in source + target][: self.classifier.max_length]
        model = self.classifier.model
        with torch.inference_mode():
            logits = model(input_ids=torch.tensor([ids], device=next(model.parameters()).device)).logits
        return float(logits[0, 0])

    def score_row(self, row: dict[str, Any], number: int, path: str) -> dict[str, float]:
        prompt = row_text(row, number, path)
        if isinstance(row.get("chosen"), str) and isinstance(row.get("rejected"), str):
            return {"chosen_score": self.score(prompt, row["chosen"]),
                    "rejected_score": self.score(prompt, row["rejected"])}
        response = next((row[key] for key in RESPONSE_KEYS if isinstance(row.get(key), str)), None)
        if response is None:
            raise DatasetError(f"Row {number} of {path} has no response to score (keys: {', '.join(map(str, row))}).",
                               "Give each row an output (or response) field, or chosen and rejected fields.")
        return {"score": self.score(prompt, response)}


def points_at_reward_model(argv: Union[dict[str, Any], list[str], None]) -> bool:
    """True when the last adapter (or the model folder) is a stage rm run; reads only its label_map.json."""
    from ..hparams.parser import read_args
    from ..hparams.validation import split_list
    from ..model.classifier import LABEL_MAP_FILE, LabelMap

    values = read_args(argv)
    folder = (split_list(values.get("adapter_name_or_path")) or [values.get("model_name_or_path")])[-1]
    path = Path(str(folder or "")).expanduser() / LABEL_MAP_FILE
    return bool(folder) and path.is_file() and LabelMap.load(path).is_reward_model


def run_reward_predict(argv: Union[dict[str, Any], list[str], None] = None) -> int:
    """``llmtuner predict`` on a reward model: ``text=Q response=A`` prints ``{"score": ...}``;
    ``input_file``/``output_file`` writes every row with its score(s) as JSON lines."""
    from ..hparams.parser import get_predict_args

    model_args, data_args, finetuning_args, _, options = get_predict_args(argv)
    if options.input_file:
        read_rows(options.input_file)  # a bad input file fails before the model loads
        if Path(options.output_file).exists() and not options.overwrite_output_file:  # so does an existing output
            raise ConfigError(f"output_file={options.output_file} already exists.",
                              "Choose another output_file, or pass overwrite_output_file=true to replace it.")
    elif not options.text or not options.response:
        raise ConfigError("A reward model scores a response to a question: pass text=<question> response=<answer>.",
                          "Or pass input_file=<rows with instruction and output, or chosen/rejected> "
                          "output_file=<scores.jsonl>.")
    scorer = RewardScorer(TextClassifier.from_parsed(model_args, data_args, finetuning_args))
    if options.input_file:
        output = Path(options.output_file)
        path = options.input_file
        rows = read_rows(path)
        scored = [{**row, **scorer.score_row(row, number, path)} for number, row in enumerate(rows, start=1)]
        write_jsonl_atomically(output, scored)
        print(f"Wrote {len(scored)} scored rows to {output.resolve()}")
        return 0
    print(json.dumps({"score": scorer.score(options.text, options.response)}, ensure_ascii=False))
    return 0
