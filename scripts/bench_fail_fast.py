"""How fast a bad input is reported: every case of tests/bad_inputs/cases.yaml through the real entry point, against
the order of checks before issue 8 (all arguments parsed by transformers first, then the file checks).

    python scripts/bench_fail_fast.py                       # every case, once each (~2 min of CPU on 2 cores)
    python scripts/bench_fail_fast.py --cases misspelt_llmtuner_key,dataset_not_registered --repeats 3

For each case and side, in a fresh process: wall seconds and CPU seconds (user + system of the process) until it
exits with the error. ``now`` is ``python src/train_bash.py <config>``; ``before`` runs get_train_args (which
imports transformers, torch and peft) and then the preflight checks, as run_exp did. Cases marked ``needs torch``
(data contents, TrainingArguments values) are found after the tokenizer loads, as before: they have no ``before``
column. Prints a table; writes JSON (default bench/fail_fast.json).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "bad_inputs"
HIDE_PACKAGES = ROOT / "tests" / "reliability" / "hide_packages"
sys.path.insert(0, str(ROOT / "src"))

BEFORE = """
import sys
from llmtuner.cli import run_cli
from llmtuner.hparams.parser import get_train_args
from llmtuner.train.preflight import preflight_checks

def validate(argv):
    model_args, data_args, _, finetuning_args, _ = get_train_args(argv)
    preflight_checks(model_args, data_args, finetuning_args)

sys.exit(run_cli(validate, sys.argv[1:]))
"""


def _fill(value, placeholders: dict[str, str]):
    if isinstance(value, str):
        for key, replacement in placeholders.items():
            value = value.replace(key, replacement)
        return value
    if isinstance(value, dict):
        return {key: _fill(item, placeholders) for key, item in value.items()}
    return [_fill(item, placeholders) for item in value] if isinstance(value, list) else value


def _timed(command: list[str], hide: list[str]) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, exit status) of one child process; ``hide``: packages made unimportable, as the
    corpus test does for the optional-dependency cases (tests/reliability/hide_packages)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LLMTUNER_DEBUG": ""}
    if hide:
        env["LLMTUNER_TEST_HIDE"] = ",".join(hide)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HIDE_PACKAGES), env.get("PYTHONPATH")]))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, result.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", help="comma-separated case ids (default: all)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per case and side; the median is reported")
    parser.add_argument("--out", default=str(ROOT / "bench" / "fail_fast.json"), help="JSON results file")
    args = parser.parse_args(argv)

    from llmtuner.model.tiny import make_tiny_model

    cases = yaml.safe_load((CORPUS / "cases.yaml").read_text(encoding="utf-8"))["cases"]
    if args.cases:
        wanted = set(args.cases.split(","))
        cases = [case for case in cases if case["id"] in wanted]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model = make_tiny_model("qwen2", os.path.join(tmp, "tiny"))
        for case in cases:
            if "file" in case:
                config = str(CORPUS / case["file"])
            else:
                placeholders = {"@MODEL@": model, "@OUT@": os.path.join(tmp, "out"), "@CORPUS@": str(CORPUS)}
                config = os.path.join(tmp, f"{case['id']}.yaml")
                Path(config).write_text(yaml.safe_dump(_fill(case["config"], placeholders)), encoding="utf-8")
            argv_tail = [config, *case.get("args", [])]
            row = {"case": case["id"], "needs_torch": bool(case.get("needs_torch"))}
            sides = {"now": [sys.executable, "src/train_bash.py", *argv_tail]}
            if not row["needs_torch"]:
                sides["before"] = [sys.executable, "-c", BEFORE, *argv_tail]
            for side, command in sides.items():
                runs = [_timed(command, case.get("hide", [])) for _ in range(args.repeats)]
                row[f"{side}_wall_s"] = round(statistics.median(run[0] for run in runs), 3)
                row[f"{side}_cpu_s"] = round(statistics.median(run[1] for run in runs), 3)
                row[f"{side}_exit"] = runs[-1][2]
            rows.append(row)
            before = (f"before {row['before_wall_s']:6.2f} s wall {row['before_cpu_s']:6.2f} s CPU"
                      if "before_cpu_s" in row else "")
            print(f"{case['id']:<42}{'needs torch' if row['needs_torch'] else '':<13}"
                  f"now {row['now_wall_s']:6.2f} s wall {row['now_cpu_s']:6.2f} s CPU   {before}", flush=True)

    summary = {}
    for group, members in (("fails before torch", [r for r in rows if not r["needs_torch"]]),
                           ("needs torch", [r for r in rows if r["needs_torch"]])):
        if members:
            summary[group] = {"cases": len(members)} | {
                f"{side}_{unit}_median": statistics.median(r[f"{side}_{unit}"] for r in members)
                for side in ("now", "before") for unit in ("wall_s", "cpu_s") if f"{side}_{unit}" in members[0]}
    print("\nmedian per case        cases   now wall   now CPU   before wall   before CPU")
    for group, values in summary.items():
        before = (f"{values['before_wall_s_median']:>14.2f}{values['before_cpu_s_median']:>13.2f}"
                  if "before_cpu_s_median" in values else f"{'-':>14}{'-':>13}")
        print(f"{group:<22}{values['cases']:>6}{values['now_wall_s_median']:>10.2f}{values['now_cpu_s_median']:>10.2f}"
              + before)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"cases": rows, "summary": summary, "cpu_count": os.cpu_count(),
                               "load_average": os.getloadavg()}, indent=2), encoding="utf-8")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
