#!/usr/bin/env bash
# Debian's chromium for the console's browser tests (tests/test_console_browser.py); Playwright drives it
# with executable_path=/usr/bin/chromium, because Playwright's own browser download cannot work offline.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-noto-cjk >/dev/null
/usr/bin/chromium --version
