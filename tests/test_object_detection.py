"""object-detection: a tiny DETR (transformers ResNet backbone, no timm) exported through the
CLI (fp32 + q8) gives the detections of ``transformers.pipeline("object-detection")`` on the
same checkpoint: labels and integer boxes exactly, scores within 1e-4, for several
thresholds and images of several sizes, grayscale and RGBA, alone and in batches. The box
post-processing is also checked on its own against transformers' on random outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import transformers

from edgeformers.exporter.vision_inputs import synthetic_image
from edgeformers.models.errors import InputError
from edgeformers.runtime import pipeline
from edgeformers.runtime.manifest import Manifest
from tests.fixtures.floors import floor_for
from tests.fixtures.vision_checkpoints import build_vision_checkpoint, export_bundle

ATOL = 1e-4
ARCHS = ("detr",)
IMAGES = [(50, 70, "RGB", "noise"), (120, 40, "L", "disc"), (33, 33, "RGBA", "stripes"), (300, 200, "RGB", "gradient"),
          (50, 70, "RGB", "checkerboard")]  # the last has the first's size: they share a batch


@pytest.fixture(scope="module")
def detr(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("object-detection")
    checkpoint = build_vision_checkpoint("detr", root / "detr")
    return checkpoint, export_bundle(checkpoint, root / "detr-bundle", "object-detection")


def images() -> list[Any]:
    return [synthetic_image(h, w, mode, seed=i, pattern=pattern) for i, (h, w, mode, pattern) in enumerate(IMAGES)]


def same_detections(ours: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> None:
    assert len(ours) == len(theirs), (ours, theirs)
    for got, want in zip(ours, theirs):
        assert list(got) == ["score", "label", "box"] and type(got["score"]) is float
        assert got["score"] == pytest.approx(want["score"], abs=ATOL)
        assert got["label"] == want["label"]
        assert got["box"] == want["box"] and all(type(v) is int for v in got["box"].values())


@pytest.mark.filterwarnings("ignore:.*slow image processor:UserWarning")
def test_detections_equal_transformers(detr):
    checkpoint, bundle = detr
    ours = pipeline("object-detection", bundle, device="cpu")
    theirs = transformers.pipeline("object-detection", model=str(checkpoint))
    batch = images()
    found = 0
    for kwargs in ({}, {"threshold": 0.9}, {"threshold": 0.0}, {"threshold": 1}):
        want = theirs(batch, **kwargs)
        for got in (ours(batch, **kwargs), ours(batch, batch_size=1, **kwargs)):
            for got_one, want_one in zip(got, want, strict=True):
                same_detections(got_one, want_one)
        found += sum(map(len, want))
    assert found > 0, "the calibrated tiny DETR should find something at the default threshold"
    same_detections(ours(batch[3]), theirs(batch[3]))  # one image: one list


def test_box_post_processing_equals_transformers_on_random_outputs():
    """post_process_object_detection's softmax/no-object/corner/scale steps, on outputs
    whose boxes land anywhere, including outside the image."""
    from transformers.models.detr.modeling_detr import DetrObjectDetectionOutput

    from edgeformers.runtime.pipelines.object_detection import ObjectDetectionPipeline

    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (1, 30, 6)).astype(np.float32)
    boxes = rng.uniform(-0.2, 1.2, (1, 30, 4)).astype(np.float32)
    processor = transformers.DetrImageProcessor()
    pipe = ObjectDetectionPipeline.__new__(ObjectDetectionPipeline)
    pipe.bundle = type("B", (), {"manifest": type("M", (), {"labels": {i: f"c{i}" for i in range(5)}})()})()
    for height, width in ((480, 640), (37, 1001)):
        for threshold in (0.0, 0.3, 0.7):
            want = processor.post_process_object_detection(
                DetrObjectDetectionOutput(logits=torch.from_numpy(logits), pred_boxes=torch.from_numpy(boxes)),
                threshold, [(height, width)])[0]
            got = pipe._detections(logits[0], boxes[0], height, width, threshold)
            assert [g["label"] for g in got] == [f"c{int(i)}" for i in want["labels"]]
            np.testing.assert_allclose([g["score"] for g in got], want["scores"].numpy(), atol=1e-6)
            assert [list(g["box"].values()) for g in got] == want["boxes"].int().tolist()


def test_q8_is_recorded_and_held_to_its_floor(detr):
    _, bundle = detr
    manifest = Manifest.read(bundle)
    report = manifest.validation["q8"]
    assert report["metric"] == "query_label_agreement" and report["passed"]
    assert report["value"] >= floor_for("object-detection")
    assert set(manifest.validation["fp32"]["max_abs_diff"]) == {"logits", "pred_boxes"}
    assert manifest.labels == {0: "person", 1: "bicycle", 2: "car", 3: "dog"}
    q8 = pipeline("object-detection", bundle, device="cpu", dtype="q8")
    assert all(isinstance(d["box"]["xmin"], int) for d in q8(images()[0], threshold=0.0))


def test_bad_arguments_are_input_errors(detr):
    _, bundle = detr
    detector = pipeline("object-detection", bundle, device="cpu")
    image = synthetic_image(16, 16)
    for kwargs, message in (({"threshold": "high"}, "threshold"), ({"threshold": float("nan")}, "threshold"),
                            ({"threshold": True}, "threshold"), ({"batch_size": -1}, "batch_size"),
                            ({"top_k": 3}, "unknown argument")):
        with pytest.raises(InputError, match=message):
            detector(image, **kwargs)
    with pytest.raises(InputError, match=r"inputs\[1\] is an empty image"):
        detector([image, np.zeros((0, 4, 3), np.uint8)])
    assert isinstance(detector(image), list)
