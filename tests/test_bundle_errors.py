"""Bad bundles and bad exports get typed errors that name the problem, and a failed
export leaves OUTPUT exactly as it was."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from edgeformers.exporter.build import export
from edgeformers.models.errors import (
    BundleError,
    ChecksumError,
    ExportError,
    InputError,
    UnsupportedTaskError,
    ValidationError,
)
from edgeformers.runtime import pipeline
from edgeformers.runtime.bundle import Bundle
from edgeformers.runtime.manifest import Manifest


@pytest.fixture(scope="module")
def classifier(bundle_factory):
    return bundle_factory("distilbert", "sequence-classification", "text-classification")


@pytest.fixture
def bundle_copy(classifier, tmp_path) -> Path:
    return Path(shutil.copytree(classifier[1], tmp_path / "bundle"))


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_manifest_round_trips(classifier):
    manifest = Manifest.read(classifier[1])
    again = Manifest.from_dict(json.loads(json.dumps(manifest.to_dict())))
    assert again == manifest
    assert manifest.task == "text-classification" and manifest.model_type == "distilbert"
    assert "token_type_ids" not in manifest.inputs  # DistilBERT has none
    assert manifest.files["onnx/model.onnx"].size > 0
    assert {"torch", "transformers", "onnxruntime", "edgeformers"} <= set(manifest.tools)


def test_unknown_task_and_dtype(classifier):
    with pytest.raises(UnsupportedTaskError, match="unknown task 'sentiment'"):
        pipeline("sentiment", classifier[1])
    with pytest.raises(InputError, match="unknown dtype 'int3'"):
        pipeline("text-classification", classifier[1], dtype="int3")
    with pytest.raises(BundleError, match="no 'fp16' variant; it has: fp32, q8"):
        pipeline("text-classification", classifier[1], dtype="fp16")


def test_task_the_bundle_was_not_exported_for(classifier):
    with pytest.raises(UnsupportedTaskError, match="exported for 'text-classification', not 'fill-mask'"):
        pipeline("fill-mask", classifier[1])


def test_missing_folder_manifest_tokenizer_and_graph(bundle_copy, tmp_path):
    with pytest.raises(BundleError, match="does not exist"):
        pipeline("text-classification", tmp_path / "nowhere")
    tokenizer = (bundle_copy / "tokenizer.json").read_bytes()
    (bundle_copy / "tokenizer.json").unlink()
    with pytest.raises(BundleError, match="'tokenizer.json' is missing"):
        pipeline("text-classification", bundle_copy)
    (bundle_copy / "tokenizer.json").write_bytes(tokenizer)
    (bundle_copy / "onnx" / "model_quantized.onnx").unlink()
    with pytest.raises(BundleError, match=r"'q8' is listed .* missing \(onnx/model_quantized.onnx.*present: fp32$"):
        pipeline("text-classification", bundle_copy, dtype="q8")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BundleError, match="config.json is missing"):
        pipeline("text-classification", empty)


def test_folder_without_manifest_is_opened_like_optimum_output(bundle_copy):
    (bundle_copy / "edgeformers.json").unlink()
    inferred = Bundle.open(bundle_copy)
    assert not inferred.has_manifest
    assert set(inferred.manifest.variants) == {"fp32", "q8"}
    assert pipeline("text-classification", bundle_copy)("hello")[0]["label"] in inferred.manifest.labels.values()


def test_resized_file_is_refused(bundle_copy):
    with (bundle_copy / "onnx" / "model.onnx").open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ChecksumError, match="model.onnx: size .* differs"):
        pipeline("text-classification", bundle_copy)


def test_tampered_file_of_same_size_is_refused_when_verifying(bundle_copy):
    path = bundle_copy / "onnx" / "model_quantized.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    Bundle.open(bundle_copy)  # sizes match: the cheap check passes
    with pytest.raises(ChecksumError, match="model_quantized.onnx: sha256 .* differs"):
        pipeline("text-classification", bundle_copy, dtype="q8", verify=True)


def test_manifest_field_errors_name_the_field(bundle_copy):
    path = bundle_copy / "edgeformers.json"
    data = json.loads(path.read_text())
    del data["task"]
    path.write_text(json.dumps(data))
    with pytest.raises(BundleError, match="missing field 'task'"):
        Bundle.open(bundle_copy)
    data["task"] = "text-classification"
    data["format_version"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(BundleError, match="newer edgeformers"):
        Bundle.open(bundle_copy)
    path.write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        Bundle.open(bundle_copy)


def test_export_refuses_to_overwrite_without_force(classifier, tmp_path):
    checkpoint, _ = classifier
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(ExportError, match="already exists; pass --force"):
        export(str(checkpoint), out, task="text-classification")
    assert snapshot(out) == {"keep.txt": b"precious"}


def test_failed_validation_leaves_output_untouched(classifier, tmp_path):
    checkpoint, bundle = classifier
    out = Path(shutil.copytree(bundle, tmp_path / "out"))  # --force replaces only a bundle
    before = snapshot(out)
    with pytest.raises(ValidationError, match="differs from PyTorch beyond atol=1e-12"):
        export(str(checkpoint), out, task="text-classification", atol=1e-12, force=True)
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary folder left


def test_force_replaces_an_existing_bundle(classifier, tmp_path):
    checkpoint, _ = classifier
    out = Path(shutil.copytree(classifier[1], tmp_path / "out"))
    export(str(checkpoint), out, task="text-classification", dtypes=["fp32"], force=True)
    assert not (out / "onnx" / "model_quantized.onnx").exists() and (out / "edgeformers.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_source_errors(classifier, checkpoint_factory, tmp_path):
    with pytest.raises(ExportError, match="does not exist"):
        export(str(tmp_path / "missing"), tmp_path / "out", task="text-classification")
    with pytest.raises(ExportError, match="Hugging Face Hub could not provide it"):
        export("nobody/no-such-model", tmp_path / "out", task="text-classification")
    with pytest.raises(UnsupportedTaskError, match="unknown task"):
        export(str(classifier[0]), tmp_path / "out", task="summarise")
    base = checkpoint_factory("bert", "base")
    with pytest.raises(UnsupportedTaskError, match="has no SequenceClassification head"):
        export(str(base), tmp_path / "out", task="text-classification")
    config = json.loads((base / "config.json").read_text())
    odd = Path(shutil.copytree(base, tmp_path / "odd"))
    (odd / "config.json").write_text(json.dumps({**config, "model_type": "reformer"}))
    with pytest.raises(UnsupportedTaskError, match="'reformer' is not in the catalog"):
        export(str(odd), tmp_path / "out", task="feature-extraction")
    assert not (tmp_path / "out").exists()


def _edit_manifest(bundle: Path, change) -> None:
    path = bundle / "edgeformers.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_issue_repros_are_bundle_errors_naming_the_field(bundle_copy):
    """The repros of the hardening issue: each is a BundleError naming the field or file."""
    original = (bundle_copy / "edgeformers.json").read_text()
    repros = [
        (lambda d: d.__setitem__("files", []), r"edgeformers.json: files: should be an object, got a list"),
        (lambda d: d["processing"].__setitem__("max_length", -5), r"processing.max_length: should be >= 1"),
        (lambda d: d["variants"]["fp32"]["files"].__setitem__("model", "../outside/model.onnx"),
         r"variants.fp32.files.model: path '../outside/model.onnx' has an empty, '.' or '..' component"),
        (lambda d: d["files"].__setitem__("/etc/passwd", {"size": 1, "sha256": "0" * 64}), r"'/etc/passwd' is absolute"),
        (lambda d: d["variants"]["q8"].__setitem__("dtype", "fp16"), r"variants.q8.dtype: is 'fp16'"),
    ]
    for change, message in repros:
        (bundle_copy / "edgeformers.json").write_text(original)
        _edit_manifest(bundle_copy, change)
        with pytest.raises(BundleError, match=message):
            pipeline(None, bundle_copy)
    (bundle_copy / "edgeformers.json").unlink()  # config values, read without a manifest's sizes in the way
    config = json.loads((bundle_copy / "config.json").read_text())
    (bundle_copy / "config.json").write_text(json.dumps({**config, "id2label": {"x": "y"}}))
    with pytest.raises(BundleError, match=r"config.json: id2label key 'x' is not a class id"):
        Bundle.open(bundle_copy)
    (bundle_copy / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(BundleError, match="config.json is not valid JSON: nested deeper than 64 levels"):
        Bundle.open(bundle_copy)
    (bundle_copy / "config.json").write_text(json.dumps(config))
    (bundle_copy / "tokenizer_config.json").unlink()
    (bundle_copy / "tokenizer_config.json").symlink_to("/dev/zero")
    with pytest.raises(BundleError, match="'tokenizer_config.json' points outside the bundle folder"):
        Bundle.open(bundle_copy)


def test_verify_says_when_there_is_nothing_to_verify(bundle_copy):
    from click.testing import CliRunner

    from edgeformers.runtime.cli import cli

    _edit_manifest(bundle_copy, lambda d: d.__setitem__("files", {}))
    with pytest.warns(UserWarning, match="lists no files, so nothing in it can be verified"):
        Bundle.open(bundle_copy, verify=True)
    (bundle_copy / "edgeformers.json").unlink()
    with pytest.warns(UserWarning, match="has no edgeformers.json, so nothing in it can be verified"):
        pipeline(None, bundle_copy, verify=True)
    result = CliRunner().invoke(cli, ["inspect", str(bundle_copy), "--verify"])
    assert result.exit_code == 0 and "checksums: nothing to verify:" in result.output


def test_verify_hashes_what_the_variant_reads_and_the_cache_does_not_trust_mtime(bundle_copy):
    from click.testing import CliRunner

    from edgeformers.runtime.cli import cli

    pipeline(None, bundle_copy, dtype="q8", verify=True)("hello")  # hashes q8's files, cached
    weights = bundle_copy / "onnx" / "model_quantized.onnx_data"
    info = weights.stat()
    data = bytearray(weights.read_bytes())
    data[len(data) // 3] ^= 0x01
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(info.st_atime_ns, info.st_mtime_ns))  # same size and mtime; ctime moved
    with pytest.raises(ChecksumError, match=r"model_quantized.onnx_data: sha256 .* differs"):
        pipeline(None, bundle_copy, dtype="q8", verify=True)
    ran = CliRunner().invoke(cli, ["run", str(bundle_copy), "hello", "--dtype", "q8", "--verify"])
    assert ran.exit_code == 1 and ran.output.startswith("Error: ChecksumError:") and len(ran.output.splitlines()) == 1
    assert pipeline(None, bundle_copy, dtype="fp32", verify=True)("hello")  # fp32's files are intact
    (bundle_copy / "generation_config.json").write_text("{}")  # read by the runtime, listed nowhere
    with pytest.raises(ChecksumError, match="generation_config.json is read by the runtime but has no entry"):
        pipeline(None, bundle_copy, dtype="fp32", verify=True)


def test_a_variant_deleted_by_hand_leaves_the_other_loadable(bundle_copy, classifier):
    from click.testing import CliRunner

    from edgeformers.runtime.cli import cli

    texts = ["I love this.", "I hate this."]
    expected = pipeline(None, classifier[1], dtype="q8")(texts)
    for file in (bundle_copy / "onnx").glob("model.onnx*"):
        file.unlink()
    quantized = pipeline(None, bundle_copy, verify=True)  # the default skips the absent fp32
    assert quantized.dtype == "q8" and quantized(texts) == expected
    with pytest.raises(BundleError, match=r"'fp32' is listed .* missing \(onnx/model.onnx, onnx/model.onnx_data\); "
                                          r"variants present: q8"):
        pipeline(None, bundle_copy, dtype="fp32")
    result = CliRunner().invoke(cli, ["inspect", str(bundle_copy), "--verify"])
    assert result.exit_code == 0, result.output
    assert "fp32   onnx/model.onnx" in result.output and "listed but absent (missing: onnx/model.onnx" in result.output
    assert "2 files of absent variants not checked" in result.output
