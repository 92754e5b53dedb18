"""Facts about the environment: optional packages, CUDA, library versions.

Nothing here imports torch at module level, so the CLI's ``help`` and ``version`` stay fast.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import platform

from .errors import DependencyError

# Distribution names shown by `llmtuner version`; optional ones print "not installed" when missing.
_REPORTED_DISTRIBUTIONS = (
    "torch",
    "transformers",
    "peft",
    "trl",
    "datasets",
    "accelerate",
    "tokenizers",
    "safetensors",
    "deepspeed",
    "bitsandbytes",
    "flash-attn",
)


def is_package_available(import_name: str) -> bool:
    """True if ``import_name`` can be imported, found without importing it (no heavy side effects)."""
    try:
        return importlib.util.find_spec(import_name) is not None
    except (ImportError, ValueError):  # a missing parent package, or a module without __spec__
        return False


def require_package(import_name: str, pip_name: str, needed_for: str) -> None:
    """Raise ``DependencyError`` naming the pip package when an option needs a package that is missing."""
    if not is_package_available(import_name):
        raise DependencyError(
            f"`{import_name}` is needed for {needed_for}.", f"Install it with: pip install {pip_name}"
        )


def has_cuda() -> bool:
    """True if torch sees a CUDA device (imports torch on first call)."""
    import torch

    return torch.cuda.is_available()


def library_versions() -> dict[str, str]:
    """Versions of llmtuner, python and the libraries it builds on, read from package metadata (no imports)."""
    versions = {"llmtuner": _distribution_version("llmtuner"), "python": platform.python_version()}
    versions.update({name: _distribution_version(name) for name in _REPORTED_DISTRIBUTIONS})
    return versions


def _distribution_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"
