"""Slow sentencepiece tokenizers converted to tokenizer.json at export (exporter/tokenizer_convert.py).

Every expected value comes from transformers' slow tokenizer in the test itself; the
converted side is read the way the runtime reads it (edgeformers.runtime.tokenizer). The
checkpoints ship no tokenizer.json (tests/fixtures/sentencepiece_models.py).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import transformers
from click.testing import CliRunner

from edgeformers.exporter import spm_convert, tokenizer_convert
from edgeformers.exporter.tokenizer_convert import HARD_TEXTS, write_checked_tokenizer
from edgeformers.exporter.validate import VALIDATION_TEXTS
from edgeformers.models.errors import ExportError
from edgeformers.models.processing import decode_strips
from edgeformers.runtime import pipeline
from edgeformers.runtime.cli import cli
from edgeformers.runtime.tokenizer import TextTokenizer
from tests.fixtures import sentencepiece_models as spm_fixtures

TEXTS = [*VALIDATION_TEXTS, *HARD_TEXTS, *spm_fixtures.TARGET_ONLY,
         ">>fr<< The cat likes the red ball.", ">>de<<Hello world", "a </s> b<unk>c <pad> d", "ß", "ßẞ 🚀🚀 x"]


@pytest.fixture(scope="session")
def marian_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return spm_fixtures.build_marian_checkpoint(tmp_path_factory.mktemp("spm") / "marian")


@pytest.fixture(scope="session")
def t5_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return spm_fixtures.build_t5_checkpoint(tmp_path_factory.mktemp("spm") / "t5")


@pytest.fixture(scope="session")
def xlmr_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return spm_fixtures.build_xlmr_checkpoint(tmp_path_factory.mktemp("spm") / "xlmr")


def converted(checkpoint: Path, tmp_path: Path) -> Path:
    """The files the exporter writes for ``checkpoint``, beside its config.json (as in a bundle)."""
    work = tmp_path / "work"
    work.mkdir()
    shutil.copyfile(checkpoint / "config.json", work / "config.json")
    assert write_checked_tokenizer(checkpoint, work) is True
    return work


def runtime_decode(tokenizer: TextTokenizer, ids: list[int], model_type: str) -> str:
    text = tokenizer.decode(ids, skip_special_tokens=True)
    return text.strip() if decode_strips(model_type) else text


def test_marian_ids_and_decoded_text_equal_marian_tokenizer(marian_checkpoint, tmp_path):
    work = converted(marian_checkpoint, tmp_path)
    slow = transformers.MarianTokenizer.from_pretrained(str(marian_checkpoint))
    ours = TextTokenizer(work, max_length=None)
    for text in TEXTS:
        expected = slow(text)["input_ids"]
        assert [e.ids for e in ours.encode([text], truncation=False)] == [expected], text
        target_ids = slow(text_target=text)["input_ids"]
        assert runtime_decode(ours, target_ids, "marian") == slow.decode(target_ids, skip_special_tokens=True), text
    # the fixture numbers vocab.json unlike the sentencepiece model, so equal ids prove the renumbering
    import sentencepiece

    spm = sentencepiece.SentencePieceProcessor(model_file=str(marian_checkpoint / "source.spm"))
    pieces = spm.encode("The cat likes the red ball.", out_type=str)
    assert [slow.encoder[p] for p in pieces] != spm.encode("The cat likes the red ball.")


def test_marian_separate_vocabularies_are_refused(tmp_path):
    """transformers' MarianTokenizer decodes target_vocab.json ids while skipping the source
    vocabulary's special ids (it drops real target tokens), so there is nothing sound to
    check a conversion against: refused with a clear ExportError, nothing written."""
    checkpoint = tmp_path / "marian-separate"
    slow = spm_fixtures.marian_tokenizer_files(checkpoint, separate_vocabs=True)
    dropped = next(i for i in slow.all_special_ids if slow.target_encoder.get("<pad>") != i and i > 1)
    assert not slow.decoder[dropped].startswith("<")  # a real target piece that decode(skip_special_tokens) drops
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(ExportError, match="separate source and target vocabularies"):
        write_checked_tokenizer(checkpoint, work)
    assert list(work.iterdir()) == []


def test_marian_unknown_characters_follow_the_slow_tokenizer(marian_checkpoint, tmp_path):
    """A character the source model lacks but the shared vocab.json holds keeps its id; a run
    of such characters is one unknown piece, looked up whole (here: <unk>)."""
    work = converted(marian_checkpoint, tmp_path)
    slow = transformers.MarianTokenizer.from_pretrained(str(marian_checkpoint))
    ours = TextTokenizer(work, max_length=None)
    single, run = slow("ß")["input_ids"], slow("ßẞ")["input_ids"]
    assert slow.unk_token_id not in single and single[-2] == slow.encoder["ß"]
    assert run[-2] == slow.unk_token_id and len(run) == len(single)
    assert [e.ids for e in ours.encode(["ß", "ßẞ", "aßẞb ß 🚀🚀"], truncation=False)] == [
        single, run, slow("aßẞb ß 🚀🚀")["input_ids"]]


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_m2m100_ids_decode_and_other_source_languages(tmp_path, model_type):
    """M2M100 (no fast tokenizer in transformers), over a unigram and a BPE sentencepiece
    model: ids, decoded target ids, and the recipe the runtime uses for a source language
    other than tokenizer_config's: the language token, the text without specials, ``</s>``."""
    checkpoint = tmp_path / "m2m100"
    slow = spm_fixtures.m2m100_tokenizer_files(checkpoint, model_type)
    (checkpoint / "config.json").write_text(json.dumps({"model_type": "m2m_100"}), encoding="utf-8")
    work = converted(checkpoint, tmp_path)
    ours = TextTokenizer(work, max_length=None)
    for text in TEXTS:
        assert [e.ids for e in ours.encode([text], truncation=False)] == [slow(text)["input_ids"]], text
        target_ids = slow(text_target=text)["input_ids"]
        assert runtime_decode(ours, target_ids, "m2m_100") == slow.decode(target_ids, skip_special_tokens=True), text
    for language in ("fr", "zh", "ko"):
        slow.src_lang = language
        for text in TEXTS[:6]:
            body = ours.encode([text], truncation=False, add_special_tokens=False)[0].ids
            ours_ids = [ours.token_to_id(f"__{language}__"), *body, ours.token_to_id("</s>")]
            assert ours_ids == slow(text)["input_ids"], (language, text)


def test_t5_spiece_model_converted_and_checked(t5_checkpoint, tmp_path):
    assert not (t5_checkpoint / "tokenizer.json").exists()
    work = converted(t5_checkpoint, tmp_path)
    slow = transformers.T5Tokenizer.from_pretrained(str(t5_checkpoint))
    assert not slow.is_fast
    ours = TextTokenizer(work, max_length=None)
    for text in [*TEXTS, "summarize: <extra_id_0> the cat <extra_id_1>"]:
        expected = slow(text)["input_ids"]
        assert [e.ids for e in ours.encode([text], truncation=False)] == [expected], text
        assert runtime_decode(ours, expected, "t5").strip() == slow.decode(expected, skip_special_tokens=True), text


def test_wordpiece_vocab_txt_only_converted_and_checked(checkpoint_factory, tmp_path):
    """Not only sentencepiece: a BERT checkpoint with vocab.txt alone goes through the same
    conversion and check; decode matches BertTokenizer's, clean-up of spaces included."""
    vocab = json.loads((checkpoint_factory("bert", "sequence-classification") / "tokenizer.json").read_text(
        encoding="utf-8"))["model"]["vocab"]
    checkpoint = tmp_path / "bert-vocab-txt"
    checkpoint.mkdir()
    (checkpoint / "vocab.txt").write_text("".join(f"{t}\n" for t, _ in sorted(vocab.items(), key=lambda x: x[1])),
                                          encoding="utf-8")
    slow = transformers.BertTokenizer(str(checkpoint / "vocab.txt"))
    slow.save_pretrained(str(checkpoint))
    (checkpoint / "tokenizer.json").unlink(missing_ok=True)
    (checkpoint / "config.json").write_text(json.dumps({"model_type": "bert"}), encoding="utf-8")
    ours = TextTokenizer(converted(checkpoint, tmp_path), max_length=None)
    for text in TEXTS:
        expected = slow(text)["input_ids"]
        assert [e.ids for e in ours.encode([text], truncation=False)] == [expected], text
        decoded = slow.clean_up_tokenization(ours.decode(expected))  # clean_up_tokenization_spaces=True for BERT
        assert decoded == slow.decode(expected, skip_special_tokens=True), text


def test_checkpoint_with_tokenizer_json_is_left_alone(checkpoint_factory, tmp_path):
    checkpoint = checkpoint_factory("bert", "sequence-classification")
    assert (checkpoint / "tokenizer.json").is_file()
    assert write_checked_tokenizer(checkpoint, tmp_path) is False
    assert list(tmp_path.iterdir()) == []


def test_slow_fast_difference_of_transformers_fails_the_check(tmp_path):
    """ALBERT's slow tokenizer NFKD-decomposes Hangul and sentencepiece recomposes it;
    transformers' fast conversion leaves it decomposed and unknown. The check finds that on
    its own hard strings and refuses, naming the text and how to ship the fast one anyway."""
    checkpoint = tmp_path / "albert"
    slow = spm_fixtures.albert_tokenizer_files(checkpoint)
    korean = next(t for t in HARD_TEXTS if "서울" in t)
    fast = transformers.AutoTokenizer.from_pretrained(str(checkpoint), use_fast=True)
    assert fast(korean)["input_ids"] != slow(korean)["input_ids"]  # transformers' own disagreement
    with pytest.raises(ExportError, match="AlbertTokenizer disagrees with it on .*서울.*save_pretrained"):
        write_checked_tokenizer(checkpoint, tmp_path / "work")


def _swap_two_pieces(tokenizer):
    """The same tokenizer with two vocabulary entries' ids exchanged: a broken conversion."""
    from tokenizers import Tokenizer

    data = json.loads(tokenizer.to_str())
    vocab = data["model"]["vocab"]
    a = next(i for i, (piece, _) in enumerate(vocab) if piece == "▁the")
    b = next(i for i, (piece, _) in enumerate(vocab) if piece == "e")
    vocab[a], vocab[b] = vocab[b], vocab[a]
    return Tokenizer.from_str(json.dumps(data))


def test_tampered_marian_vocab_is_refused(marian_checkpoint, tmp_path, monkeypatch):
    def tampered(slow):
        return {name: _swap_two_pieces(tok) for name, tok in spm_convert.marian_tokenizers(slow).items()}

    monkeypatch.setitem(tokenizer_convert._OWN_CONVERTERS, "MarianTokenizer", tampered)
    with pytest.raises(ExportError) as caught:
        write_checked_tokenizer(marian_checkpoint, tmp_path)
    message = str(caught.value)
    slow = transformers.MarianTokenizer.from_pretrained(str(marian_checkpoint))
    first = next(t for t in [*VALIDATION_TEXTS, *HARD_TEXTS] if {"▁the", "e"} & set(slow.tokenize(t)))
    assert "MarianTokenizer" in message and repr(first)[:50] in message  # names the first text that differs
    assert "'▁the'" in message or "'e'" in message  # and shows the token lists


def test_broken_conversion_fails_export_and_leaves_no_bundle(xlmr_checkpoint, tmp_path, monkeypatch):
    """XLM-R through transformers' converter, sabotaged after conversion: the CLI export
    fails with the differing text and writes no output folder."""
    from tokenizers import normalizers

    real_load = tokenizer_convert._load

    def sabotaged(checkpoint, use_fast):
        tokenizer = real_load(checkpoint, use_fast)
        if use_fast:
            backend = tokenizer.backend_tokenizer
            backend.normalizer = normalizers.Sequence([backend.normalizer, normalizers.Replace("é", "e")])
        return tokenizer

    monkeypatch.setattr(tokenizer_convert, "_load", sabotaged)
    out = tmp_path / "bundle"
    result = CliRunner().invoke(cli, ["export", str(xlmr_checkpoint), str(out), "--task", "text-classification",
                                      "--dtype", "fp32"])
    assert result.exit_code != 0
    assert "XLMRobertaTokenizer" in result.output and "Café" in result.output, result.output
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == []  # no staging folder left either


def test_xlmr_export_without_tokenizer_json_matches_transformers(xlmr_checkpoint, tmp_path):
    out = tmp_path / "bundle"
    result = CliRunner().invoke(cli, ["export", str(xlmr_checkpoint), str(out), "--task", "text-classification",
                                      "--dtype", "fp32"])
    assert result.exit_code == 0, result.output
    assert (out / "tokenizer.json").is_file()
    ours = pipeline("text-classification", out, device="cpu")
    slow = transformers.XLMRobertaTokenizer.from_pretrained(str(xlmr_checkpoint))
    theirs = transformers.pipeline("text-classification", model=str(xlmr_checkpoint), tokenizer=slow)
    texts = [t for t in TEXTS if t and len(t) < 200]  # transformers does not truncate here; the runtime does
    ours_results, theirs_results = ours(texts), theirs(texts)
    assert len(ours_results) == len(theirs_results) == len(texts)
    for a, b in zip(ours_results, theirs_results):
        assert a["label"] == b["label"] and a["score"] == pytest.approx(b["score"], abs=1e-4)


def test_marian_translation_export_uses_the_converted_tokenizer(marian_checkpoint, tmp_path):
    out = tmp_path / "bundle"
    result = CliRunner().invoke(cli, ["export", str(marian_checkpoint), str(out), "--task", "translation",
                                      "--dtype", "fp32"])
    assert result.exit_code == 0, result.output
    slow = transformers.MarianTokenizer.from_pretrained(str(marian_checkpoint))
    ours = TextTokenizer(out, max_length=None)
    for text in TEXTS:
        assert [e.ids for e in ours.encode([text], truncation=False)] == [slow(text)["input_ids"]], text
    translator = pipeline("translation", out, device="cpu")
    reference = transformers.pipeline("translation", model=str(marian_checkpoint))
    for text in ["The cat likes the red ball.", "Café au lait in Zürich 🙂", ">>fr<< I love this."]:
        assert translator(text, max_new_tokens=8) == reference(text, max_new_tokens=8), text
