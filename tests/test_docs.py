"""The docs are executable: every shell block of README.md and docs/*.md is either run here or marked an example.

A block is marked on the line right before its fence: `<!-- run -->` (run by test_run_blocks, in order, on a fresh
copy of the repository with no ../shared beside it, offline, on the CPU) or `<!-- example: REASON -->` (not run;
REASON names what a fresh clone on a CPU lacks: a GPU, a real checkpoint, the downloaded benchmarks, several
machines, internet ...; see EXAMPLE_NEEDS).

A run block must also do what its page says: CLAIMS lists, per page and block, the files the page says the block
writes, text the page quotes from its output, the exit status of a block that shows an error, and the loss the
page says falls. Each page starts from a fresh copy (with the tiny model the quick start builds), so a page trains
what its later blocks need itself, briefly.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHELL_LANGUAGES = {"bash", "sh", "console", "shell"}
RUN, EXAMPLE = re.compile(r"^<!-- run -->$"), re.compile(r"^<!-- example: (\S.*?) ?-->$")
BLOCK_TIMEOUT_S = 900  # the slowest block trains the tiny model for a minute or two on a loaded 2-core CPU

# What an example block may need that a fresh clone on a CPU does not have (its reason names one of these).
EXAMPLE_NEEDS = re.compile(
    r"\b(a (CUDA )?GPU|\d+ GPUs|several GPUs|several machines|a real checkpoint|the downloaded benchmarks|internet"
    r"|runs the test suite itself|a timing benchmark)\b")


@dataclass(frozen=True)
class Claim:
    """What a page says about one of its run blocks, checked after the block ran."""

    files: tuple[str, ...] = ()  # paths in the copy the page says the block writes (glob patterns allowed)
    output: tuple[str, ...] = ()  # text the page quotes from the block's output (stdout or stderr)
    exit_code: int = 0  # a block that shows an error exits with the CLI's 2
    loss: tuple[str, float, float, float, float] | None = None  # a trainer_log.jsonl: first in [a, b], last in [c, d]
    # (JSON file, dotted key, low, high): a number it reports; of a .jsonl log, the first row with that key
    values: tuple[tuple[str, str, float, float], ...] = ()


def quoted_output(page: str, first_line: str) -> tuple[str, ...]:
    """The lines of the page's plain fenced block that begins with first_line: output the page quotes verbatim."""
    text = (REPO_ROOT / page).read_text(encoding="utf-8")
    start = text.index(f"```\n{first_line}") + 4
    return tuple(text[start:text.index("\n```", start)].splitlines())


# page -> {text that occurs in exactly one run block of the page: what the page says that block does}
CLAIMS: dict[str, dict[str, Claim]] = {
    "README.md": {
        "bash run_sft.sh": Claim(
            files=("saves/tiny-qwen2/lora/sft/adapter_model.safetensors", "saves/tiny-qwen2/lora/sft/training_loss.png",
                   "saves/tiny-qwen2/lora/sft/run_args.yaml", "models/tiny-qwen2/config.json"),
            loss=("saves/tiny-qwen2/lora/sft/trainer_log.jsonl", 11.0, 12.2, 3.5, 5.0)),  # "about 11.6 to 4.2"
        "sft-r16": Claim(files=("saves/tiny-qwen2/lora/sft-r16/adapter_model.safetensors",
                                "saves/tiny-qwen2/lora/sft-flags/adapter_model.safetensors",
                                "saves/tiny-qwen2/lora/pt-short/adapter_model.safetensors")),
    },
    "docs/after-training.md": {
        "export_dir=models/tiny-qwen2-data-platform": Claim(files=tuple(
            f"models/tiny-qwen2-data-platform/{name}" for name in (
                "model*.safetensors", "config.json", "chat_template.jinja", "generation_config.json", "README.md",
                "run_args.yaml", "tokenizer.json"))),
        "AutoModelForCausalLM.from_pretrained": Claim(output=("Qwen2ForCausalLM", "<|im_start|>assistant")),
        "src/export_model.py": Claim(files=("models/merged/model*.safetensors", "models/merged/config.json")),
        "data_platform_pred": Claim(files=tuple(
            f"saves/tiny-qwen2/{run}/{name}" for run in ("lora/data_platform_pred", "data_platform_predict")
            for name in ("generated_predictions.jsonl", "predict_results.json"))),
        "llmtuner test": Claim(
            files=tuple(f"saves/tiny-qwen2/lora/data_platform/test_results/{name}"
                        for name in ("test_results.json", "test_results.md", "test_predictions.jsonl")),
            output=("overall",),  # "10.51% micro on the test file (3 of 32 rows)": a label it always answers
            values=(("saves/tiny-qwen2/lora/data_platform/test_results/test_results.json", "overall.correct", 3, 3),)),
    },
    "docs/evaluation.md": {
        "saves/eval/demo": Claim(files=tuple(f"saves/eval/demo/{task}/{name}" for task in ("cmmlu", "mmlu")
                                             for name in ("results.json", "predictions.jsonl", "results.md"))),
        "configs/eval_tiny.yaml": Claim(output=quoted_output("docs/evaluation.md", "error: task_dir=benchmarks")),
    },
    "docs/forgetting.md": {
        "llmtuner forgetting": Claim(files=tuple(
            f"saves/forgetting/{run}/{name}" for run in ("demo", "compare")
            for name in ("forgetting.json", "forgetting.md", "radar.png", "drops.png"))
            + ("saves/forgetting/demo/before/cmmlu/results.json", "saves/forgetting/demo/after/mmlu/results.json")),
    },
    "docs/scoring-evaluation.md": {
        "stage_3_full_scoring": Claim(files=(
            "saves/risk_scoring/lora/curriculum/curriculum_summary.json",
            "saves/risk_scoring/lora/curriculum/stage_*/scoring_test/scoring_results.json",
            *(f"saves/risk_scoring/test_stage_3/{name}" for name in (
                "scoring_results.json", "scoring_results.md", "scoring_predictions.jsonl", "scoring_scatter.png",
                "scoring_histograms.png", "scoring_correlations.png")))),
        "--compare": Claim(files=("saves/risk_scoring/compare/scoring_compare.json",
                                  "saves/risk_scoring/compare/scoring_compare.md",
                                  "saves/risk_scoring/compare/compare_*.png")),
        "question_scenario.json": Claim(
            files=tuple(f"saves/tiny-bert/{name}" for name in (
                "predictions.jsonl", "predictions_metrics.json", "predictions_metrics.md",
                "predictions_confusion_matrix.png")),
            values=(("saves/tiny-bert/predictions_metrics.json", "accuracy", 0.9, 1.0),)),  # the trained task
    },
    "docs/preference.md": {
        "medical_kto max_steps=2": Claim(files=tuple(
            f"saves/medical/lora/{stage}/{name}" for stage in ("dpo", "kto", "rm")
            for name in ("adapter_model.safetensors", "trainer_log.jsonl", "training_loss.png",
                         "training_rewards.png"))),
        "merged-dpo": Claim(
            files=("saves/medical/merged-dpo/model*.safetensors", "saves/medical/merged-dpo/config.json"),
            # "measures rewards against the SFT model, so rewards/* start at exactly 0"
            values=(("saves/medical/lora/dpo/trainer_log.jsonl", "rewards/chosen", 0.0, 0.0),
                    ("saves/medical/lora/dpo/trainer_log.jsonl", "rewards/rejected", 0.0, 0.0))),
        "rm_scores.jsonl": Claim(files=("saves/medical/rm_scores.jsonl",)),
    },
    "docs/doctor.md": {
        "the built-in default job": Claim(
            files=("saves/tiny-qwen2/lora/sft-doctor/doctor.json", "saves/tiny-qwen2/lora/sft-doctor/doctor.md"),
            output=("PASS  template: our template renders the ids of the model's own chat template",
                    "PASS  masks: answers cut by cutoff_len", "PASS  data_mix: each dataset's share of an epoch")),
        "cutoff_len=24": Claim(exit_code=1, files=("saves/doctor-cut/doctor.json", "saves/doctor-cut/doctor.md"),
                               output=("FAIL  masks: answers cut by cutoff_len", "fix: Set cutoff_len: ")),
    },
    "docs/classification.md": {
        "cls-type": Claim(
            files=tuple(f"saves/tiny-bert/lora/{run}/{name}" for run in ("cls", "cls-type") for name in (
                "adapter_model.safetensors", "label_map.json", "classification_report.json",
                "confusion_matrix.png", "trainer_log.jsonl", "run_args.yaml")),
            output=('"predicted_label"', '"probabilities"'),
            values=(("saves/tiny-bert/lora/cls/classification_report.json", "accuracy", 0.9, 0.93),)),  # 0.917
    },
    "docs/forgetting-aware.md": {
        "saves/replay_demo": Claim(files=("saves/replay_demo/forgetting_watch.json",
                                          "saves/replay_demo/forgetting_watch.png")),
        "--param lora_rank": Claim(files=tuple(
            f"saves/{sweep}/{name}" for sweep in ("rank_sweep", "grid_sweep", "replay_sweep")
            for name in ("sweep.json", "sweep.md", "sweep.png"))
            + ("saves/grid_sweep/lora_rank_4__learning_rate_*/adapter_model.safetensors",
               "saves/grid_sweep/lora_rank_8__learning_rate_*/adapter_model.safetensors")),
    },
    "docs/presets.md": {
        "medicl": Claim(exit_code=2, output=(
            "error: unknown preset 'medicl' for stage sft (no ",
            "hint: available presets: chinese_capability chinese_capability_replay data_platform data_platform_grpo "
            "gsm8k_grpo medical medical_dpo medical_full medical_kto medical_qlora medical_rm risk_scoring "
            "risk_scoring_grpo; or pass a path to a YAML config.")),
        "run_sft.sh data_platform": Claim(files=("saves/data_platform/lora/sft/adapter_model.safetensors",)),
        "run_sft.sh risk_scoring": Claim(files=(
            "saves/risk_scoring/lora/curriculum/stage_3_full_scoring/adapter_model.safetensors",
            "saves/risk_scoring/lora/curriculum/curriculum_summary.json")),
        "run_pt.sh medical": Claim(files=tuple(f"saves/medical/{run}/{name}" for run in (
            "lora/pt", "lora/sft", "qlora/sft") for name in ("adapter_model.safetensors", "run_args.yaml"))
            + ("saves/medical/full/sft/model*.safetensors",)),
        "chinese_capability_forgetting": Claim(files=(
            "saves/chinese_capability/lora/sft/adapter_model.safetensors",
            *(f"saves/chinese_capability/forgetting/{name}"
              for name in ("forgetting.json", "forgetting.md", "radar.png", "drops.png")))),
    },
    "docs/rl.md": {
        "gsm8k_grpo max_steps=4": Claim(files=tuple(
            f"saves/gsm8k/lora/grpo/stage_2_grpo/{name}" for name in (
                "adapter_model.safetensors", "rollouts.jsonl", "training_rewards.png", "trainer_log.jsonl"))
            + tuple(f"saves/risk_scoring/lora/curriculum_grpo/stage_4_grpo/{name}" for name in (
                "adapter_model.safetensors", "rollouts.jsonl", "scoring_test/scoring_results.json"))),
    },
    "docs/scale.md": {
        "qlora/sft": Claim(files=("saves/tiny-qwen2/qlora/sft/adapter_model.safetensors",)),
        "NPROC=2": Claim(files=("saves/tiny-qwen2/lora/sft/adapter_model.safetensors",
                                "saves/tiny-z3/model*.safetensors",
                                "saves/tiny-ddp/adapter_model.safetensors")),
    },
    "docs/strategies.md": {
        "llmtuner curriculum": Claim(files=("saves/risk_curriculum/curriculum_summary.json",
                                            "saves/risk_curriculum/curriculum_loss.png",
                                            "saves/risk_curriculum/stage_3_full_scoring/adapter_model.safetensors"),
                                     output=("Curriculum summary", "1. basic_scoring", "3. full_scoring")),
        "--ratios": Claim(files=tuple(f"saves/data_platform/ratio_sweep/{name}" for name in (
            "sweep.json", "sweep.md", "sweep.png", "ratio_*/adapter_model.safetensors"))),
    },
    "docs/serving.md": {
        "tiny-qwen3": Claim(output=("401 without the key", '"chat.completion"', "chat.completion.chunk",
                                    "data: [DONE]", "text_completion", "Application shutdown complete")),
        "/v1/classify": Claim(output=("predicted_label", "probabilities")),
    },
    "docs/webui.md": {
        "llmtuner webui --port": Claim(output=('"title":"llmtuner"',)),
    },
}


@dataclass
class ShellBlock:
    path: Path
    line: int  # of the opening fence, counted from 1
    marker: str  # "run", "example" or "" (unmarked)
    code: str
    reason: str = ""  # an example's REASON

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO_ROOT)}:{self.line}"


def doc_files() -> list[Path]:
    return [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]


def shell_blocks(path: Path) -> list[ShellBlock]:
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, index = [], 0
    while index < len(lines):
        fence = re.match(r"^(```+|~~~+)\s*([\w-]*)", lines[index])
        if not fence:
            index += 1
            continue
        end = next((j for j in range(index + 1, len(lines)) if lines[j].startswith(fence.group(1))), len(lines))
        if fence.group(2).lower() in SHELL_LANGUAGES:
            before = lines[index - 1].strip() if index else ""
            example = EXAMPLE.match(before)
            marker = "run" if RUN.match(before) else "example" if example else ""
            blocks.append(ShellBlock(path, index + 1, marker, "\n".join(lines[index + 1:end]),
                                     example.group(1) if example else ""))
        index = end + 1
    return blocks


def page_name(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT))


def claims_by_block(path: Path) -> dict[int, Claim]:
    """The page's claims keyed by the line of the run block each one names."""
    run_blocks = [block for block in shell_blocks(path) if block.marker == "run"]
    found = {}
    for key, claim in CLAIMS.get(page_name(path), {}).items():
        matching = [block for block in run_blocks if key in block.code]
        assert len(matching) == 1, f"{page_name(path)}: claim key {key!r} names {len(matching)} run blocks, not 1"
        found[matching[0].line] = claim
    return found


def test_every_shell_block_is_marked_run_or_example():
    unmarked = [block.where for path in doc_files() for block in shell_blocks(path) if not block.marker]
    assert not unmarked, (
        "shell blocks without `<!-- run -->` or `<!-- example: REASON -->` on the line right before the fence: "
        + ", ".join(unmarked))


def test_every_example_names_what_it_needs():
    vague = [f"{block.where} ({block.reason})" for path in doc_files() for block in shell_blocks(path)
             if block.marker == "example" and not EXAMPLE_NEEDS.search(block.reason)]
    assert not vague, ("an example block is kept from running only for what a fresh clone on a CPU lacks "
                       f"({EXAMPLE_NEEDS.pattern}); run these or say which of those they need: " + ", ".join(vague))


def test_every_claim_names_one_run_block():
    pages = {page_name(path): path for path in doc_files()}
    assert set(CLAIMS) <= set(pages), set(CLAIMS) - set(pages)
    for name in CLAIMS:
        claims_by_block(pages[name])  # asserts each key names exactly one run block


def test_the_quick_start_job_is_run_and_the_install_is_not():
    readme = shell_blocks(REPO_ROOT / "README.md")
    assert readme[0].marker == "example" and "pip install" in readme[0].code
    assert "--index-url https://download.pytorch.org/whl/cpu" in readme[0].code  # the CPU build, not the CUDA one
    assert readme[1].marker == "run" and readme[1].code.strip() == "bash run_sft.sh"


def fresh_copy(destination: Path) -> Path:
    """The files git would put in a clone (tracked, plus new files not ignored), without models/ or saves/."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO_ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = REPO_ROOT / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    return destination


def block_env(copy: Path, home: Path) -> dict[str, str]:
    venv_bin = str(Path(sys.executable).parent)
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTEST", "LLMTUNER", "CUDA"))}
    env.update({
        "PATH": f"{venv_bin}{os.pathsep}{env.get('PATH', '')}",
        "PYTHONPATH": str(copy / "src"),  # the copy's code, whatever the venv has installed
        "HOME": str(home), "HF_HOME": str(home / "hf"), "HF_DATASETS_CACHE": str(home / "datasets"),
        "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "offline",
        "MPLBACKEND": "Agg", "CUDA_VISIBLE_DEVICES": "",
    })
    return env


def check_claim(claim: Claim, copy: Path, block: ShellBlock, result: subprocess.CompletedProcess) -> None:
    shown = (f"{block.where}:\n{block.code}\n--- stdout ---\n{result.stdout[-4000:]}"
             f"\n--- stderr ---\n{result.stderr[-4000:]}")
    assert result.returncode == claim.exit_code, f"exited {result.returncode}, not {claim.exit_code}: {shown}"
    missing = [pattern for pattern in claim.files if not list(copy.glob(pattern))]
    assert not missing, f"the page says the block writes {missing}: {shown}"
    output = result.stdout + result.stderr
    unseen = [text for text in claim.output if text not in output]
    assert not unseen, f"the page quotes {unseen} from the output: {shown}"
    if claim.loss:
        log, first_low, first_high, last_low, last_high = claim.loss
        losses = [row["loss"] for row in map(json.loads, (copy / log).read_text().splitlines()) if "loss" in row]
        assert first_low <= losses[0] <= first_high and last_low <= losses[-1] <= last_high, (
            f"the page says the loss falls from [{first_low}, {first_high}] to [{last_low}, {last_high}]; "
            f"{log} logged {losses}")
    for file, key, low, high in claim.values:
        text = (copy / file).read_text(encoding="utf-8")
        if file.endswith(".jsonl"):
            value = next(row for row in map(json.loads, text.splitlines()) if key in row)[key]
            key = ""
        else:
            value = json.loads(text)
        for part in filter(None, key.split(".")):
            value = value[part]
        assert low <= value <= high, f"the page says {file} reports {key} in [{low}, {high}], not {value}: {shown}"


def run_block(block: ShellBlock, copy: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run a block in its own process group, its output in files: when bash exits, whatever it left running in the
    background (a server a failing step never stopped) is killed, so a failing block fails at once instead of
    holding the output open until the timeout."""
    import signal
    import tempfile

    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(["bash", "-euo", "pipefail", "-c", block.code], cwd=copy, env=env, text=True,
                                   stdout=out, stderr=err, start_new_session=True)
        try:
            process.wait(timeout=BLOCK_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            err.write(f"\n(timed out after {BLOCK_TIMEOUT_S} s)")
        finally:
            try:
                os.killpg(process.pid, signal.SIGKILL)  # the block's leftovers (background jobs), or all of it
            except ProcessLookupError:
                pass
            process.wait()
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(process.args, process.returncode, out.read(), err.read())


RUNNABLE = [path for path in doc_files() if any(block.marker == "run" for block in shell_blocks(path))]


@pytest.mark.slow
@pytest.mark.parametrize("path", RUNNABLE, ids=[page_name(path) for path in RUNNABLE])
def test_run_blocks_work_on_a_fresh_copy(path, tmp_path, request):
    # A temporary folder holds the copy, so ../shared is not beside it; every page starts from a fresh copy.
    copy = fresh_copy(tmp_path / "llmtuner")
    assert not (copy.parent / "shared").exists()
    if path.name != "README.md":  # the pages build on the quick start, which left the tiny model in models/
        shutil.copytree(request.getfixturevalue("tiny_qwen2_dir"), copy / "models" / "tiny-qwen2")
    env = block_env(copy, tmp_path / "home")
    claims = claims_by_block(path)
    for block in shell_blocks(path):
        if block.marker != "run":
            continue
        started = time.monotonic()
        result = run_block(block, copy, env)
        print(f"{block.where}: {time.monotonic() - started:.0f} s")  # shown with -s / on failure: the page's cost
        check_claim(claims.get(block.line, Claim()), copy, block, result)
