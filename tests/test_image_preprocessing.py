"""Pixel values from the runtime's numpy preprocessing equal transformers' own (slow,
Pillow-based) image processors to 1e-5, over images of several sizes and aspect ratios,
grayscale, palette and RGBA included, for every size form the runtime reads. Images reach
both sides through each one's loader (transformers' ``load_image`` for the reference)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import transformers
from PIL import Image
from transformers.image_transforms import to_pil_image
from transformers.image_utils import load_image as hf_load_image

from edgeformers.models.errors import BundleError, InputError, MissingExtraError
from edgeformers.runtime.vision import ImageProcessor, load_image

ATOL = 1e-5
SIZES = [(37, 53), (64, 64), (120, 45), (7, 300), (301, 9), (224, 224), (2, 5)]


def synthetic(height: int, width: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    """Gradients plus noise: smooth regions and edges, so every resample filter matters."""
    rng = np.random.default_rng(seed + height * 1000 + width)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / max(width - 1, 1), y * 255 / max(height - 1, 1), (x + y) % 256], axis=-1)
    pixels = np.clip(base + rng.normal(0, 40, base.shape), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    if mode == "RGBA":
        alpha = Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8))
        image = Image.merge("RGBA", (*image.split(), alpha))
    elif mode != "RGB":
        image = image.convert(mode)
    return image


PROCESSORS = {
    "vit": lambda: transformers.ViTImageProcessor(size={"height": 32, "width": 48}),
    "vit-default": lambda: transformers.ViTImageProcessor(),
    "deit-crop": lambda: transformers.DeiTImageProcessor(size={"height": 40, "width": 40},
                                                         crop_size={"height": 32, "width": 32}),
    "deit-crop-larger-than-image": lambda: transformers.DeiTImageProcessor(
        size={"height": 20, "width": 30}, crop_size={"height": 25, "width": 25}, resample=0),
    "convnext-crop-pct": lambda: transformers.ConvNextImageProcessor(size={"shortest_edge": 40}, crop_pct=0.875),
    "convnext-384": lambda: transformers.ConvNextImageProcessor(size={"shortest_edge": 384}, resample=3),
    "clip-shortest-edge": lambda: transformers.CLIPImageProcessor(size={"shortest_edge": 30},
                                                                  crop_size={"height": 30, "width": 30}),
    "detr": lambda: transformers.DetrImageProcessor(size={"shortest_edge": 48, "longest_edge": 80}),
    "detr-max-hw": lambda: transformers.DetrImageProcessor(size={"max_height": 50, "max_width": 70}),
    "lanczos-no-normalize": lambda: transformers.ViTImageProcessor(size={"height": 30, "width": 20}, resample=1,
                                                                   do_normalize=False),
}


def ours_for(theirs) -> ImageProcessor:
    return ImageProcessor.from_config(theirs.to_dict())


@pytest.mark.parametrize("name", sorted(PROCESSORS))
@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P"])
def test_pixel_values_equal_transformers(name, mode):
    theirs = PROCESSORS[name]()
    ours = ours_for(theirs)
    for height, width in SIZES:
        image = synthetic(height, width, mode)
        want = theirs(hf_load_image(image), return_tensors="np")
        got = ours([load_image(image)])
        assert got["pixel_values"].dtype == np.float32
        assert got["pixel_values"].shape == want["pixel_values"].shape, (name, height, width)
        np.testing.assert_allclose(got["pixel_values"], want["pixel_values"], atol=ATOL, rtol=0)
        if "pixel_mask" in want:
            np.testing.assert_array_equal(got["pixel_mask"], want["pixel_mask"])


def test_detr_pads_a_batch_of_several_sizes_with_its_pixel_mask():
    theirs = PROCESSORS["detr"]()
    images = [synthetic(h, w) for h, w in ((37, 53), (120, 45), (64, 64))]
    want = theirs([hf_load_image(i) for i in images], return_tensors="np")
    got = ours_for(theirs)([load_image(i) for i in images])
    np.testing.assert_allclose(got["pixel_values"], want["pixel_values"], atol=ATOL, rtol=0)
    np.testing.assert_array_equal(got["pixel_mask"], want["pixel_mask"])
    assert got["pixel_mask"].sum() < got["pixel_mask"].size  # the batch really was padded


def test_the_processor_defaults_fill_keys_a_file_leaves_out():
    """A minimal preprocessor_config.json gets the class defaults transformers would use."""
    image = synthetic(50, 70)
    for kind, theirs in (("ViTImageProcessor", transformers.ViTImageProcessor()),
                         ("ConvNextImageProcessor", transformers.ConvNextImageProcessor()),
                         ("DeiTImageProcessor", transformers.DeiTImageProcessor()),
                         ("DetrImageProcessor", transformers.DetrImageProcessor())):
        got = ImageProcessor.from_config({"image_processor_type": kind})([load_image(image)])
        want = theirs(image, return_tensors="np")
        np.testing.assert_allclose(got["pixel_values"], want["pixel_values"], atol=ATOL, rtol=0)


def test_every_input_form_gives_the_same_pixels(tmp_path):
    image = synthetic(33, 47)
    path = tmp_path / "image.png"
    image.save(path)
    array = np.asarray(image)
    ours = ours_for(PROCESSORS["vit"]())
    reference = ours([load_image(image)])["pixel_values"]
    for form in (str(path), path, path.read_bytes(), array, array.astype(float), array.astype(np.int32)):
        np.testing.assert_array_equal(ours([load_image(form)])["pixel_values"], reference)
    # floats in [0, 1] are scaled to uint8 as transformers' to_pil_image scales them
    scaled = array.astype(np.float32) / 255
    np.testing.assert_array_equal(ours([load_image(scaled)])["pixel_values"],
                                  ours([load_image(to_pil_image(scaled))])["pixel_values"])
    gray = np.asarray(image.convert("L"))
    for form in (gray, gray[..., None]):
        want = ours([load_image(image.convert("L"))])["pixel_values"]
        np.testing.assert_array_equal(ours([load_image(form)])["pixel_values"], want)


def test_exif_orientation_is_applied_as_transformers_does():
    image = synthetic(20, 40)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif.tobytes())
    data = buffer.getvalue()
    loaded = load_image(data)
    assert loaded.size == hf_load_image(Image.open(io.BytesIO(data))).size == (20, 40)
    np.testing.assert_array_equal(np.asarray(loaded), np.asarray(hf_load_image(Image.open(io.BytesIO(data)))))


@pytest.mark.parametrize("value, message", [
    ("/no/such/image.png", "is not a file"),
    (b"definitely not an image", "not an image file"),
    (np.zeros((0, 5, 3), np.uint8), "empty image"),
    (np.zeros((4, 5, 2), np.uint8), "shape"),
    (np.zeros((2, 4, 5, 3), np.uint8), "shape"),
    (np.full((4, 4, 3), np.nan, np.float32), "NaN"),
    (np.full((4, 4, 3), 300.5), "pixel values span"),
    (np.zeros((4, 4, 3), dtype=object), "array of object"),
    (np.zeros((4, 4, 3), dtype=bool), "array of bool"),
    (12, "is int"),
    ("https://example.com/cat.png", "URL"),
])
def test_bad_images_are_input_errors_naming_the_input(value, message):
    with pytest.raises(InputError, match=message) as info:
        load_image(value, "inputs[3]")
    assert "inputs[3]" in str(info.value)


def test_truncated_and_zero_width_images(tmp_path):
    buffer = io.BytesIO()
    synthetic(64, 64).save(buffer, format="PNG")
    path = tmp_path / "truncated.png"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(InputError, match="truncated or corrupt"):
        load_image(str(path))
    with pytest.raises(InputError, match="empty image"):
        load_image(Image.new("RGB", (0, 10)))
    (tmp_path / "text.png").write_text("hello")
    with pytest.raises(InputError, match="not an image file"):
        load_image(tmp_path / "text.png")


@pytest.mark.parametrize("config, field", [
    ({"size": {"longest_edge": 30}}, "size"),
    ({"size": {"height": 0, "width": 3}}, "size.height"),
    ({"size": "large"}, "size"),
    ({"size": 32, "resample": 9}, "resample"),
    ({"size": 32, "image_mean": [0.5, 0.5]}, "image_mean"),
    ({"size": 32, "image_std": [0.5, 0, 0.5]}, "image_std"),
    ({"size": 32, "do_center_crop": True}, "crop_size"),
    ({"size": 32, "do_rescale": "yes"}, "do_rescale"),
    ({"image_processor_type": "ConvNextImageProcessor", "size": 32, "crop_pct": 2}, "crop_pct"),
])
def test_a_config_the_runtime_cannot_use_is_a_bundle_error_naming_the_field(config, field):
    with pytest.raises(BundleError, match=field):
        ImageProcessor.from_config({"image_mean": [0.5] * 3, "image_std": [0.5] * 3, **config})


def test_without_pillow_the_error_says_what_to_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_pil(name, *args, **kwargs):
        if name == "PIL" or name.startswith("PIL."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pil)
    with pytest.raises(MissingExtraError, match=r'pip install "edgeformers\[vision\]"'):
        load_image(np.zeros((4, 4, 3), np.uint8))
