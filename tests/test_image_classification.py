"""image-classification: tiny ViT, DeiT and ConvNeXT checkpoints exported through the CLI
(fp32 + q8) give the labels and scores of ``transformers.pipeline("image-classification")``
on the same checkpoint: images of several sizes and aspect ratios, grayscale and RGBA, as
paths, bytes and PIL images, alone and in batches, with ``top_k`` and ``function_to_apply``."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import transformers

from edgeformers.exporter.vision_inputs import synthetic_image
from edgeformers.models.errors import BundleError, InputError
from edgeformers.runtime import pipeline
from edgeformers.runtime.manifest import Manifest
from tests.fixtures.floors import floor_for
from tests.fixtures.vision_checkpoints import build_vision_checkpoint, export_bundle

ATOL = 1e-4
ARCHS = ("vit", "deit", "convnext")
#: (height, width, mode, pattern)
IMAGES = [(50, 70, "RGB", "noise"), (120, 40, "L", "disc"), (33, 33, "RGBA", "stripes"), (300, 200, "RGB", "gradient"),
          (20, 90, "P", "checkerboard")]


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Any:
    root = tmp_path_factory.mktemp("image-classification")
    made: dict[tuple[str, Any], tuple[Path, Path]] = {}

    def get(arch: str, problem_type: str | None = None, dtypes: tuple[str, ...] = ("fp32", "q8")) -> tuple[Path, Path]:
        key = (arch, problem_type)
        if key not in made:
            name = f"{arch}-{problem_type or 'default'}"
            checkpoint = build_vision_checkpoint(arch, root / name, problem_type=problem_type)
            made[key] = checkpoint, export_bundle(checkpoint, root / f"{name}-bundle", "image-classification", dtypes)
        return made[key]

    return get


def images() -> list[Any]:
    return [synthetic_image(h, w, mode if mode != "P" else "RGB", seed=i, pattern=pattern).convert(mode)
            for i, (h, w, mode, pattern) in enumerate(IMAGES)]


def same_ranked(ours: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> None:
    """Labels in the same order, scores within ATOL (ranks that tie within ATOL may swap)."""
    assert len(ours) == len(theirs), (ours, theirs)
    for got, want in zip(ours, theirs):
        assert set(got) == {"label", "score"} and type(got["score"]) is float
        assert got["score"] == pytest.approx(want["score"], abs=ATOL), (ours, theirs)
        if got["label"] != want["label"]:
            tied = [item["label"] for item in theirs if abs(item["score"] - want["score"]) <= ATOL]
            assert got["label"] in tied, (ours, theirs)


@pytest.mark.filterwarnings("ignore:.*slow image processor:UserWarning")
@pytest.mark.parametrize("arch", ARCHS)
def test_labels_and_scores_equal_transformers(exported, arch, tmp_path):
    checkpoint, bundle = exported(arch)
    ours = pipeline("image-classification", bundle, device="cpu")
    theirs = transformers.pipeline("image-classification", model=str(checkpoint))
    batch = images()
    # the same images as paths and bytes: decoded by each side's own loader
    paths = []
    for index, image in enumerate(batch):
        paths.append(str(tmp_path / f"{index}.png"))
        image.save(paths[-1])
    for kwargs in ({}, {"top_k": 2}, {"top_k": 50}, {"function_to_apply": "sigmoid"}, {"function_to_apply": "none"},
                   {"function_to_apply": "SOFTMAX", "top_k": 3}):
        want = theirs(batch, **kwargs)
        for got in (ours(batch, **kwargs), ours(paths, batch_size=2, **kwargs)):
            assert len(got) == len(want)
            for got_one, want_one in zip(got, want):
                same_ranked(got_one, want_one)
    # one image: one list, not a list of lists
    same_ranked(ours(batch[1]), theirs(batch[1]))
    buffer = io.BytesIO()
    batch[0].save(buffer, format="PNG")
    same_ranked(ours(buffer.getvalue(), top_k=None), theirs(batch[0], top_k=None))
    # top_k=None is transformers' default of 5 (clipped to the labels)
    assert len(ours(batch[0], top_k=None)) == 5


@pytest.mark.filterwarnings("ignore:.*slow image processor:UserWarning")
def test_multi_label_checkpoints_default_to_sigmoid_as_transformers(exported):
    checkpoint, bundle = exported("vit", "multi_label_classification", ("fp32",))
    got = pipeline("image-classification", bundle, device="cpu")(images())
    want = transformers.pipeline("image-classification", model=str(checkpoint))(images())
    for got_one, want_one in zip(got, want):
        same_ranked(got_one, want_one)
    assert sum(item["score"] for item in got[0]) > 1.01  # sigmoid scores, not a distribution


@pytest.mark.parametrize("arch", ARCHS)
def test_q8_is_recorded_and_held_to_its_floor(exported, arch):
    _, bundle = exported(arch)
    manifest = Manifest.read(bundle)
    report = manifest.validation["q8"]
    assert report["metric"] == "label_agreement" and report["inputs"] == 40
    assert report["passed"] and report["value"] >= floor_for("image-classification")
    assert manifest.validation["fp32"]["max_abs_diff"]["logits"] <= manifest.validation["fp32"]["atol"]
    assert (bundle / "preprocessor_config.json").is_file()
    assert manifest.labels == {0: "cat", 1: "dog", 2: "bird", 3: "fish", 4: "car"}
    fp32 = pipeline("image-classification", bundle, device="cpu")(images(), top_k=1)
    q8 = pipeline("image-classification", bundle, device="cpu", dtype="q8")(images(), top_k=1)
    same = np.mean([a[0]["label"] == b[0]["label"] for a, b in zip(fp32, q8)])
    assert same >= floor_for("image-classification"), (fp32, q8)


def test_bad_inputs_are_input_errors_naming_them(exported, tmp_path):
    _, bundle = exported("vit")
    clf = pipeline("image-classification", bundle, device="cpu")
    (tmp_path / "notes.txt").write_text("not an image")
    buffer = io.BytesIO()
    synthetic_image(64, 64).save(buffer, format="PNG")
    (tmp_path / "cut.png").write_bytes(buffer.getvalue()[:200])
    cases = [
        (str(tmp_path / "notes.txt"), "not an image file"),
        ([synthetic_image(8, 8), str(tmp_path / "cut.png")], r"inputs\[1\].*truncated or corrupt"),
        (np.zeros((10, 0, 3), np.uint8), "empty image"),
        (np.zeros((3, 10, 10), np.uint8), "shape"),
        (np.zeros((10, 10, 3), np.complex64), "complex64"),
        ([], "empty list"),
        ({"image": "x"}, "dict"),
    ]
    for value, message in cases:
        with pytest.raises(InputError, match=message):
            clf(value)
    image = synthetic_image(16, 16)
    for kwargs, message in (({"top_k": 0}, "top_k"), ({"function_to_apply": "relu"}, "function_to_apply"),
                            ({"batch_size": 0}, "batch_size"), ({"treshold": 0.5}, "unknown argument")):
        with pytest.raises(InputError, match=message):
            clf(image, **kwargs)
    assert clf(image, top_k=1)[0]["label"]  # still usable after the errors


def test_a_bundle_without_its_image_processor_is_refused_at_load(exported, tmp_path):
    import shutil

    _, bundle = exported("vit")
    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy)
    (copy / "edgeformers.json").unlink()  # no manifest: opened from its files
    (copy / "preprocessor_config.json").unlink()
    with pytest.raises(BundleError, match="preprocessor_config.json is missing"):
        pipeline("image-classification", copy, device="cpu")


def test_validate_rechecks_the_bundle_against_pytorch(exported):
    from edgeformers.exporter.validate import validate_bundle

    _, bundle = exported("vit")
    reports = validate_bundle(bundle)
    assert reports["fp32"]["passed"] and reports["fp32"]["max_abs_diff"]["logits"] <= 1e-4
    assert reports["q8"]["value"] == Manifest.read(bundle).validation["q8"]["value"]


def test_cli_run_classifies_an_image_file(exported, tmp_path):
    """`edgeformers run BUNDLE cat.jpg -o top_k=3` (the README's command) prints transformers' labels as JSON."""
    import json

    from click.testing import CliRunner

    from edgeformers.runtime.cli import cli

    checkpoint, bundle = exported("vit")
    path = tmp_path / "cat.png"
    images()[0].save(path)
    result = CliRunner().invoke(cli, ["run", str(bundle), str(path), "-o", "top_k=3"])
    assert result.exit_code == 0, result.output
    theirs = transformers.pipeline("image-classification", model=str(checkpoint), device="cpu")(str(path), top_k=3)
    same_ranked(json.loads(result.output), theirs)


def test_bench_times_images_of_the_asked_side(exported):
    """``edgeformers bench`` on an image bundle: --seq-len is the side of a square image in
    pixels (the processor resizes it); both variants, batches of 1 and 2."""
    from tests.fixtures.bench_report import bench_report, check_rows

    _, bundle = exported("vit")
    report, table = bench_report(bundle, "--batch", "1,2", "--seq-len", "48,96")
    check_rows(report, ["fp32", "q8"], [1, 2], [48, 96], "pixels")
    assert "pixels" in table
