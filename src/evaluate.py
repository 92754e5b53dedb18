"""Evaluate: python src/evaluate.py <cfg.yaml> [key=value | --key value ...] (task, task_dir, save_dir, n_shot ...)."""
import sys
from pathlib import Path

try:
    import llmtuner  # noqa: F401
except ImportError:  # a checkout without `pip install -e .`: the package sits next to this file
    sys.path.insert(0, str(Path(__file__).resolve().parent))

if __name__ == "__main__":
    from llmtuner.cli import prepare_process, run_cli
    from llmtuner.eval.evaluator import run_eval

    prepare_process()  # under torchrun: quiet ranks other than 0, CPU threads per rank
    sys.exit(run_cli(run_eval))
