"""Evaluation: benchmark accuracy (MMLU, C-Eval, CMMLU, GSM8K), task metrics, and the forgetting report.

- ``benchmarks.py`` reads the benchmarks' original file layouts; ``prompts.py`` builds their k-shot prompts;
  ``choice_likelihood.py`` picks option letters by next-token scores; ``gsm8k.py`` generates and extracts answers;
  ``results.py`` aggregates and writes the results; ``evaluator.py`` runs it all (``llmtuner eval``).
- ``forgetting.py`` compares a base and a tuned model on the same questions (``llmtuner forgetting``).
- ``metrics/`` holds the task metrics used by prediction, the test tool and the sweeps.
"""
