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


# What a command may need beyond the core install: (import name, pip name) per use, named in the error.
SERVE_PACKAGES = (("fastapi", "fastapi"), ("uvicorn", "uvicorn"), ("pydantic", "pydantic"))
GENERATION_METRIC_PACKAGES = (("jieba", "jieba"), ("rouge_chinese", "rouge-chinese"), ("nltk", "nltk"))
CLASSIFICATION_METRIC_PACKAGES = (("sklearn", "scikit-learn"),)
SCORING_METRIC_PACKAGES = (("scipy", "scipy"),)
EXTRA_OF = {"fastapi": "serve", "uvicorn": "serve", "pydantic": "serve", "jieba": "metrics",
            "rouge-chinese": "metrics", "nltk": "metrics", "scikit-learn": "metrics", "scipy": "metrics"}


def require_packages(needs: list[tuple[str, tuple[tuple[str, str], ...]]]) -> None:
    """One check for everything a command will use: ``needs`` = [(what for, ((import name, pip name), ...))].

    Raises ``DependencyError`` naming every missing package at once, with one ``pip install`` command for all of
    them (and the llmtuner extra that holds them), so a user installs once instead of once per failure.
    """
    missing: dict[tuple[str, str], list[str]] = {}  # (import name, pip name) -> what needs it
    for needed_for, packages in needs:
        for package in packages:
            if not is_package_available(package[0]):
                uses = missing.setdefault(package, [])
                if needed_for not in uses:
                    uses.append(needed_for)
    if not missing:
        return
    uses = list(dict.fromkeys(use for uses in missing.values() for use in uses))
    pip_names = list(dict.fromkeys(pip_name for _, pip_name in missing))
    extras = sorted({EXTRA_OF[name] for name in pip_names if name in EXTRA_OF})
    also = (f" (or, in the llmtuner folder: pip install '.[{','.join(extras)}]')"
            if all(name in EXTRA_OF for name in pip_names) else "")
    names = ", ".join(f"`{import_name}`" for import_name, _ in missing)
    raise DependencyError(f"{names} {'is' if len(missing) == 1 else 'are'} needed for {'; '.join(uses)}.",
                          f"Install {'it' if len(pip_names) == 1 else 'them'} with: pip install {' '.join(pip_names)}"
                          f"{also}")


def require_package(import_name: str, pip_name: str, needed_for: str) -> None:
    """``require_packages`` for one package."""
    require_packages([(needed_for, ((import_name, pip_name),))])


def is_gpu_run(use_cpu: bool = False) -> bool:
    """The one answer to "does this run compute on a CUDA GPU": CUDA is visible and ``use_cpu`` is not set
    (imports torch on first call)."""
    return not use_cpu and has_cuda()


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
