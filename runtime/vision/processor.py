"""Image preprocessing driven by a checkpoint's ``preprocessor_config.json``, written once
for every image model and equal to transformers' (slow, Pillow-based) image processors:
ViTImageProcessor, DeiTImageProcessor, ConvNextImageProcessor, DetrImageProcessor and the
processors that share their steps (tests/test_image_preprocessing.py checks pixel values
to 1e-5 against transformers on images of several sizes, grayscale and RGBA included).

The steps, in transformers' order: resize with Pillow (the configured filter, so pixels
match), center crop, rescale, normalize, channels first, and for DETR-style processors pad
to the batch's largest image with a ``pixel_mask``. Rescale and normalize are one lookup
table per channel, computed with the same float64/float32 steps transformers takes, so
they cost a gather instead of four passes over the image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeformers.models.errors import BundleError

IMAGENET_STANDARD = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
IMAGENET_DEFAULT = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
#: PILImageResampling / PIL.Image.Resampling values.
RESAMPLE_NAMES = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}

#: image_processor_type -> its class defaults (what transformers uses for a key the file omits).
_DEFAULTS: dict[str, dict[str, Any]] = {
    "ViTImageProcessor": dict(size={"height": 224, "width": 224}, resample=2, mean_std=IMAGENET_STANDARD),
    "DeiTImageProcessor": dict(size={"height": 256, "width": 256}, resample=3, do_center_crop=True,
                               crop_size={"height": 224, "width": 224}, mean_std=IMAGENET_STANDARD),
    "ConvNextImageProcessor": dict(size={"shortest_edge": 384}, resample=2, crop_pct=224 / 256,
                                   mean_std=IMAGENET_STANDARD),
    "DetrImageProcessor": dict(size={"shortest_edge": 800, "longest_edge": 1333}, resample=2, do_pad=True,
                               mean_std=IMAGENET_DEFAULT),
}
#: Processors whose ``shortest_edge`` resize follows ConvNeXT's crop_pct rule.
_CROP_PCT_TYPES = ("ConvNextImageProcessor",)
#: Processors that read a bare integer ``size`` as the shortest edge (default_to_square=False).
_SHORTEST_EDGE_TYPES = ("ConvNextImageProcessor", "DetrImageProcessor")
SIZE_FORMS = "{height, width}, {shortest_edge}, {shortest_edge, longest_edge} or {max_height, max_width}"


@dataclass(frozen=True)
class ImageProcessor:
    """The preprocessing of one checkpoint. Build it with :meth:`from_config`; call it with
    RGB Pillow images (``images.load_image``)."""

    kind: str
    do_resize: bool
    size: dict[str, int]
    resample: int
    do_center_crop: bool
    crop_size: tuple[int, int] | None
    crop_pct: float | None
    do_rescale: bool
    rescale_factor: float
    do_normalize: bool
    image_mean: tuple[float, ...]
    image_std: tuple[float, ...]
    do_pad: bool
    pad_size: tuple[int, int] | None = None

    @classmethod
    def from_config(cls, config: dict[str, Any], where: str = "preprocessor_config.json") -> ImageProcessor:
        """Read and check a ``preprocessor_config.json`` object; a value the runtime cannot
        use is a :class:`BundleError` naming the field."""
        kind = config.get("image_processor_type") or config.get("feature_extractor_type") or ""
        if not isinstance(kind, str):
            raise BundleError(f"{where}: image_processor_type should be a class name, got {kind!r:.60}")
        kind = kind.removesuffix("Fast").replace("FeatureExtractor", "ImageProcessor")
        defaults = _DEFAULTS.get(kind, {})

        def get(name: str, fallback: Any = None) -> Any:
            value = config.get(name)
            if value is None:
                value = defaults.get(name, fallback)
            return value

        def flag(name: str, fallback: bool) -> bool:
            value = get(name, fallback)
            if not isinstance(value, bool):
                raise BundleError(f"{where}: {name} should be true or false, got {value!r:.60}")
            return value

        mean, std = defaults.get("mean_std", (None, None))
        do_resize = flag("do_resize", True)
        size = _size(get("size"), kind, config.get("max_size"), where) if do_resize else {}
        resample = get("resample", 2)
        if resample not in RESAMPLE_NAMES or isinstance(resample, bool):
            raise BundleError(f"{where}: resample should be one of {RESAMPLE_NAMES} (Pillow's filters), got {resample!r}")
        do_center_crop = flag("do_center_crop", False)
        crop = _square_or_pair(get("crop_size"), "crop_size", where) if do_center_crop else None
        if do_center_crop and crop is None:
            raise BundleError(f"{where}: do_center_crop is true but crop_size is missing")
        crop_pct = None
        if kind in _CROP_PCT_TYPES and do_resize:
            crop_pct = get("crop_pct")
            if not _number(crop_pct) or not 0 < crop_pct <= 1:
                raise BundleError(f"{where}: crop_pct should be a number in (0, 1], got {crop_pct!r:.60}")
        do_rescale, do_normalize = flag("do_rescale", True), flag("do_normalize", True)
        factor = get("rescale_factor", 1 / 255)
        if not _number(factor):
            raise BundleError(f"{where}: rescale_factor should be a number, got {factor!r:.60}")
        image_mean, image_std = get("image_mean", mean), get("image_std", std)
        if do_normalize:
            image_mean = _channels(image_mean, "image_mean", where)
            image_std = _channels(image_std, "image_std", where)
            if any(s == 0 for s in image_std):
                raise BundleError(f"{where}: image_std has a zero")
        do_pad = flag("do_pad", False)
        pad_size = _square_or_pair(config.get("pad_size"), "pad_size", where) if do_pad else None
        return cls(kind=kind, do_resize=do_resize, size=size, resample=int(resample), do_center_crop=do_center_crop,
                   crop_size=crop, crop_pct=crop_pct, do_rescale=do_rescale, rescale_factor=float(factor),
                   do_normalize=do_normalize, image_mean=tuple(image_mean or ()), image_std=tuple(image_std or ()),
                   do_pad=do_pad, pad_size=pad_size)

    # --- sizes ---------------------------------------------------------------------------

    def resized_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) after the resize step, by transformers' rule for this size form."""
        size = self.size
        if "height" in size:
            return size["height"], size["width"]
        if "max_height" in size:  # DETR's max_height/max_width: fit inside, keep the aspect ratio
            scale = min(size["max_height"] / height, size["max_width"] / width)
            return int(height * scale), int(width * scale)
        shortest = size["shortest_edge"]
        if "longest_edge" in size:
            return _detr_size(height, width, shortest, size["longest_edge"])
        if self.crop_pct is not None:  # ConvNeXT: below 384, resize to shortest/crop_pct then crop
            if shortest >= 384:
                return shortest, shortest
            shortest = int(shortest / self.crop_pct)
        short, long = (width, height) if width <= height else (height, width)
        new_long = int(shortest * long / short)
        return (new_long, shortest) if width <= height else (shortest, new_long)

    # --- the steps ------------------------------------------------------------------------

    def pixels(self, image: Any) -> np.ndarray:
        """One RGB Pillow image -> (3, H, W) float32, before any padding."""
        if self.do_resize:
            height, width = self.resized_size(image.height, image.width)
            if height < 1 or width < 1:
                raise BundleError(f"the {self.kind or 'image'} resize gives a {width}x{height} image")
            image = image.resize((width, height), resample=self.resample)
        array = np.asarray(image, dtype=np.uint8)
        crop = self.crop_size
        if self.crop_pct is not None and self.size["shortest_edge"] < 384:
            crop = (self.size["shortest_edge"],) * 2
        if crop is not None:
            array = center_crop(array, crop)
        tables = self._tables()
        out = np.empty((3, array.shape[0], array.shape[1]), dtype=np.float32)
        for channel in range(3):
            np.take(tables[channel], array[..., channel], out=out[channel])
        return out

    def _tables(self) -> np.ndarray:
        """(3, 256) float32: what rescale then normalize make of each uint8 value, with
        transformers' dtypes (rescale in float64 cast to float32, normalize in float32)."""
        cached = self.__dict__.get("_lut")
        if cached is not None:
            return cached
        values = np.arange(256, dtype=np.float64)
        values = (values * self.rescale_factor).astype(np.float32) if self.do_rescale else values.astype(np.float32)
        tables = np.stack([values] * 3)
        if self.do_normalize:
            mean = np.asarray(self.image_mean, dtype=np.float32)[:, None]
            std = np.asarray(self.image_std, dtype=np.float32)[:, None]
            tables = (tables - mean) / std
        tables = np.ascontiguousarray(tables, dtype=np.float32)
        object.__setattr__(self, "_lut", tables)
        return tables

    def __call__(self, images: list[Any]) -> dict[str, np.ndarray]:
        """RGB Pillow images -> ``{"pixel_values": (N, 3, H, W) float32}``, plus
        ``pixel_mask`` (N, H, W) int64 when the processor pads (DETR): images are padded
        bottom-right with zeros to the largest height and width (or ``pad_size``)."""
        arrays = [self.pixels(image) for image in images]
        if not self.do_pad:
            shapes = {a.shape for a in arrays}
            if len(shapes) > 1:
                raise BundleError(f"the preprocessing gives images of several sizes {sorted(shapes)} and no padding")
            return {"pixel_values": np.stack(arrays)}
        height = max(a.shape[1] for a in arrays)
        width = max(a.shape[2] for a in arrays)
        if self.pad_size is not None:
            height, width = max(height, self.pad_size[0]), max(width, self.pad_size[1])
        values = np.zeros((len(arrays), 3, height, width), dtype=np.float32)
        mask = np.zeros((len(arrays), height, width), dtype=np.int64)
        for index, array in enumerate(arrays):
            values[index, :, : array.shape[1], : array.shape[2]] = array
            mask[index, : array.shape[1], : array.shape[2]] = 1
        return {"pixel_values": values, "pixel_mask": mask}


def center_crop(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """transformers' ``center_crop`` on an (H, W, C) array: the centred window, zero-padded
    (centred, rounding up) where the image is smaller than ``size``."""
    height, width = array.shape[:2]
    crop_h, crop_w = size
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    if top >= 0 and left >= 0:
        return array[top: top + crop_h, left: left + crop_w]
    new_h, new_w = max(crop_h, height), max(crop_w, width)
    padded = np.zeros((new_h, new_w) + array.shape[2:], dtype=array.dtype)
    pad_top, pad_left = math.ceil((new_h - height) / 2), math.ceil((new_w - width) / 2)
    padded[pad_top: pad_top + height, pad_left: pad_left + width] = array
    top, left = top + pad_top, left + pad_left
    return padded[max(0, top): min(new_h, top + crop_h), max(0, left): min(new_w, left + crop_w)]


def _detr_size(height: int, width: int, size: int, max_size: int) -> tuple[int, int]:
    """DETR's ``get_size_with_aspect_ratio``: shortest edge to ``size`` unless the longest
    would pass ``max_size``, then the longest to ``max_size``."""
    raw = None
    low, high = float(min(height, width)), float(max(height, width))
    if high / low * size > max_size:
        raw = max_size * low / high
        size = int(round(raw))
    if (height <= width and height == size) or (width <= height and width == size):
        return height, width
    if width < height:
        return (int(raw * height / width) if raw is not None else int(size * height / width)), size
    return size, (int(raw * width / height) if raw is not None else int(size * width / height))


def _size(value: Any, kind: str, max_size: Any, where: str) -> dict[str, int]:
    """The ``size`` field as one of the dict forms; a bare int as the processor reads it."""
    if _int(value):
        if kind in _SHORTEST_EDGE_TYPES:
            value = {"shortest_edge": value}
            if kind == "DetrImageProcessor":
                value["longest_edge"] = max_size if _int(max_size) else 1333
        else:
            value = {"height": value, "width": value}
    elif isinstance(value, (list, tuple)) and len(value) == 2 and all(_int(v) for v in value):
        value = {"height": value[0], "width": value[1]}
    if not isinstance(value, dict) or not value:
        raise BundleError(f"{where}: size should be an object such as {SIZE_FORMS}, got {value!r:.80}")
    keys = frozenset(value)
    forms = ({"height", "width"}, {"shortest_edge"}, {"shortest_edge", "longest_edge"}, {"max_height", "max_width"})
    if keys not in [frozenset(f) for f in forms]:
        raise BundleError(f"{where}: size {value!r:.80} is not a form the runtime reads; it reads {SIZE_FORMS}")
    for key, number in value.items():
        if not _int(number) or number < 1:
            raise BundleError(f"{where}: size.{key} should be a positive integer, got {number!r:.60}")
    return dict(value)


def _square_or_pair(value: Any, name: str, where: str) -> tuple[int, int] | None:
    if value is None:
        return None
    if _int(value):
        value = {"height": value, "width": value}
    if not (isinstance(value, dict) and set(value) == {"height", "width"}
            and all(_int(v) and v >= 1 for v in value.values())):
        raise BundleError(f"{where}: {name} should be {{height, width}} positive integers, got {value!r:.80}")
    return value["height"], value["width"]


def _channels(value: Any, name: str, where: str) -> tuple[float, ...]:
    if _number(value):
        value = [value] * 3
    if not (isinstance(value, (list, tuple)) and len(value) == 3 and all(_number(v) for v in value)):
        raise BundleError(f"{where}: {name} should be 3 numbers (R, G, B), got {value!r:.80}")
    return tuple(float(v) for v in value)


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
