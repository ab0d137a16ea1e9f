"""Image inputs -> RGB Pillow images, loaded the way transformers' pipelines load them
(``transformers.image_utils.load_image``: open, apply the EXIF orientation, convert to RGB,
so grayscale, palette and RGBA images become 3-channel RGB with alpha dropped).

Pillow is the optional extra ``vision``: it is imported here, lazily, and only decodes and
resizes. Everything after the resize is numpy (``processor.py``).
"""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np

from edgeformers.models.errors import InputError, MissingExtraError

INSTALL_HINT = 'pip install "edgeformers[vision]"'
#: What a single image may be, for error messages.
ACCEPTED = "a path to an image file, image bytes, a PIL.Image, or a numpy array (H, W) or (H, W, 1|3|4)"


def pillow() -> Any:
    """The ``PIL`` package, or a :class:`MissingExtraError` that says what to install."""
    try:
        import PIL.Image
        import PIL.ImageOps  # noqa: F401  (exif_transpose)
    except ImportError:
        raise MissingExtraError(f"image pipelines need Pillow, which is not installed: {INSTALL_HINT}") from None
    return PIL


def is_image(value: Any) -> bool:
    """Whether ``value`` is one image (not a list of them)."""
    if isinstance(value, (str, bytes, bytearray, memoryview, os.PathLike, np.ndarray)):
        return True
    return type(value).__module__.startswith("PIL.")


def load_image(value: Any, where: str = "inputs") -> Any:
    """One input as an RGB ``PIL.Image``; anything that is not a readable, non-empty image
    is an :class:`InputError` naming ``where``."""
    PIL = pillow()
    if isinstance(value, PIL.Image.Image):
        image = value
        try:
            image.load()
        except Exception as err:  # a lazily opened, truncated file
            raise InputError(f"{where}: Pillow cannot read this image ({type(err).__name__}: {err})") from None
    elif isinstance(value, (str, os.PathLike)):
        image = _open_path(PIL, value, where)
    elif isinstance(value, (bytes, bytearray, memoryview)):
        image = _decode(PIL, io.BytesIO(bytes(value)), f"{where} ({len(value)} bytes)")
    elif isinstance(value, np.ndarray):
        image = _from_array(PIL, value, where)
    else:
        raise InputError(f"{where} is {type(value).__name__}; expected {ACCEPTED}")
    if image.width == 0 or image.height == 0:
        raise InputError(f"{where} is an empty image ({image.width}x{image.height} pixels)")
    try:
        image = PIL.ImageOps.exif_transpose(image)
        return image if image.mode == "RGB" else image.convert("RGB")
    except Exception as err:  # an image mode Pillow cannot convert
        raise InputError(f"{where}: cannot convert this {image.mode} image to RGB ({err})") from None


def _open_path(PIL: Any, value: str | os.PathLike[str], where: str) -> Any:
    path = os.fspath(value)
    if isinstance(path, str) and path.startswith(("http://", "https://")):
        raise InputError(f"{where} is a URL ({path[:80]}); the runtime reads local files only: download it first")
    if not os.path.isfile(path):
        raise InputError(f"{where}: {path!r} is not a file; expected {ACCEPTED}")
    with open(path, "rb") as file:
        return _decode(PIL, io.BytesIO(file.read()), f"{where} ({path})")


def _decode(PIL: Any, stream: io.BytesIO, where: str) -> Any:
    """Decode fully now, so a truncated file fails here and not in a later step."""
    try:
        image = PIL.Image.open(stream)
        image.load()
    except PIL.Image.DecompressionBombError as err:
        raise InputError(f"{where}: {err}") from None
    except PIL.UnidentifiedImageError:
        raise InputError(f"{where} is not an image file Pillow can read (PNG, JPEG, BMP, GIF, WebP, ...)") from None
    except (OSError, ValueError, SyntaxError, EOFError) as err:
        raise InputError(f"{where}: the image is truncated or corrupt ({err})") from None
    return image


def _from_array(PIL: Any, array: np.ndarray, where: str) -> Any:
    """An (H, W) or (H, W, C) array as transformers' ``to_pil_image`` converts one: uint8
    as is; other numbers holding whole values in [0, 255] cast; floats in [0, 1] scaled by
    255 (then cast, truncating, as transformers does)."""
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise InputError(f"{where} is an array of shape {array.shape}; expected (H, W) or (H, W, 1|3|4), channels last")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise InputError(f"{where} is an empty image (array of shape {array.shape})")
    if array.dtype == np.bool_ or not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise InputError(f"{where} is an array of {array.dtype}; expected uint8 pixels or floats")
    if array.dtype != np.uint8:
        if not np.isfinite(array).all():
            raise InputError(f"{where} holds NaN or infinite values")
        whole = np.array_equal(array, np.trunc(array))
        low, high = float(array.min()), float(array.max())
        if whole and 0 <= low and high <= 255:
            array = array.astype(np.uint8)
        elif not whole and 0 <= low and high <= 1:
            array = (array.astype(np.float64) * 255).astype(np.float32).astype(np.uint8)
        else:
            raise InputError(
                f"{where}: pixel values span [{low:g}, {high:g}]; expected whole numbers in [0, 255] or floats in [0, 1]"
            )
    return PIL.Image.fromarray(np.ascontiguousarray(array))  # mode L, RGB or RGBA from the shape


def image_batch(inputs: Any, name: str = "inputs") -> tuple[list[Any], bool]:
    """``(RGB images, was_single)`` for one image or a list of them (transformers' pipelines
    take both); each item is loaded and checked, an error names its index."""
    if is_image(inputs):
        return [load_image(inputs, name)], True
    if isinstance(inputs, (list, tuple)):
        if not inputs:
            raise InputError(f"{name} is an empty list; expected one image or a list of images")
        return [load_image(item, f"{name}[{index}]") for index, item in enumerate(inputs)], False
    raise InputError(f"{name} is {type(inputs).__name__}; expected {ACCEPTED}, or a list of them")
