"""``llmtuner webui``: 127.0.0.1 by default, and a password keeps the UI closed until it is given."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request

import pytest

from llmtuner.webui.launcher import parse_args

from ..shared_files import require_package
from .driver import start_ui, stop_ui


def test_defaults_listen_on_this_machine_only():
    args = parse_args([])
    assert args.host == "127.0.0.1" and args.port == 7860 and args.password is None


def test_cli_lists_the_command(capsys):
    from llmtuner.cli import main

    assert main(["help"]) == 0
    assert "webui" in capsys.readouterr().out


@pytest.mark.slow
def test_password_is_asked(repo_root, tmp_path, monkeypatch):
    require_package("gradio", "the web UI's packages (pip install -e \".[webui]\")")
    monkeypatch.setenv("LLMTUNER_WEBUI_PASSWORD", "s3cret")
    process, url = start_ui(repo_root, tmp_path / "runs", tmp_path / "webui.log")
    try:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url + "config", timeout=30)
        assert refused.value.code == 401

        def login(password: str) -> dict:
            data = urllib.parse.urlencode({"username": "llmtuner", "password": password}).encode()
            try:
                with urllib.request.urlopen(urllib.request.Request(url + "login", data=data), timeout=30) as reply:
                    return json.loads(reply.read())
            except urllib.error.HTTPError as exc:
                return {"status": exc.code}

        assert login("wrong") == {"status": 400}
        assert login("s3cret") == {"success": True}
    finally:
        stop_ui(process)
