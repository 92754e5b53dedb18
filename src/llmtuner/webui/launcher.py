"""``llmtuner webui [--host 127.0.0.1] [--port 7860] [--password ...]``: start the UI server."""

from __future__ import annotations

import argparse
import os
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
    return parser.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    """Build the app in the current folder and serve it until Ctrl-C; running trainings get a graceful stop."""
    from ..extras.env import require_package

    args = parse_args(argv)
    require_package("gradio", "gradio", "llmtuner webui")
    from .app import create_app

    password = args.password or os.environ.get(PASSWORD_ENV)
    demo = create_app(".", args.runs_dir, args.lang)
    print(f"llmtuner web UI on http://{args.host}:{args.port}" + (" (password required)" if password else ""))
    try:
        demo.queue().launch(server_name=args.host, server_port=args.port,
                            auth=(args.username, password) if password else None, show_error=True, quiet=True)
    finally:
        demo.llmtuner_context.manager.stop_all()
    return 0
