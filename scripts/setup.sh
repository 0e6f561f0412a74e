#!/usr/bin/env bash
# Set up everything the project needs on a fresh machine: Chromium for the web sources, a virtual
# environment in .venv with the pinned Python packages, and the project itself in editable mode.
# Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian's packages, installed only when missing (a fresh CI machine), as root or through sudo:
# headless Chromium and its driver for the web sources (Selenium drives it), and the PostgreSQL
# server that the tuning tests start (studies shared by several workers).
MISSING=()
if ! command -v chromium >/dev/null || [ ! -x /usr/bin/chromedriver ]; then
    MISSING+=(chromium chromium-driver)
fi
if ! compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null; then
    MISSING+=(postgresql)
fi
if [ ${#MISSING[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    echo "setup: installing ${MISSING[*]} (apt-get)"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${MISSING[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
# 3.11.5: the oldest Python that every pinned package accepts (soupsieve 4.1 needs it; Debian 12's
# own python3 is 3.11.2). Another interpreter can be named: PYTHON=python3.12 make run.
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11, 5))'; then
    echo "setup: Python 3.11.5 or newer is needed; $PYTHON is $("$PYTHON" --version 2>&1)" \
         "(set PYTHON=/path/to/python3.x to use another)" >&2
    exit 1
fi

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# The constraints file pins every package (torch's CPU build above all: an unpinned torch pulls
# several GB of CUDA libraries).
.venv/bin/python -m pip install --quiet --disable-pip-version-check \
    -r requirements.txt -c constraints.txt
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
echo "setup: done (.venv ready; activate it with 'source .venv/bin/activate')"
