"""object-detection (DETR-style set prediction), with transformers' ``threshold`` and
outputs: ``[{"score", "label", "box": {"xmin", "ymin", "xmax", "ymax"}}]`` per image, boxes
in the image's own pixels as ints. The post-processing is transformers'
``post_process_object_detection`` in numpy: softmax over the classes, the last one
(no object) left out; centre/size boxes to corners; scaled by the original size."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from edgeformers.models.errors import BundleError, InputError
from edgeformers.runtime.pipelines.base import DEFAULT_BATCH_SIZE, check_count, softmax
from edgeformers.runtime.pipelines.image_classification import ImagePipeline
from edgeformers.runtime.vision.images import image_batch

DEFAULT_THRESHOLD = 0.5  # transformers' ObjectDetectionPipeline default


class ObjectDetectionPipeline(ImagePipeline):
    task = "object-detection"

    def prepare(self) -> None:
        super().prepare()
        outputs = set(self.model.output_names)
        if not {"logits", "pred_boxes"} <= outputs:
            raise BundleError(f"{self.bundle.path}: an object-detection graph has outputs logits and pred_boxes; "
                              f"this one has {sorted(outputs)}")

    def __call__(self, inputs: Any, threshold: float = DEFAULT_THRESHOLD, timeout: float | None = None,
                 batch_size: int | None = None) -> Any:
        """One image gives a list of detections (in query order, as transformers returns
        them), a list of images one such list per image. Images run one batch per
        preprocessed size, so none is padded for another (transformers runs them one by one)."""
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
            raise InputError(f"threshold must be a finite number, got {threshold!r}")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))):
            raise InputError(f"timeout must be a number of seconds or None, got {timeout!r}")
        check_count("batch_size", batch_size)
        images, single = image_batch(inputs)
        groups: dict[tuple[int, int], list[int]] = {}
        for index, image in enumerate(images):
            groups.setdefault(self.processor.resized_size(image.height, image.width), []).append(index)
        results: list[Any] = [None] * len(images)
        size = batch_size or DEFAULT_BATCH_SIZE
        for indices in groups.values():
            for start in range(0, len(indices), size):
                part = indices[start:start + size]
                outputs = self.model.run(self.feed([images[i] for i in part]), ["logits", "pred_boxes"])
                for row, index in enumerate(part):
                    results[index] = self._detections(outputs["logits"][row], outputs["pred_boxes"][row],
                                                      images[index].height, images[index].width, float(threshold))
        return results[0] if single else results

    def _detections(self, logits: np.ndarray, boxes: np.ndarray, height: int, width: int,
                    threshold: float) -> list[dict[str, Any]]:
        probabilities = softmax(logits.astype(np.float32))[:, :-1]
        scores, labels = probabilities.max(-1), probabilities.argmax(-1)
        corners = centre_to_corners(boxes.astype(np.float32)) * np.array([width, height, width, height], np.float32)
        keep = scores > threshold
        return [
            {"score": float(score), "label": self.label(int(label)),
             "box": dict(zip(("xmin", "ymin", "xmax", "ymax"), (int(v) for v in np.trunc(box))))}
            for score, label, box in zip(scores[keep], labels[keep], corners[keep])
        ]


def centre_to_corners(boxes: np.ndarray) -> np.ndarray:
    """(cx, cy, w, h) -> (x0, y0, x1, y1), as transformers' center_to_corners_format."""
    cx, cy, w, h = boxes[..., 0], boxes[..., 1], boxes[..., 2], boxes[..., 3]
    return np.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], axis=-1)
