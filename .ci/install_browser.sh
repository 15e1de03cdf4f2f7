#!/usr/bin/env bash
# The browser test's browser: Debian's chromium and chromedriver (tests/browser.py). Does nothing when both are
# on PATH; installs them with apt-get when run as root; otherwise says what to install and fails.
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
    exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
    exit 0
fi
echo "The browser test needs chromium and chromedriver: install them (Debian/Ubuntu, as root:" \
     "apt-get install chromium chromium-driver) and run make test again." >&2
exit 1
