"""Train: python src/train_bash.py <cfg.yaml> [key=value | --key value ...] (also torchrun/deepspeed/accelerate)."""
import sys
from pathlib import Path

try:
    import llmtuner  # noqa: F401
except ImportError:  # a checkout without `pip install -e .`: the package sits next to this file
    sys.path.insert(0, str(Path(__file__).resolve().parent))

if __name__ == "__main__":
    from llmtuner.cli import run_cli
    from llmtuner.train.tuner import run_exp

    sys.exit(run_cli(run_exp))
