"""Whisper's language and task on a multilingual checkpoint: a tiny random Whisper (2 layers,
d_model 32) with a multilingual vocabulary layout (51865 ids: <|endoftext|> 50257,
<|startoftranscript|> 50258, 99 languages, translate/transcribe, <|notimestamps|> 50363,
timestamps after it), its tokenizer derived from whisper-tiny.en's by shifting the special
tokens one place. The runtime's prompt (language detection, forced language, translate) and
answers must be transformers.pipeline's."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from edgeformers.runtime import pipeline
from edgeformers.runtime.cli import cli
from tests.fixtures.whisper_real import speech

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def _multilingual_tokenizer(english: dict[str, Any]) -> dict[str, Any]:
    """whisper-tiny.en's tokenizer.json with one more ordinary token at 50256 and every added
    token one id later: the id layout of openai's multilingual vocabulary."""
    tokenizer = json.loads(json.dumps(english))
    tokenizer["model"]["vocab"]["<|placeholder|>"] = 50256
    for token in tokenizer["added_tokens"]:
        token["id"] += 1
    return tokenizer


@pytest.fixture(scope="module")
def multilingual(whisper_tiny_en: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("whisper-multilingual")
    checkpoint = root / "checkpoint"
    torch.manual_seed(0)
    config = transformers.WhisperConfig(
        vocab_size=51865, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=80,
        pad_token_id=50257, bos_token_id=50257, eos_token_id=50257, decoder_start_token_id=50258)
    transformers.WhisperForConditionalGeneration(config).eval().save_pretrained(checkpoint)
    english = json.loads((whisper_tiny_en / "tokenizer.json").read_text())
    tokenizer = _multilingual_tokenizer(english)
    (checkpoint / "tokenizer.json").write_text(json.dumps(tokenizer))
    for name in ("tokenizer_config.json", "special_tokens_map.json", "preprocessor_config.json"):
        shutil.copy(whisper_tiny_en / name, checkpoint / name)
    ids = {t["content"]: t["id"] for t in tokenizer["added_tokens"]}
    languages = {t: i for t, i in ids.items() if 50259 <= i <= 50357}
    generation = json.loads((whisper_tiny_en / "generation_config.json").read_text())
    generation.update(
        decoder_start_token_id=50258, bos_token_id=50257, eos_token_id=50257, pad_token_id=50257,
        is_multilingual=True, lang_to_id=languages, task_to_id={"translate": 50358, "transcribe": 50359},
        no_timestamps_token_id=50363, prev_sot_token_id=50361, forced_decoder_ids=[[1, None], [2, 50359]],
        begin_suppress_tokens=[220, 50257], suppress_tokens=[1, 2, 7, 50358, 50359, 50360, 50361, 50362])
    (checkpoint / "generation_config.json").write_text(json.dumps(generation))
    bundle = root / "bundle"
    result = CliRunner().invoke(cli, ["export", str(checkpoint), str(bundle), "--task",
                                      "automatic-speech-recognition", "--dtype", "fp32"])
    assert result.exit_code == 0, result.output
    return checkpoint, bundle


@pytest.mark.parametrize("kwargs", [
    {},  # language detected from the first step, then <|transcribe|> as forced_decoder_ids say
    {"generate_kwargs": {"language": "french"}},
    {"language": "de", "task": "translate"},
    {"generate_kwargs": {"task": "translate"}, "return_timestamps": True},
])
def test_language_and_task_equal_transformers(multilingual: tuple[Path, Path], kwargs: dict[str, Any]) -> None:
    checkpoint, bundle = multilingual
    audio, _ = speech("short")
    ours = pipeline("automatic-speech-recognition", str(bundle), device="cpu")
    reference = transformers.pipeline("automatic-speech-recognition", model=str(checkpoint), device="cpu")
    cap = {"max_new_tokens": 12}
    mine = {**kwargs, "generate_kwargs": {**kwargs.get("generate_kwargs", {}), **cap}}
    answer = ours(audio, **mine)
    assert answer == reference(audio.copy(), **mine)
    assert answer["text"].strip()  # random weights still say something: the comparison is not of two blanks


def test_prompt_tokens(multilingual: tuple[Path, Path]) -> None:
    """The forced prompt the runtime builds, token by token: language, then task, no
    <|notimestamps|> when timestamps are asked for."""
    _, bundle = multilingual
    ours = pipeline("automatic-speech-recognition", str(bundle), device="cpu")
    assert ours._prompt_head("french", None) == ([50265, 50359], False)
    assert ours._prompt_head(None, "translate") == ([50358], True)
    assert ours._prompt_head(None, None) == ([50359], True)
    with pytest.raises(Exception, match="Unsupported language"):
        ours(np.zeros(1600, dtype=np.float32), language="klingon")


def test_validate_rechecks_a_whisper_bundle_with_audio(multilingual: tuple[Path, Path]) -> None:
    """`edgeformers validate` runs Whisper's own checks (synthetic audio features, not text),
    passes at the family's tolerance and fails loud at an impossible one."""
    from edgeformers.exporter.validate import validate_bundle
    from edgeformers.models.errors import ValidationError

    _, bundle = multilingual
    reports = validate_bundle(bundle)
    assert reports["fp32"]["passed"] and reports["fp32"]["greedy_rows_identical"] >= 1
    with pytest.raises(ValidationError):
        validate_bundle(bundle, atol=1e-12)


def test_quantize_adds_a_whisper_q8_pair(multilingual: tuple[Path, Path], tmp_path: Path) -> None:
    """`edgeformers quantize` on an fp32-only Whisper bundle (a copy) quantizes the encoder and
    the merged decoder inside its If branches, holds the pair to Whisper's greedy-token
    agreement on synthetic audio (the check runs the pair through the runtime's decoder)."""
    import onnx

    from edgeformers.models.agreement import GREEDY_TOKEN_AGREEMENT
    from edgeformers.runtime.manifest import Manifest
    from tests.fixtures.floors import floor_args

    _, original = multilingual
    bundle = shutil.copytree(original, tmp_path / "bundle")
    result = CliRunner().invoke(cli, ["quantize", str(bundle), "--dtype", "q8",
                                      *floor_args("automatic-speech-recognition")])
    assert result.exit_code == 0, result.output
    manifest = Manifest.read(bundle)
    report = manifest.validation["q8"]
    assert report["metric"] == GREEDY_TOKEN_AGREEMENT and report["passed"] and report["value"] >= report["threshold"]
    decoder = onnx.load(str(bundle / manifest.variants["q8"].files["decoder_model_merged"]), load_external_data=False)
    branches = [attr.g for node in decoder.graph.node if node.op_type == "If" for attr in node.attribute]
    assert branches and all(any(n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul") for n in branch.node)
                            for branch in branches), "the merged decoder's If branches must be quantized"


def test_bench_times_a_whisper_bundle(multilingual: tuple[Path, Path]) -> None:
    from tests.fixtures.bench_report import bench_report, check_rows

    _, bundle = multilingual
    report, _ = bench_report(bundle, "--dtype", "fp32", "--batch", "1", "--seq-len", "2")
    check_rows(report, ["fp32"], [1], [2], "seconds")
