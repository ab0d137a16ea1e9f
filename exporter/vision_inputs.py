"""Validation inputs for image models: synthetic images made with numpy (gradients, noise,
stripes, checkerboards, discs; several sizes and aspect ratios, grayscale and RGBA among
them), preprocessed by the checkpoint's own transformers image processor, so the exporter
checks the graph on exactly what transformers would feed the PyTorch model.

Loaded through transformers' ``load_image`` (RGB conversion as its pipelines do).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeformers.models.errors import ExportError

VISION_TASKS = frozenset({"image-classification", "object-detection"})
#: (height, width, mode) of the fp32-vs-PyTorch images: each alone, then all as one batch.
VALIDATION_IMAGES: tuple[tuple[int, int, str], ...] = (
    (224, 224, "RGB"), (180, 320, "RGB"), (400, 120, "RGB"), (64, 64, "L"), (100, 150, "RGBA"),
)
#: Images in the agreement set (one changed label is 2.5 points), and for detection, whose
#: every query counts, the first 16 of them.
AGREEMENT_IMAGES = 40
DETECTION_AGREEMENT_IMAGES = 16
BATCH_SIZE = 8
_PATTERNS = ("gradient", "noise", "stripes", "checkerboard", "disc")


def synthetic_image(height: int, width: int, mode: str = "RGB", seed: int = 0, pattern: str = "gradient") -> Any:
    """A deterministic PIL image of ``pattern`` with some noise on top."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    y, x = y / max(height - 1, 1), x / max(width - 1, 1)
    phase = rng.uniform(0, 2 * np.pi, 3)
    if pattern == "gradient":
        base = np.stack([x, y, (x + y) / 2], axis=-1) * 255
    elif pattern == "noise":
        base = rng.uniform(0, 255, (height, width, 3))
    elif pattern == "stripes":
        freq = rng.uniform(2, 12)
        base = (np.sin(2 * np.pi * freq * x[..., None] + phase) + 1) * 127.5
    elif pattern == "checkerboard":
        cells = int(rng.integers(2, 9))
        board = ((np.floor(x * cells) + np.floor(y * cells)) % 2)[..., None]
        base = board * rng.uniform(0, 255, 3) + (1 - board) * rng.uniform(0, 255, 3)
    else:
        cy, cx, radius = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.15, 0.4)
        inside = (((y - cy) ** 2 + (x - cx) ** 2) < radius ** 2)[..., None]
        base = inside * rng.uniform(0, 255, 3) + (~inside) * rng.uniform(0, 255, 3)
    pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    if mode == "RGBA":
        alpha = Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8))
        return Image.merge("RGBA", (*image.split(), alpha))
    return image if mode == "RGB" else image.convert(mode)


def validation_images() -> list[Any]:
    return [synthetic_image(h, w, mode, seed=i, pattern=_PATTERNS[i % len(_PATTERNS)])
            for i, (h, w, mode) in enumerate(VALIDATION_IMAGES)]


def agreement_images(task: str) -> list[Any]:
    count = DETECTION_AGREEMENT_IMAGES if task == "object-detection" else AGREEMENT_IMAGES
    rng = np.random.default_rng(1234)
    images = []
    for index in range(count):
        height, width = (int(v) for v in rng.integers(48, 360, 2))
        mode = ("RGB", "RGB", "RGB", "L", "RGBA")[index % 5]
        images.append(synthetic_image(height, width, mode, seed=100 + index, pattern=_PATTERNS[index % 5]))
    return images


def reference_processor(folder: Path) -> Any:
    """The checkpoint's own image processor, loaded by transformers (the slow, Pillow-based
    one, as the runtime's reference), never its own code."""
    import transformers

    if not (Path(folder) / "preprocessor_config.json").is_file():
        raise ExportError(f"{folder}: preprocessor_config.json is missing; image models need their image processor")
    try:
        return transformers.AutoImageProcessor.from_pretrained(str(folder), use_fast=False, trust_remote_code=False)
    except Exception as err:
        raise ExportError(f"{folder}: transformers cannot load its image processor: {err}") from err


def preprocess(processor: Any, images: list[Any], graph_inputs: list[str]) -> dict[str, np.ndarray]:
    """The processor's arrays for ``images`` (loaded as transformers' pipelines load them),
    only those the graph takes."""
    from transformers.image_utils import load_image

    encoded = processor([load_image(image) for image in images], return_tensors="np")
    return {name: np.asarray(encoded[name]) for name in graph_inputs if name in encoded}


def reference_inputs(folder: Path, graph_inputs: list[str]) -> list[dict[str, np.ndarray]]:
    """Each validation image alone, then all of them as one batch (padded by processors
    that pad, such as DETR's)."""
    processor = reference_processor(folder)
    images = validation_images()
    singles = [preprocess(processor, [image], graph_inputs) for image in images]
    return [*singles, preprocess(processor, images, graph_inputs)]


def describe_inputs() -> list[str]:
    """How the validation images are described in the manifest's report."""
    return [f"{pattern} {w}x{h} {mode}" for (h, w, mode), pattern in zip(VALIDATION_IMAGES, _PATTERNS)]


def agreement_feeds(folder: Path, task: str, graph_inputs: list[str]) -> tuple[list[dict[str, np.ndarray]], int]:
    """The agreement set in batches of ``BATCH_SIZE``, and how many images it holds."""
    processor = reference_processor(folder)
    images = agreement_images(task)
    feeds = [preprocess(processor, images[start:start + BATCH_SIZE], graph_inputs)
             for start in range(0, len(images), BATCH_SIZE)]
    return feeds, len(images)


def describe_report(report: dict[str, Any]) -> dict[str, Any]:
    """The fp32 report with the images it was checked on in place of the texts."""
    report = {key: value for key, value in report.items() if key != "texts"}
    report["images"] = describe_inputs()
    return report
