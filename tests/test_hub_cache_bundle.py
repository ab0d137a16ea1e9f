"""A bundle downloaded with ``huggingface_hub.snapshot_download`` (a transformers.js repo,
or an edgeformers bundle pushed to the Hub) lives in the Hub cache as a snapshot folder
whose files are symlinks into the repo's ``blobs/``. The runtime opens it in place, and
still refuses links that leave the repo's blobs."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from edgeformers.runtime import BundleError, pipeline

TEXTS = ["hello world", "a longer sentence about nothing much"]


def cache_layout(bundle: Path, cache: Path, repo: str = "models--org--tiny") -> Path:
    """The bundle as the Hub cache stores it: every file a blob named by its hash, and the
    snapshot a tree of relative symlinks to them. Returns the snapshot folder."""
    root = cache / repo
    blobs, snapshot = root / "blobs", root / "snapshots" / ("a" * 40)
    blobs.mkdir(parents=True)
    for file in sorted(p for p in bundle.rglob("*") if p.is_file()):
        relative = file.relative_to(bundle)
        digest = hashlib.sha256(file.read_bytes()).hexdigest()
        shutil.copyfile(file, blobs / digest)
        link = snapshot / relative
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blobs / digest, link.parent))
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text("a" * 40)
    return snapshot


@pytest.fixture(scope="module")
def exported(bundle_factory) -> Path:
    return bundle_factory("bert", "sequence-classification", "text-classification", dtypes=("fp32",))[1]


def test_a_cache_snapshot_runs_in_place_and_verifies(exported, tmp_path):
    snapshot = cache_layout(exported, tmp_path / "hub")
    assert (snapshot / "onnx" / "model.onnx").is_symlink()
    expected = pipeline("text-classification", exported)(TEXTS, top_k=None)
    assert pipeline("text-classification", snapshot, verify=True)(TEXTS, top_k=None) == expected


@pytest.mark.parametrize("target", [
    "../../../models--other--repo/blobs/{digest}",  # another repo's blob
    "../../refs/main",                               # inside the repo, but not a blob
    "../../../../outside.json",                      # out of the cache
])
def test_a_snapshot_link_out_of_its_own_blobs_is_refused(exported, tmp_path, target):
    snapshot = cache_layout(exported, tmp_path / "hub")
    other = cache_layout(exported, tmp_path / "hub", repo="models--other--repo")
    config = snapshot / "config.json"
    digest = Path(os.readlink(config)).name
    (tmp_path / "outside.json").write_bytes(config.read_bytes())
    assert (other.parent.parent / "blobs" / digest).is_file()
    config.unlink()
    config.symlink_to(target.format(digest=digest))
    with pytest.raises(BundleError, match="points outside the bundle folder"):
        pipeline("text-classification", snapshot)
