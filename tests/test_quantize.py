"""``edgeformers quantize`` adds variants to an existing bundle, all or nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeformers.exporter import variants
from edgeformers.runtime import pipeline
from edgeformers.runtime.bundle import Bundle
from edgeformers.runtime.cli import cli
from tests.fixtures.floors import floor_args

#: random weights: q8 is held to the test floor, not the catalog's bar for trained models
QUANTIZE_Q8_FP16 = ["quantize", "--dtype", "q8,fp16", *floor_args("text-classification")]


@pytest.fixture
def bundle(bundle_factory, tmp_path) -> Path:
    _, path = bundle_factory("roberta", "sequence-classification", "text-classification", dtypes=("fp32",))
    return Path(shutil.copytree(path, tmp_path / "bundle"))


def test_quantize_adds_checked_variants(bundle):
    result = CliRunner().invoke(cli, [*QUANTIZE_Q8_FP16, str(bundle)])
    assert result.exit_code == 0, result.output
    opened = Bundle.open(bundle, verify=True)  # the manifest's checksums cover the new files
    assert set(opened.manifest.variants) == {"fp32", "q8", "fp16"}
    assert opened.manifest.validation["q8"]["reference"] == "fp32"
    assert opened.manifest.variants["q8"].quantization["per_channel"] is True
    assert pipeline("text-classification", bundle, dtype="fp16")("hello")[0]["label"]


def test_a_failed_quantize_changes_nothing(bundle, monkeypatch):
    before = {p.relative_to(bundle): p.read_bytes() for p in bundle.rglob("*") if p.is_file()}
    real = variants.make_variant

    def fail_on_fp16(source, target, dtype, family, **kwargs):
        if dtype == "fp16":
            raise RuntimeError("fp16 failed after q8 was made")
        return real(source, target, dtype, family, **kwargs)

    monkeypatch.setattr(variants, "make_variant", fail_on_fp16)
    result = CliRunner().invoke(cli, [*QUANTIZE_Q8_FP16, str(bundle)])
    assert str(result.exception) == "fp16 failed after q8 was made"  # q8 was made, then fp16 failed
    after = {p.relative_to(bundle): p.read_bytes() for p in bundle.rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in bundle.parent.iterdir()) == ["bundle"]  # no copy or lock file left
