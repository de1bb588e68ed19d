#!/usr/bin/env bash
# Idempotent setup: system packages (only when missing) and the project virtualenv.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
# chromium (+ a font for its text) renders the HTML replay report in tests/integration/test_report_html.py;
# gcc + libc6-dev build the optional compiled analytics (scripts/compile_analytics.py, `make compiled`)
APT_PACKAGES=(redis-server redis-tools prometheus prometheus-alertmanager chromium fonts-dejavu-core
              gcc libc6-dev)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e '.[dev,report]'
echo "setup: done ($VENV)"
