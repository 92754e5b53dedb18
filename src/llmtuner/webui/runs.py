"""Training runs started by the UI: each is ``python -m llmtuner.cli train <yaml>`` in its own process.

The UI never trains in its own process, so it stays responsive and a crash in training (out of memory, a bad
dataset row) ends that run only. The run's YAML and console output are kept in ``<runs_dir>/<run id>/``; the loss
comes from the ``trainer_log.jsonl`` the training writes into its output_dir. Stop sends SIGINT, which the training
turns into "save a checkpoint after this step and exit" (train/signals.py).

Each training runs in its own session (process group): a Ctrl-C in the UI's terminal, or a SIGTERM sent to the
UI's group, reaches the UI only, which then sends each run exactly one stop signal. Were the runs in the UI's
group they would get two (the terminal's and the UI's), and the second means "stop at once without saving".
"""

from __future__ import annotations

import datetime
import json
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..extras.constants import TRAINER_LOG
from .config import config_yaml, train_command

CONFIG_FILE, CONSOLE_FILE = "train.yaml", "console.log"


@dataclass
class Run:
    """One training subprocess and where its files are."""

    run_id: str
    folder: Path  # holds train.yaml and console.log
    output_dir: Path
    process: subprocess.Popen
    stop_requested: bool = field(default=False)

    @property
    def config_path(self) -> Path:
        return self.folder / CONFIG_FILE

    @property
    def console_path(self) -> Path:
        return self.folder / CONSOLE_FILE

    @property
    def status(self) -> str:
        """running, stopping, finished, stopped (a checkpoint was saved) or failed (exit code N)."""
        code = self.process.poll()
        if code is None:
            return "stopping" if self.stop_requested else "running"
        if code == 0:
            return "finished"
        if self.stop_requested and code == 128 + signal.SIGINT:
            return "stopped"
        return f"failed (exit code {code})"

    def stop(self) -> None:
        """Ask for a graceful stop (SIGINT: checkpoint after the current step, then exit)."""
        if self.process.poll() is None:
            self.stop_requested = True
            self.process.send_signal(signal.SIGINT)

    def console_tail(self, max_chars: int = 6000) -> str:
        try:
            text = self.console_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return text[-max_chars:]

    def loss_rows(self) -> list[dict[str, Any]]:
        return read_loss(self.output_dir)


def read_loss(output_dir: str | Path) -> list[dict[str, Any]]:
    """``{"step", "loss", "kind"}`` rows (kind: train / eval) from a run's trainer_log.jsonl, in file order.

    Lines cut short by a write in progress are skipped; the next refresh reads them whole.
    """
    rows: list[dict[str, Any]] = []
    try:
        lines = (Path(output_dir) / TRAINER_LOG).read_text(encoding="utf-8").splitlines()
    except OSError:
        return rows
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        for key, kind in (("loss", "train"), ("eval_loss", "eval")):
            if isinstance(record.get(key), (int, float)):
                rows.append({"step": record.get("current_steps", 0), "loss": float(record[key]), "kind": kind})
    return rows


class RunManager:
    """Starts, lists and stops the UI's training runs (any number; each keeps its own folder)."""

    def __init__(self, runs_dir: str | Path, workdir: str | Path = ".") -> None:
        self.runs_dir = Path(runs_dir)
        self.workdir = Path(workdir)
        self._runs: dict[str, Run] = {}
        self._lock = threading.Lock()

    def start(self, config: dict[str, Any]) -> Run:
        """Write the config to ``<runs_dir>/<run id>/train.yaml`` and start training it in a subprocess.

        The config must have passed ``check_train_config``; its output_dir rules are the CLI's, so a folder that
        holds a run is only reused with overwrite_output_dir or resume_from_checkpoint set in the config.
        """
        from ..extras.errors import ConfigError

        output_dir = Path(config["output_dir"])
        if not output_dir.is_absolute():
            output_dir = self.workdir / output_dir
        with self._lock:  # two clicks at once must not start two runs into one folder
            if output_dir.resolve() in self.active_output_dirs():
                raise ConfigError(f"output_dir={config['output_dir']} is the folder of a run that is still training.",
                                  "Choose another output_dir, or stop that run first.")
            run_id = self._new_id()
            folder = self.runs_dir / run_id
            folder.mkdir(parents=True)
            (folder / CONFIG_FILE).write_text(config_yaml(config), encoding="utf-8")
            with open(folder / CONSOLE_FILE, "wb") as console:
                process = subprocess.Popen(
                    [sys.executable, *train_command(folder.resolve() / CONFIG_FILE)],
                    cwd=self.workdir, stdout=console, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    start_new_session=True,  # signals to the UI's group do not reach it (module docstring)
                )
            run = Run(run_id, folder, output_dir, process)
            self._runs[run_id] = run
        return run

    def get(self, run_id: Optional[str]) -> Optional[Run]:
        return self._runs.get(run_id or "")

    def runs(self) -> list[Run]:
        """Newest first."""
        return sorted(self._runs.values(), key=lambda run: run.run_id, reverse=True)

    def table(self) -> list[list[str]]:
        """Rows of the runs list: id, status, output folder, config file."""
        return [[run.run_id, run.status, str(run.output_dir), str(run.config_path)] for run in self.runs()]

    def active_output_dirs(self) -> set[Path]:
        return {run.output_dir.resolve() for run in self._runs.values() if run.process.poll() is None}

    def stop_all(self, timeout: float = 120) -> list[str]:
        """Ask every running training for a graceful stop and wait up to ``timeout`` seconds for all to save
        their checkpoint and exit; returns one line per such run saying what became of it (a run still saving
        then is named with its process id and log, and ends by itself)."""
        running = [run for run in self.runs() if run.process.poll() is None]
        for run in running:
            run.stop()
        deadline = time.monotonic() + timeout
        lines = []
        for run in running:
            try:
                run.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                lines.append(f"run {run.run_id}: still saving its checkpoint into {run.output_dir} (pid "
                             f"{run.process.pid}); it stops by itself, its log is {run.console_path}")
                continue
            checkpoints = sorted(run.output_dir.glob("checkpoint-*"), key=lambda path: path.stat().st_mtime)
            where = f", last checkpoint {checkpoints[-1]}" if checkpoints else ""
            lines.append(f"run {run.run_id}: {run.status}{where} (log: {run.console_path})")
        return lines

    def _new_id(self) -> str:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        run_id, number = stamp, 1
        while run_id in self._runs or (self.runs_dir / run_id).exists():
            number += 1
            run_id = f"{stamp}-{number}"
        return run_id
