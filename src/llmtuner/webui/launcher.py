"""``llmtuner webui [--host 127.0.0.1] [--port 7860] [--password ...]``: start the UI server."""

from __future__ import annotations

import argparse
import os
import signal
from typing import Optional

PASSWORD_ENV = "LLMTUNER_WEBUI_PASSWORD"


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="llmtuner webui", description="Start the web UI (Gradio).")
    parser.add_argument("--host", default="127.0.0.1",
                        help="Address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 exposes it, "
                             "set a password then).")
    parser.add_argument("--port", type=int, default=7860, help="Port (default 7860).")
    parser.add_argument("--username", default="llmtuner", help="User name asked with --password (default llmtuner).")
    parser.add_argument("--password", default=None,
                        help=f"Ask for this password before showing the UI (or set {PASSWORD_ENV}, which other "
                             "users of the machine cannot read from the process list).")
    parser.add_argument("--lang", choices=("en", "zh"), default="en", help="Language at start (switchable).")
    parser.add_argument("--runs-dir", default=None, help="Where each run's YAML and log go (saves/webui_runs).")
    parser.add_argument("--stop-timeout", type=float, default=120,
                        help="On Ctrl-C or SIGTERM, seconds to wait for running trainings to save a checkpoint and "
                             "exit before the UI leaves them to finish that on their own (default 120).")
    return parser.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    """Build the app in the current folder and serve it until Ctrl-C or SIGTERM; then each running training gets
    a graceful stop (checkpoint), and what became of it is printed."""
    from ..extras.env import require_package

    args = parse_args(argv)
    require_package("gradio", "gradio", "llmtuner webui")
    from .app import create_app

    password = args.password or os.environ.get(PASSWORD_ENV)
    demo = create_app(".", args.runs_dir, args.lang)
    print(f"llmtuner web UI on http://{args.host}:{args.port}" + (" (password required)" if password else ""),
          flush=True)
    # SIGTERM (a service manager, `kill`) would end Python without running `finally`, orphaning the trainings:
    # make it a KeyboardInterrupt, which Gradio's server loop already turns into a clean shutdown.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        demo.queue().launch(server_name=args.host, server_port=args.port,
                            auth=(args.username, password) if password else None, show_error=True, quiet=True)
    finally:
        signal.signal(signal.SIGTERM, previous)  # a second SIGTERM ends the UI at once; the runs still stop
        for line in demo.llmtuner_context.manager.stop_all(args.stop_timeout):
            print(line, flush=True)
    return 0


def _interrupt(number: int, frame: object) -> None:
    raise KeyboardInterrupt
