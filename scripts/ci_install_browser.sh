#!/usr/bin/env bash
# Install headless Chromium, its driver and a CJK font (Chinese labels in screenshots) for the web UI's browser
# tests (tests/webui/test_browser.py) and scripts/webui_screenshots.py. Idempotent: does nothing when all
# are there.
#
# Debian/Ubuntu only: it runs apt-get with the Debian package names `chromium`, `chromium-driver` and
# `fonts-wqy-microhei` (on Ubuntu `chromium` is a snap wrapper; elsewhere install Chromium and a matching
# chromedriver by hand). As root (uid 0, e.g. in a container) apt-get runs directly; otherwise through sudo,
# which must then be installed and allowed for this user.
set -euo pipefail

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 \
        && [ -d /usr/share/fonts/truetype/wqy ]; then
    echo "chromium, chromedriver and a CJK font are installed."
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: apt-get not found; this script installs the Debian packages chromium chromium-driver" \
         "fonts-wqy-microhei." >&2
    echo "hint: install Chromium and a matching chromedriver with your system's package manager." >&2
    exit 2
fi
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
        echo "error: not root and sudo is not installed." >&2
        echo "hint: run this script as root, or install sudo." >&2
        exit 2
    fi
    SUDO=(sudo)
fi
"${SUDO[@]}" apt-get update -q
DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -q chromium chromium-driver fonts-wqy-microhei
