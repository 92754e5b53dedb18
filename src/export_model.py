"""Export: python src/export_model.py <cfg.yaml> [key=value | --key value ...] (merge adapters, write safetensors)."""
import sys
from pathlib import Path

try:
    import llmtuner  # noqa: F401
except ImportError:  # a checkout without `pip install -e .`: the package sits next to this file
    sys.path.insert(0, str(Path(__file__).resolve().parent))

if __name__ == "__main__":
    from llmtuner.cli import run_cli
    from llmtuner.model.export import export_model

    sys.exit(run_cli(export_model))
