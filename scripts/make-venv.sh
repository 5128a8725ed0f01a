#!/usr/bin/env bash
# Create the project's virtualenv: scripts/make-venv.sh PYTHON VENV_DIR.
# Checks for Python >= 3.11; on Debian, as root, installs python3-venv if ensurepip is missing.
set -euo pipefail
python=${1:-python3}
venv=${2:-.venv}

if ! command -v "$python" >/dev/null 2>&1; then
    echo "make-venv: $python not found; Kittiwake needs Python 3.11 or newer" >&2
    exit 1
fi
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "make-venv: $("$python" -V 2>&1) is too old; Kittiwake needs Python 3.11 or newer" >&2
    echo "           (try: make PYTHON=python3.11 ...)" >&2
    exit 1
fi
if ! "$python" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        pkg="python$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')-venv"
        echo "make-venv: installing $pkg (Debian splits venv support out of python3)" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -qq "$pkg" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$pkg" >/dev/null; }
    else
        echo "make-venv: $python has no venv/ensurepip; install python3-venv (as root) and retry" >&2
        exit 1
    fi
fi
rm -rf "$venv"  # a half-made venv (no bin/python) is worth nothing
"$python" -m venv "$venv"
echo "make-venv: created $venv with $("$venv/bin/python" -V)"
