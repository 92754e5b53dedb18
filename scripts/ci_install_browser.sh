#!/usr/bin/env bash
# Install headless Chromium, its driver and a CJK font (Chinese labels in screenshots) for the web UI's browser
# test (tests/webui/test_browser.py) and scripts/webui_screenshots.py. Idempotent: does nothing when all
# are there. Debian/Ubuntu (apt-get); run as root or with sudo.
set -euo pipefail

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 \
        && [ -d /usr/share/fonts/truetype/wqy ]; then
    echo "chromium, chromedriver and a CJK font are installed."
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -q
$SUDO apt-get install -y -q chromium chromium-driver fonts-wqy-microhei
