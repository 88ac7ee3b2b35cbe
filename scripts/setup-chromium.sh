#!/usr/bin/env bash
# Installs Debian's chromium for the headless-browser resume test
# (clients/js/test/browser.test.mjs, run by tests/e2e TestResumeJSBrowser).
# Nothing is downloaded outside the distribution's packages: playwright's or
# puppeteer's own browser builds are not used.
#
# Idempotent: does nothing when /usr/bin/chromium exists. Needs root (or
# sudo) to install; without either it says so and exits 1.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1; then
  SUDO=(sudo -n)
else
  echo "setup-chromium: /usr/bin/chromium is missing and this user cannot install packages (run as root: apt-get install -y chromium)" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -q
"${SUDO[@]}" apt-get install -y -q --no-install-recommends chromium
/usr/bin/chromium --version
