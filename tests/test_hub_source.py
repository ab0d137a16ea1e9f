"""A Hub id goes through huggingface_hub's real cache lookup; tested offline on a locally
built cache layout (models--org--name/snapshots/<commit>, refs/main)."""

from __future__ import annotations

import shutil

from edgeformers.exporter.build import export
from edgeformers.runtime import pipeline

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def test_export_from_a_hub_id_in_the_local_cache(checkpoint_factory, tmp_path, monkeypatch):
    checkpoint = checkpoint_factory("distilbert", "sequence-classification")
    cache = tmp_path / "hub"
    repo = cache / "models--local-org--tiny-sst2"
    shutil.copytree(checkpoint, repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)

    manifest = export("local-org/tiny-sst2", tmp_path / "bundle", task="text-classification", dtypes=["fp32"])
    assert manifest.source == {"hub_id": "local-org/tiny-sst2", "revision": COMMIT}
    assert pipeline("sentiment-analysis", tmp_path / "bundle")("hi")[0]["label"] in ("NEGATIVE", "POSITIVE")
