"""onnxruntime's telemetry is off when edgeformers runs a model: official onnxruntime builds
otherwise write a device id and an event store under $XDG_CACHE_HOME on import and later
look up their collector in DNS (see runtime/telemetry.py and SECURITY.md). Each check runs
in a fresh process, since the switch must come before onnxruntime's first import."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from edgeformers.runtime.telemetry import ENV_VAR

SCRIPT = """
import json, os, sys
from edgeformers.runtime import pipeline
result = pipeline("text-classification", sys.argv[1], device="cpu")("hello")
print(json.dumps({"env": os.environ.get("ORT_DISABLE_TELEMETRY"), "label": result[0]["label"]}))
"""


def _run(bundle, tmp_path, **env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if k != ENV_VAR}  # this process already set it
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(bundle)], capture_output=True, text=True, check=True,
                         env={**clean, "XDG_CACHE_HOME": str(tmp_path / "cache"), **env}, cwd=tmp_path).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_running_a_model_leaves_no_telemetry_behind(bundle_factory, tmp_path):
    _, bundle = bundle_factory("bert", "sequence-classification", "text-classification")
    report = _run(bundle, tmp_path)
    assert report["env"] == "1" and report["label"] in ("NEGATIVE", "POSITIVE")
    written = [p.relative_to(tmp_path).as_posix() for p in (tmp_path / "cache").rglob("*")]
    assert written == []  # no Microsoft/DeveloperTools/.onnxruntime/deviceid nor event store


def test_a_user_who_wants_telemetry_keeps_it(bundle_factory, tmp_path):
    _, bundle = bundle_factory("bert", "sequence-classification", "text-classification")
    assert _run(bundle, tmp_path, ORT_DISABLE_TELEMETRY="0")["env"] == "0"
