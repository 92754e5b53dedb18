#!/usr/bin/env bash
# Install headless Chromium and its driver for the web UI's browser test (tests/webui/test_browser.py).
# Idempotent: does nothing when both are already installed. Debian/Ubuntu (apt-get); run as root or with sudo.
set -euo pipefail

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    echo "chromium and chromedriver are installed."
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -q
$SUDO apt-get install -y -q chromium chromium-driver
