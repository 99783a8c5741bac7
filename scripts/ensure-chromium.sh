#!/usr/bin/env bash
# Install headless Chromium + ChromeDriver from Debian packages for the gallery's browser tests.
# Never downloads a browser of its own. Without root (or sudo), it only warns: those tests then skip.
set -u
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-chromium: no apt-get here; gallery browser tests will be skipped" >&2
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "ensure-chromium: not root; install 'chromium chromium-driver' to run the browser tests" >&2
    exit 0
  fi
fi
echo "ensure-chromium: installing chromium and chromium-driver (Debian packages)..." >&2
$SUDO apt-get update -qq >/dev/null 2>&1 || true
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 \
  || echo "ensure-chromium: install failed; gallery browser tests will be skipped" >&2
exit 0
