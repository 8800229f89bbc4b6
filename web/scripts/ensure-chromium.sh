#!/usr/bin/env bash
# Installs Debian's chromium for the browser tests when it is missing. Idempotent and quiet:
# prints nothing when chromium is already there. (Never `npx playwright install`: the tests
# drive the system browser through playwright-core.)
set -euo pipefail

CHROMIUM="${CHROMIUM_PATH:-/usr/bin/chromium}"
if [ -x "$CHROMIUM" ]; then
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi

echo "ensure-chromium: installing chromium with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq chromium >/dev/null
if [ ! -x "$CHROMIUM" ]; then
  echo "ensure-chromium: chromium is still missing at $CHROMIUM" >&2
  exit 1
fi
