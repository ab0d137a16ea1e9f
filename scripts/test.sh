#!/usr/bin/env bash
# Sets up .venv if needed and runs the whole test suite (no network to the Hub needed).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
.venv/bin/ruff check runtime exporter models tests benchmarks examples
exec .venv/bin/python -m pytest -q "$@"
