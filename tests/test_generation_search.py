"""Beam search and every logits processor on the tiny GPT-2 and Llama (GQA) bundles,
token for token against transformers' ``generate`` on the same fp32 checkpoint, on a
left-padded batch of prompts of different lengths. Each processor case first asserts
that the setting changes transformers' output (so the equality proves something), and
beam cases cover EOS inside the batch, length_penalty, every early_stopping value and
num_return_sequences > 1. Pipeline-level: beams and stop strings against
``transformers.pipeline``, and the typed errors of bad decoding arguments."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from edgeformers.models.errors import InputError  # noqa: E402
from edgeformers.runtime import pipeline  # noqa: E402

PROMPTS = ["ok", "The quick brown fox jumps over", "Café au lait in Zürich 🙂", "My name is Wolfgang and I"]
NEW = 10


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def setup(request, bundle_factory):
    """(checkpoint, our pipeline, transformers' model, its tokenizer, the batch, greedy output)."""
    checkpoint, bundle = bundle_factory(request.param, "causal-lm", "text-generation")
    model = transformers.AutoModelForCausalLM.from_pretrained(str(checkpoint)).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(checkpoint), padding_side="left")
    batch = tokenizer(PROMPTS, padding=True, return_tensors="pt")
    ours = pipeline("text-generation", bundle, device="cpu")
    return checkpoint, ours, model, tokenizer, batch, _theirs(model, batch)


def _theirs(model, batch, **kwargs) -> np.ndarray:
    kwargs.setdefault("max_new_tokens", NEW)
    with torch.inference_mode():
        return model.generate(**batch, do_sample=False, **kwargs).numpy()


def _ours(pipe, batch, **kwargs) -> np.ndarray:
    kwargs.setdefault("max_new_tokens", NEW)
    settings = pipe.generation_settings(do_sample=False, **kwargs)
    return pipe.generator.generate(batch["input_ids"].numpy(), batch["attention_mask"].numpy(), settings)


def _check(setup, must_change: bool = True, **kwargs) -> np.ndarray:
    _, ours, model, _, batch, free = setup
    expected = _theirs(model, batch, **kwargs)
    if must_change:
        assert expected.shape != free.shape or not np.array_equal(expected, free), f"{kwargs} changes nothing here"
    np.testing.assert_array_equal(_ours(ours, batch, **kwargs), expected, err_msg=str(kwargs))
    return expected


def _new(free: np.ndarray, width: int, row: int, index: int) -> int:
    return int(free[row, width + index])


# each case: setup's greedy output and prompt width -> generate kwargs that change it
PROCESSOR_CASES = {
    "no_repeat_ngram_size=2": lambda f, w: {"no_repeat_ngram_size": 2},
    "bad_words_ids one token": lambda f, w: {"bad_words_ids": [[_new(f, w, 0, 0)], [_new(f, w, 2, 1)]]},
    "bad_words_ids several tokens": lambda f, w: {"bad_words_ids": [[_new(f, w, 1, 1), _new(f, w, 1, 2)],
                                                                    [_new(f, w, 3, 0), _new(f, w, 3, 1)]]},
    "min_length holds back EOS": lambda f, w: {"eos_token_id": _new(f, w, 0, 1), "min_length": w + 5},
    "min_new_tokens holds back EOS": lambda f, w: {"eos_token_id": [_new(f, w, 1, 0), _new(f, w, 2, 2)],
                                                   "min_new_tokens": 4},
    "forced_eos_token_id": lambda f, w: {"forced_eos_token_id": [_new(f, w, 0, 0)], "eos_token_id": None},
    "suppress_tokens": lambda f, w: {"suppress_tokens": sorted({int(t) for t in f[:, w:w + 3].ravel()})},
    "begin_suppress_tokens": lambda f, w: {"begin_suppress_tokens": [_new(f, w, r, 0) for r in range(4)]},
    "max_length counts the prompt": lambda f, w: {"max_new_tokens": None, "max_length": w + 4},
}


@pytest.mark.parametrize("case", PROCESSOR_CASES)
def test_greedy_processor_matches_generate(setup, case):
    width, free = setup[4]["input_ids"].shape[1], setup[5]
    _check(setup, **PROCESSOR_CASES[case](free, width))


def test_forced_bos_applies_to_a_one_token_start(setup):
    """transformers forces BOS at length 1 (the decoder start of a seq2seq model): the same
    rule on one-token rows here."""
    _, ours, model, _, batch, _ = setup
    one = {"input_ids": batch["input_ids"][:, -1:], "attention_mask": batch["attention_mask"][:, -1:]}
    plain = _theirs(model, one)
    forced = _theirs(model, one, forced_bos_token_id=7)
    assert not np.array_equal(plain, forced) and (forced[:, 1] == 7).all()
    np.testing.assert_array_equal(_ours(ours, one, forced_bos_token_id=7), forced)


def _eos(setup) -> list[int]:
    width, free = setup[4]["input_ids"].shape[1], setup[5]
    return [_new(free, width, 0, 2), _new(free, width, 1, 5)]


BEAM_CASES = {
    "3 beams": {"num_beams": 3},
    "3 beams, 2 returned": {"num_beams": 3, "num_return_sequences": 2},
    "4 beams, 4 returned, EOS": {"num_beams": 4, "num_return_sequences": 4, "eos": True},
    "length_penalty=0": {"num_beams": 4, "length_penalty": 0.0, "eos": True},
    "length_penalty=2, early_stopping=True": {"num_beams": 4, "length_penalty": 2.0, "early_stopping": True,
                                              "eos": True},
    "length_penalty=-1, early_stopping=never": {"num_beams": 4, "length_penalty": -1.0, "early_stopping": "never",
                                                "eos": True},
    "beams with no_repeat_ngram_size": {"num_beams": 3, "no_repeat_ngram_size": 2},
    "beams with max_length": {"num_beams": 2, "max_new_tokens": None, "max_length_after_prompt": 4},
}


@pytest.mark.parametrize("case", BEAM_CASES)
def test_beam_search_matches_generate(setup, case):
    kwargs = dict(BEAM_CASES[case])
    if kwargs.pop("eos", False):
        kwargs["eos_token_id"] = _eos(setup)
    if "max_length_after_prompt" in kwargs:
        kwargs["max_length"] = setup[4]["input_ids"].shape[1] + kwargs.pop("max_length_after_prompt")
    expected = _check(setup, must_change=False, **kwargs)
    assert expected.shape[0] == len(PROMPTS) * kwargs.get("num_return_sequences", 1)


def test_beam_settings_change_the_result(setup):
    """The beam cases above are not all the same output: EOS ends hypotheses early (rows
    padded) and the length penalty picks other hypotheses."""
    _, _, model, _, batch, _ = setup
    eos = _eos(setup)
    outputs = [_theirs(model, batch, num_beams=4, eos_token_id=eos, length_penalty=p) for p in (-1.0, 2.0)]
    assert len({o.tobytes() + bytes(o.shape) for o in outputs}) > 1
    assert any((o[:, -1] == eos[0]).any() or (o[:, -1] == model.generation_config.pad_token_id).any()
               or o.shape[1] < batch["input_ids"].shape[1] + NEW for o in outputs)


def test_beam_pipeline_matches_transformers_pipeline(setup):
    checkpoint, ours, _, _, _, _ = setup
    theirs = transformers.pipeline("text-generation", model=str(checkpoint))
    args = {"do_sample": False, "max_new_tokens": NEW, "num_beams": 3, "num_return_sequences": 2}
    assert ours(PROMPTS[2], **args) == theirs(PROMPTS[2], **args)
    # the pipeline's own left-padded batches give each prompt what it gets alone
    assert ours(PROMPTS, batch_size=4, **args) == ours(PROMPTS, **args)
    assert ours(PROMPTS[1], generate_kwargs=args) == theirs(PROMPTS[1], **args)


def test_stop_strings_match_transformers_pipeline(setup):
    checkpoint, ours, _, _, _, _ = setup
    theirs = transformers.pipeline("text-generation", model=str(checkpoint))
    args = {"do_sample": False, "max_new_tokens": 20, "return_full_text": False}
    checked = 0
    for prompt in PROMPTS:
        free = theirs(prompt, **args)[0]["generated_text"]
        stop = free[len(free) // 2: len(free) // 2 + 2]
        if len(stop.strip()) < 2 or "\ufffd" in stop:
            continue
        expected = theirs(prompt, stop_strings=[stop], tokenizer=theirs.tokenizer, **args)
        assert len(expected[0]["generated_text"]) < len(free) and stop in expected[0]["generated_text"]
        assert ours(prompt, stop_strings=stop, **args) == expected
        checked += 1
    assert checked >= 2


def test_stop_strings_end_beam_hypotheses_as_transformers(setup):
    """With beams, a candidate that completes a stop string is a finished hypothesis.
    GPT-2 only: transformers' StopStringCriteria cannot embed some strings of the tiny
    Llama's sentencepiece vocabulary (it raises), so there is nothing to compare."""
    checkpoint, ours, model, _, _, _ = setup
    if model.config.model_type != "gpt2":
        pytest.skip("transformers' StopStringCriteria raises on this vocabulary's stop strings")
    theirs = transformers.pipeline("text-generation", model=str(checkpoint))
    args = {"do_sample": False, "max_new_tokens": 20, "return_full_text": False, "num_beams": 3,
            "num_return_sequences": 2}
    free = theirs(PROMPTS[1], **args)[0]["generated_text"]
    stop = free[len(free) // 2: len(free) // 2 + 2]
    expected = theirs(PROMPTS[1], stop_strings=[stop], tokenizer=theirs.tokenizer, **args)
    assert len(expected[0]["generated_text"]) < len(free)
    assert ours(PROMPTS[1], stop_strings=[stop], **args) == expected


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"num_beams": 2, "num_return_sequences": 3}, r"`num_return_sequences` \(3\) has to be smaller or equal to "
                                                  r"`num_beams` \(2\)"),
    ({"num_beams": 2, "do_sample": True}, r"sampled beam search .* is not available"),
    ({"num_beams": 0}, r"num_beams must be an integer >= 1"),
    ({"length_penalty": "long"}, r"length_penalty must be a number"),
    ({"early_stopping": "sometimes"}, r"early_stopping must be True, False or 'never'"),
    ({"no_repeat_ngram_size": -1}, r"no_repeat_ngram_size must be an integer >= 0"),
    ({"bad_words_ids": [5]}, r"bad_words_ids must be a non-empty list of non-empty lists"),
    ({"bad_words_ids": [[10**9]]}, r"bad_words_ids must hold token ids \(integers >= 0 below the vocabulary size"),
    ({"min_p": 1.5}, r"min_p must be in \[0, 1\]"),
    ({"typical_p": 0}, r"typical_p must be in \(0, 1\]"),
    ({"stop_strings": ""}, r"stop_strings must be a non-empty string or a list of them"),
    ({"max_length": 10**6}, r"max_length=1000000 passes the model's \d+-token context window"),
    ({"max_new_tokens": None, "max_length": 1}, r"max_length=1 leaves no room for new tokens"),
    ({"generate_kwargs": {"num_beamz": 2}}, r"unknown generation setting 'num_beamz'"),
    ({"generate_kwargs": [1]}, r"generate_kwargs must be a dict"),
])
def test_bad_decoding_arguments_are_typed_and_the_pipeline_stays_usable(setup, kwargs, match):
    _, ours, _, _, _, _ = setup
    with pytest.raises(InputError, match=match):
        ours("ok", **{"do_sample": False, **kwargs})
    assert ours("ok", do_sample=False, max_new_tokens=2, num_beams=2)[0]["generated_text"].startswith("ok")
