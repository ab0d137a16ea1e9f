"""Parity: the runtime's fill-mask pipeline against transformers.pipeline on the same tiny
masked-LM checkpoints (tokens, token strings and sequences exact, scores within 1e-4)."""

from __future__ import annotations

import json
import logging
import re
import shutil

import pytest
import transformers

from edgeformers.exporter.agreement import masked_texts
from edgeformers.runtime import InputError, pipeline
from tests.fixtures.floors import floor_for

ARCHS = ["bert", "roberta", "deberta-v2"]
# {m} becomes the model's own mask token.
TEXTS = [
    "the cat likes {m} every day!",
    "{m} small dog sees the river.",
    "I had a café au lait in {m}.",
    "東京は日本の{m}です 🙂👍",
    "  leading and trailing spaces {m}  ",
    "This movie was {m}",
]
TWO_MASKS = "the {m} likes the {m} ball today."


def assert_same(ours, theirs, atol=1e-4):
    """Same nesting; per rank the same token/token_str/sequence and a score within atol.
    Ranks whose reference scores tie within float noise may come in either order."""
    assert isinstance(ours, list) and len(ours) == len(theirs)
    if theirs and isinstance(theirs[0], list):
        for a, b in zip(ours, theirs):
            assert_same(a, b, atol)
        return
    for got, want in zip(ours, theirs):
        assert set(got) == {"score", "token", "token_str", "sequence"}
        assert type(got["score"]) is float and type(got["token"]) is int
        assert got["score"] == pytest.approx(want["score"], abs=atol)
    key = lambda item: (round(item["score"], 5), item["token"])  # noqa: E731
    strip = lambda items: [{k: v for k, v in item.items() if k != "score"} for item in items]  # noqa: E731
    if strip(ours) != strip(theirs):
        assert strip(sorted(ours, key=key)) == strip(sorted(theirs, key=key))


@pytest.fixture(scope="module", params=ARCHS)
def pair(request, bundle_factory):
    checkpoint, bundle = bundle_factory(request.param, "masked-lm", "fill-mask")
    reference = transformers.pipeline("fill-mask", model=str(checkpoint))
    ours = pipeline("fill-mask", bundle, device="cpu")
    assert ours.mask_token == reference.tokenizer.mask_token
    return ours, reference, bundle


def texts(ours, items=TEXTS):
    return [t.format(m=ours.mask_token) for t in items]


def test_single_texts_match(pair):
    ours, theirs, _ = pair
    for text in texts(ours):
        assert_same(ours(text), theirs(text))


@pytest.mark.parametrize("top_k", [1, 3, 12])
def test_top_k(pair, top_k):
    ours, theirs, _ = pair
    text = texts(ours)[0]
    assert_same(ours(text, top_k=top_k), theirs(text, top_k=top_k))


def test_two_masks_give_one_list_per_mask(pair):
    ours, theirs, _ = pair
    (text,) = texts(ours, [TWO_MASKS])
    got = ours(text, top_k=3)
    assert len(got) == 2 and all(len(row) == 3 for row in got)
    assert_same(got, theirs(text, top_k=3))
    mixed = [text, texts(ours)[1]]
    assert_same(ours(mixed, top_k=2), theirs(mixed, top_k=2))


def test_batches(pair):
    ours, theirs, _ = pair
    batch = texts(ours)
    want = theirs(batch, top_k=3)
    assert_same(ours(batch, top_k=3), want)
    assert_same(ours(batch, top_k=3, batch_size=2), want)
    # transformers unwraps a one-text list
    assert_same(ours(batch[:1]), theirs(batch[:1]))


def test_targets(pair, caplog):
    ours, theirs, _ = pair
    text = texts(ours)[0]
    vocab = theirs.tokenizer.get_vocab()
    top = [theirs.tokenizer.convert_ids_to_tokens(p["token"]) for p in theirs(text, top_k=3)]
    single = [*top, next(t for t in ("the", "Ġthe", "▁the") if t in vocab)]
    assert_same(ours(text, targets=single), theirs(text, targets=single))
    assert_same(ours(text, targets=single[0]), theirs(text, targets=single[0]))
    assert_same(ours(text, targets=single, top_k=2), theirs(text, targets=single, top_k=2))
    multi = ["zürichqx", " the", "wonderfulness", top[0]]
    assert not {"zürichqx", "wonderfulness"} & vocab.keys()
    with caplog.at_level(logging.WARNING, logger="edgeformers.runtime.pipelines.fill_mask"):
        got = ours(text, targets=multi, top_k=10)
    assert "'zürichqx' is not in the model vocabulary" in caplog.text
    assert_same(got, theirs(text, targets=multi, top_k=10))
    (two,) = texts(ours, [TWO_MASKS])
    assert_same(ours(two, targets=single), theirs(two, targets=single))


def test_clean_up_tokenization_spaces(pair, tmp_path):
    """Real BERT checkpoints set clean_up_tokenization_spaces; both sides must honour it.
    The bundle copy drops its manifest (whose checksums the edit would break) and is
    opened as a plain folder."""
    ours, theirs, bundle = pair
    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(theirs.model.name_or_path, checkpoint)
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    (copy / "edgeformers.json").unlink()
    for folder in (checkpoint, copy):
        config_path = folder / "tokenizer_config.json"
        config = json.loads(config_path.read_text())
        config["clean_up_tokenization_spaces"] = True
        config_path.write_text(json.dumps(config))
    cleaned = pipeline("fill-mask", copy, device="cpu")
    reference = transformers.pipeline("fill-mask", model=str(checkpoint))
    batch = texts(ours, ["the cat , {m} . isn't it ?", "we 've {m} 's !", TWO_MASKS])
    assert_same(cleaned(batch), reference(batch))


def test_truncation_via_tokenizer_kwargs(pair):
    ours, theirs, _ = pair
    long = texts(ours)[0] + " the cat likes the red ball." * 60
    with pytest.raises(InputError, match=r"longer than the model's 128.*truncation"):
        ours(long)
    kwargs = {"truncation": True}
    assert_same(ours(long, tokenizer_kwargs=kwargs), theirs(long, tokenizer_kwargs=kwargs))


def test_bad_inputs(pair):
    ours, _, _ = pair
    text = texts(ours)[0]
    with pytest.raises(InputError, match="has no mask token; put " + re.escape(repr(ours.mask_token))):
        ours("no mask here")
    with pytest.raises(InputError, match=r"inputs\[1\] has no mask token"):
        ours([text, "no mask here"])
    for top_k in (0, -2, "3", 1.5):
        with pytest.raises(InputError, match="top_k"):
            ours(text, top_k=top_k)
    for targets in ([], "", [""], 7, ["ok", None]):
        with pytest.raises(InputError, match="targets"):
            ours(text, targets=targets)
    with pytest.raises(InputError, match=r"tokenizer_kwargs \['stride'\]"):
        ours(text, tokenizer_kwargs={"stride": 2})
    with pytest.raises(InputError, match=r"inputs\[0\] is int"):
        ours([3])


def test_batches_run_padded_per_batch(pair):
    ours, _, _ = pair
    shapes = []
    run = ours.model.run
    ours.model.run = lambda feed, outputs=None: shapes.append(feed["input_ids"].shape) or run(feed, outputs)
    try:
        ours(texts(ours), batch_size=4)
    finally:
        del ours.model.run
    lengths = sorted((len(e.ids) for e in ours.tokenizer.encode(texts(ours))), reverse=True)
    # Every row ran once, batches hold at most 4 rows, longest first, each padded only to
    # its own longest row (not the model maximum).
    assert sum(rows for rows, _ in shapes) == len(lengths) and all(rows <= 4 for rows, _ in shapes)
    assert shapes[0][1] == lengths[0] and len(shapes) > 1
    assert [width for _, width in shapes] == sorted({width for _, width in shapes}, reverse=True)
    assert {width for _, width in shapes} <= set(lengths)


def test_q8_top1_agrees_with_fp32_above_the_random_weight_floor(pair):
    """Over the exporter's ~40 texts with one word masked, the q8 pipeline's top token is
    fp32's at least as often as the random-weight floor (tests/fixtures/floors.py)."""
    ours, _, bundle = pair
    q8 = pipeline("fill-mask", bundle, device="cpu", dtype="q8")
    batch = masked_texts(ours.mask_token)
    kwargs = {"top_k": 1, "tokenizer_kwargs": {"truncation": True}}
    agree = [a[0]["token"] == b[0]["token"] for a, b in zip(ours(batch, **kwargs), q8(batch, **kwargs))]
    assert len(agree) == len(batch)
    assert sum(agree) / len(agree) >= floor_for("fill-mask"), (sum(agree), len(agree))
