"""Train: python src/train_bash.py <cfg.yaml> [key=value | --key value ...] (also torchrun/deepspeed/accelerate)."""
import sys
from pathlib import Path

try:
    import llmtuner  # noqa: F401
except ImportError:  # a checkout without `pip install -e .`: the package sits next to this file
    sys.path.insert(0, str(Path(__file__).resolve().parent))

if __name__ == "__main__":
    from llmtuner.cli import run_cli, run_config

    sys.exit(run_cli(run_config))  # routes curriculum configs and stage eval; everything else is one run
