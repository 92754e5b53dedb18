"""Every bad input in tests/bad_inputs/cases.yaml fails the real entry point cleanly and writes nothing.

Clean means: exit status 2, exactly one ``error:`` and one ``hint:`` line that together hold the expected
fragments, no traceback; nothing written means no output_dir and no change to the corpus folder (its data files,
registries, models and earlier runs), so no cache files next to the user's data either. Cases that do not need
torch run with torch made unimportable, which proves they fail before anything imports it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from .conftest import run

CORPUS = Path(__file__).resolve().parents[1] / "bad_inputs"
CASES = yaml.safe_load((CORPUS / "cases.yaml").read_text(encoding="utf-8"))["cases"]


def _snapshot(folder: Path) -> dict[str, tuple]:
    """Every file and folder under ``folder`` with its size and modification time."""
    return {str(path.relative_to(folder)): (path.is_dir(), path.stat().st_size, path.stat().st_mtime_ns)
            for path in sorted(folder.rglob("*"))}


def _fill(value, placeholders: dict[str, str]):
    if isinstance(value, str):
        for key, replacement in placeholders.items():
            value = value.replace(key, replacement)
        return value
    if isinstance(value, dict):
        return {key: _fill(item, placeholders) for key, item in value.items()}
    if isinstance(value, list):
        return [_fill(item, placeholders) for item in value]
    return value


def test_corpus_has_at_least_40_distinct_cases():
    ids = [case["id"] for case in CASES]
    assert len(ids) >= 40 and len(set(ids)) == len(ids)
    for case in CASES:
        assert case["expect"] and ("config" in case) != ("file" in case), case["id"]


@pytest.mark.parametrize("case", CASES, ids=[case["id"] for case in CASES])
def test_bad_input_fails_cleanly_and_writes_nothing(case, tiny_qwen2_dir, tmp_path):
    out = tmp_path / "out"
    if "file" in case:
        config = CORPUS / case["file"]
    else:
        placeholders = {"@MODEL@": str(tiny_qwen2_dir), "@OUT@": str(out), "@CORPUS@": str(CORPUS)}
        config = tmp_path / "config.yaml"
        config.write_text(yaml.safe_dump(_fill(case["config"], placeholders), allow_unicode=True), encoding="utf-8")
    hide = tuple(case.get("hide", ())) + (() if case.get("needs_torch") else ("torch",))
    corpus_before, model_before = _snapshot(CORPUS), _snapshot(Path(tiny_qwen2_dir))

    result = run([str(config), *case.get("args", [])], hide=hide, entry=case.get("entry", "train_bash"))

    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr + result.stdout, result.stderr[-3000:]
    lines = result.stderr.splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    hints = [line for line in lines if line.startswith("hint: ")]
    assert len(errors) == 1 and len(hints) == 1, result.stderr[-3000:]
    message = "\n".join(lines[lines.index(errors[0]):])
    for fragment in case["expect"]:
        assert fragment in message, f"{fragment!r} not in:\n{message}"
    assert not out.exists(), sorted(p.name for p in out.iterdir())
    assert _snapshot(CORPUS) == corpus_before
    assert _snapshot(Path(tiny_qwen2_dir)) == model_before
