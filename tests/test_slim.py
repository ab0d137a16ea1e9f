"""``edgeformers slim``: a bundle cut down to the variants a device ships."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeformers.models.errors import BundleError, ChecksumError
from edgeformers.runtime import pipeline
from edgeformers.runtime import slim as slim_module
from edgeformers.runtime.cli import cli
from edgeformers.runtime.manifest import MANIFEST_NAME, Manifest

TEXTS = ["I love this.", "This is terrible and slow.", "Mixed feelings, mostly fine."]


@pytest.fixture(scope="module")
def bundle(bundle_factory) -> Path:
    return bundle_factory("bert", "sequence-classification", "text-classification")[1]


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


def tree(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones too) with its sha256."""
    return {
        path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*")) if path.is_file()
    }


def test_slim_keeps_only_the_chosen_variant_and_it_runs(bundle, tmp_path):
    before = tree(bundle)
    out = tmp_path / "device"
    result = invoke("slim", str(bundle), str(out), "--dtype", "q8")
    assert result.exit_code == 0, result.output
    assert tree(bundle) == before  # the source is untouched

    source, slim = Manifest.read(bundle), Manifest.read(out)
    assert list(slim.variants) == ["q8"]
    assert set(slim.validation) <= {"q8"} and slim.validation.get("q8") == source.validation.get("q8")
    q8_files = {"onnx/model_quantized.onnx", "onnx/model_quantized.onnx_data"}
    fp32_files = {"onnx/model.onnx", "onnx/model.onnx_data"}
    on_disk = set(tree(out)) - {MANIFEST_NAME}
    assert q8_files <= on_disk and not fp32_files & on_disk
    assert on_disk == set(slim.files)  # files lists exactly what is there
    assert all(slim.files[name] == source.files[name] for name in slim.files)  # checksums kept as recorded
    assert set(source.files) - set(slim.files) == fp32_files  # every shared file came along
    assert slim.source["slimmed_from"] == {"bundle": str(bundle.resolve()), "kept": ["q8"], "dropped": ["fp32"]}
    assert {k: v for k, v in slim.source.items() if k != "slimmed_from"} == source.source

    expected = pipeline("text-classification", bundle, dtype="q8", device="cpu")(TEXTS, top_k=None)
    got = pipeline("text-classification", out, dtype="q8", device="cpu", verify=True)(TEXTS, top_k=None)
    assert got == expected
    assert pipeline(None, out, device="cpu").dtype == "q8"  # the default falls to what is there
    with pytest.raises(BundleError, match="q8"):
        pipeline("text-classification", out, dtype="fp32", device="cpu")
    listed = invoke("inspect", str(out), "--verify")
    assert listed.exit_code == 0 and "checksums: all" in listed.output, listed.output


def test_slim_several_dtypes_keeps_each(bundle, tmp_path):
    out = tmp_path / "both"
    assert invoke("slim", str(bundle), str(out), "--dtype", "q8,fp32").exit_code == 0
    assert set(Manifest.read(out).variants) == {"q8", "fp32"}
    assert tree(out).keys() - {MANIFEST_NAME} == set(Manifest.read(bundle).files)


@pytest.mark.parametrize("existing", ["user folder", "empty folder", "file"])
def test_slim_refuses_an_existing_output_and_leaves_it_alone(bundle, tmp_path, existing):
    out = tmp_path / "out"
    if existing == "file":
        out.write_text("mine")
    else:
        out.mkdir()
        if existing == "user folder":
            (out / "notes.txt").write_text("do not delete")
    before = tree(tmp_path)
    result = invoke("slim", str(bundle), str(out), "--dtype", "q8")
    assert result.exit_code == 1 and "already exists" in result.output and "Traceback" not in result.output
    assert tree(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("dtype, error", [("fp16", "no 'fp16' variant"), ("q9", "not a dtype"), (",", "empty")])
def test_slim_refuses_a_dtype_the_bundle_does_not_hold(bundle, tmp_path, dtype, error):
    result = invoke("slim", str(bundle), str(tmp_path / "out"), "--dtype", dtype)
    assert result.exit_code == 1 and error in result.output, result.output
    assert "holds: fp32, q8" in result.output
    assert list(tmp_path.iterdir()) == []


def test_slim_refuses_an_output_inside_the_bundle(bundle):
    before = tree(bundle)
    result = invoke("slim", str(bundle), str(bundle / "onnx" / "slim"), "--dtype", "q8")
    assert result.exit_code == 1 and "inside BUNDLE" in result.output, result.output
    assert tree(bundle) == before


def test_slim_of_a_variant_removed_by_hand_names_what_is_present(bundle, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy)
    for name in ("model.onnx", "model.onnx_data"):
        (copy / "onnx" / name).unlink()
    with pytest.raises(BundleError, match="holds: q8"):
        slim_module.slim_bundle(copy, tmp_path / "out", "fp32")
    assert not (tmp_path / "out").exists()


def test_slim_checks_each_copied_file_against_the_manifest(bundle, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy)
    weights = copy / "onnx" / "model_quantized.onnx_data"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # same size, one weight changed
    weights.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="model_quantized.onnx_data"):
        slim_module.slim_bundle(copy, tmp_path / "out", ["q8"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy"]  # no OUTPUT, no staging folder


def test_interrupted_slim_leaves_nothing_and_a_killed_ones_leftovers_are_cleaned(bundle, tmp_path, monkeypatch):
    real_copy = slim_module._copy_checked
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(args)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_copy(*args, **kwargs)

    monkeypatch.setattr(slim_module, "_copy_checked", interrupted)
    with pytest.raises(KeyboardInterrupt):
        slim_module.slim_bundle(bundle, tmp_path / "out", "q8")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(slim_module, "_copy_checked", real_copy)

    # a slim killed with SIGKILL leaves its staging folder; the pid in its name is dead
    dead = tmp_path / ".out.slim-999999999-abcd"
    (dead / "onnx").mkdir(parents=True)
    unrelated = tmp_path / ".out.slim-notapid"
    unrelated.mkdir()
    slim_module.slim_bundle(bundle, tmp_path / "out", "q8")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.slim-notapid", "out"]


def test_slim_needs_a_manifest(bundle, tmp_path):
    folder = tmp_path / "foreign"  # a transformers.js-style folder: the runtime opens it, slim cannot check it
    shutil.copytree(bundle, folder)
    (folder / MANIFEST_NAME).unlink()
    with pytest.raises(BundleError, match="slim needs an edgeformers bundle"):
        slim_module.slim_bundle(folder, tmp_path / "out", "fp32")
