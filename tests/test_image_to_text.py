"""image-to-text: a tiny VisionEncoderDecoder (ViT encoder, GPT-2 decoder with cross attention)
exported through the CLI (fp32 + q8) captions images exactly as
``transformers.pipeline("image-to-text")`` does on the same checkpoint: greedy with the
checkpoint's max_length, max_new_tokens, beams with several returned sequences, repetition
penalty; images of several sizes, grayscale and RGBA, alone and in batches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import transformers

from edgeformers.exporter.vision_inputs import synthetic_image
from edgeformers.models.errors import InputError
from edgeformers.runtime import pipeline
from edgeformers.runtime.manifest import Manifest
from tests.fixtures.floors import floor_for
from tests.fixtures.vision_checkpoints import build_image_to_text_checkpoint, export_bundle

ARCHS = ("vision-encoder-decoder",)
IMAGES = [(50, 70, "RGB", "noise"), (120, 40, "L", "disc"), (33, 33, "RGBA", "stripes")]


@pytest.fixture(scope="module")
def captioner(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("image-to-text")
    checkpoint = build_image_to_text_checkpoint(root / "vit-gpt2")
    return checkpoint, export_bundle(checkpoint, root / "vit-gpt2-bundle", "image-to-text")


def images() -> list[Any]:
    return [synthetic_image(h, w, mode, seed=i, pattern=pattern) for i, (h, w, mode, pattern) in enumerate(IMAGES)]


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.filterwarnings("ignore:The class `AutoModelForVision2Seq` is deprecated:FutureWarning")
def test_captions_equal_transformers(captioner):
    checkpoint, bundle = captioner
    ours = pipeline("image-to-text", bundle, device="cpu")
    theirs = transformers.pipeline("image-to-text", model=str(checkpoint))
    batch = images()
    for kwargs in ({}, {"max_new_tokens": 5},
                   {"generate_kwargs": {"num_beams": 3, "num_return_sequences": 2}},
                   {"generate_kwargs": {"repetition_penalty": 1.5, "max_new_tokens": 20}}):
        want = theirs(batch, **kwargs)
        assert ours(batch, **kwargs) == want, kwargs
        assert ours(batch, batch_size=2, **kwargs) == want, kwargs
    assert ours(batch[1]) == theirs(batch[1])  # one image: one list of records
    assert all(record["generated_text"] for record in ours(batch[0]))


def test_q8_is_recorded_and_held_to_its_floor(captioner):
    _, bundle = captioner
    manifest = Manifest.read(bundle)
    assert manifest.validation["fp32"]["greedy_rows_identical"] == 10
    report = manifest.validation["q8"]
    assert report["metric"] == "greedy_token_agreement" and report["passed"]
    assert report["value"] >= floor_for("image-to-text")
    assert set(manifest.variants["q8"].files) == {"encoder_model", "decoder_model_merged"}
    assert manifest.generation["decoder"]["cross_past_inputs"] == []  # GPT-2 recomputes cross attention
    captions = pipeline("image-to-text", bundle, device="cpu", dtype="q8")(images(), max_new_tokens=4)
    assert all(len(c) == 1 and isinstance(c[0]["generated_text"], str) for c in captions)


def test_bad_arguments_are_input_errors(captioner):
    _, bundle = captioner
    captions = pipeline("image-to-text", bundle, device="cpu")
    image = synthetic_image(16, 16)
    for kwargs, message in (({"prompt": "a photo of"}, "prompt"),
                            ({"max_new_tokens": 0}, "max_new_tokens"),
                            ({"max_new_tokens": 3, "generate_kwargs": {"max_new_tokens": 4}}, "both"),
                            ({"generate_kwargs": {"beams": 2}}, "unknown generation argument"),
                            ({"generate_kwargs": "greedy"}, "generate_kwargs"),
                            ({"max_new_tokens": 100}, "positions")):
        with pytest.raises(InputError, match=message):
            captions(image, **kwargs)
    with pytest.raises(InputError, match=r"inputs\[1\] is an empty image"):
        captions([image, synthetic_image(4, 4).crop((0, 0, 0, 4))])
    assert captions(image, max_new_tokens=2)[0]["generated_text"] is not None


def test_validate_rechecks_the_bundle_against_pytorch(captioner):
    from edgeformers.exporter.validate import validate_bundle

    _, bundle = captioner
    reports = validate_bundle(bundle)
    assert reports["fp32"]["passed"] and reports["fp32"]["greedy_rows_identical"] == 10
    assert reports["q8"]["value"] == Manifest.read(bundle).validation["q8"]["value"]


def test_bench_times_captions_per_new_token(captioner):
    from tests.fixtures.bench_report import bench_report, check_rows

    _, bundle = captioner
    report, _ = bench_report(bundle, "--dtype", "fp32", "--batch", "2", "--seq-len", "64", "--new-tokens", "4")
    check_rows(report, ["fp32"], [2], [64], "pixels", 4)


def test_quantize_remakes_the_caption_q8_pair_as_export_made_it(captioner, tmp_path):
    """`edgeformers quantize --dtype q8` on a copy of the ViT+GPT-2 bundle re-makes its q8
    encoder + merged decoder: the same files export wrote (quantization is deterministic),
    held to the same greedy-token agreement, no stale file left behind."""
    import shutil

    from click.testing import CliRunner

    from edgeformers.runtime.cli import cli
    from tests.fixtures.floors import floor_args

    _, original = captioner
    bundle = shutil.copytree(original, tmp_path / "bundle")
    result = CliRunner().invoke(cli, ["quantize", str(bundle), "--dtype", "q8", *floor_args("image-to-text")])
    assert result.exit_code == 0, result.output
    before, after = Manifest.read(original), Manifest.read(bundle)
    assert after.variants["q8"].files == before.variants["q8"].files
    for name in after.variants["q8"].files.values():
        assert after.files[name] == before.files[name], name  # same size and sha256
    assert after.validation["q8"]["passed"] and after.validation["q8"]["value"] >= floor_for("image-to-text")
    assert sorted(p.relative_to(bundle) for p in bundle.rglob("*")) == \
        sorted(p.relative_to(original) for p in original.rglob("*"))
