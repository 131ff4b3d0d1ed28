#!/usr/bin/env bash
# Installs the headless browser that tests/localize/test_localize_viewer.py drives: Debian's
# `chromium` (and `chromium-driver`, the matching WebDriver, for anyone who prefers Selenium).
#
# Idempotent: does nothing when /usr/bin/chromium is already there. Needs root (or sudo) and
# apt-get, i.e. a Debian or Ubuntu machine or container; CI runs it before `.ci/run`.
#
# The test talks to Chromium over its own DevTools pipe (--remote-debugging-pipe), so no Python
# or npm driver package is needed; nothing is pinned here beyond what the distribution ships.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
    echo "chromium already installed: $(/usr/bin/chromium --version 2>/dev/null || echo /usr/bin/chromium)"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: apt-get not found; install Chromium by hand (the test looks for /usr/bin/chromium," \
         "or the path in \$CHROMIUM)" >&2
    exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends chromium chromium-driver fonts-dejavu-core
/usr/bin/chromium --version
