"""text-generation on tiny GPT-2 and Llama (grouped-query attention) checkpoints built
locally: greedy tokens identical to transformers' ``generate`` and pipeline, the logits
processors on cases where they change the result, sampling's seed and top_k=1, the
manifest's generation section, the q8 variant's greedy-token agreement, and bad inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from edgeformers.models.agreement import GREEDY_TOKEN_AGREEMENT  # noqa: E402
from edgeformers.models.errors import InputError  # noqa: E402
from edgeformers.runtime import pipeline  # noqa: E402
from tests.fixtures.floors import floor_for  # noqa: E402

PROMPTS = ["ok", "The quick brown fox jumps over", "Café au lait in Zürich 🙂", "My name is Wolfgang and I"]
NEW = 10


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def generation(request, bundle_factory):
    """(arch, checkpoint, our fp32 pipeline, transformers' model, its tokenizer), the bundle with fp32 and q8."""
    checkpoint, bundle = bundle_factory(request.param, "causal-lm", "text-generation")
    model = transformers.AutoModelForCausalLM.from_pretrained(str(checkpoint)).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(checkpoint), padding_side="left")
    return request.param, checkpoint, bundle, pipeline("text-generation", bundle, device="cpu"), model, tokenizer


def _reference(model, tokenizer, prompts, **kwargs):
    """transformers' generate on the left-padded batch: (input ids, mask, sequences)."""
    batch = tokenizer(prompts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**batch, do_sample=False, max_new_tokens=NEW, **kwargs)
    return batch["input_ids"].numpy(), batch["attention_mask"].numpy(), out.numpy()


def _ours(pipe, ids, mask, **kwargs):
    settings = pipe.generation_settings(do_sample=False, max_new_tokens=NEW, **kwargs)
    return pipe.generator.generate(ids, mask, settings)


def test_greedy_pipeline_matches_transformers_pipeline(generation):
    _, checkpoint, _, ours, _, _ = generation
    theirs = transformers.pipeline("text-generation", model=str(checkpoint))
    for full in (True, False):
        for prompt in PROMPTS:
            assert ours(prompt, do_sample=False, max_new_tokens=NEW, return_full_text=full) == \
                theirs(prompt, do_sample=False, max_new_tokens=NEW, return_full_text=full)


def test_left_padded_batch_matches_generate_token_for_token(generation):
    _, _, _, ours, model, tokenizer = generation
    ids, mask, expected = _reference(model, tokenizer, PROMPTS)
    np.testing.assert_array_equal(_ours(ours, ids, mask), expected)
    # the pipeline's own batching gives each prompt the text it gets alone
    assert ours(PROMPTS, do_sample=False, max_new_tokens=NEW, batch_size=4) == \
        ours(PROMPTS, do_sample=False, max_new_tokens=NEW)


def test_eos_inside_a_batch_pads_the_finished_row(generation):
    _, _, _, ours, model, tokenizer = generation
    ids, mask, free = _reference(model, tokenizer, PROMPTS)
    width = ids.shape[1]
    # the third new token of row 0 as EOS (plus another id, for the list form): row 0 stops there
    eos = [int(free[0, width + 2]), int(free[1, width + NEW - 1])]
    _, _, expected = _reference(model, tokenizer, PROMPTS, eos_token_id=eos)
    got = _ours(ours, ids, mask, eos_token_id=eos)
    np.testing.assert_array_equal(got, expected)
    pad = ours.generation_settings().pad_token_id
    assert (got[0, width + 3:] == pad).all() and not (free[0, width + 3:] == pad).all()


@pytest.mark.parametrize("kwargs", [{"repetition_penalty": 1.8}, {"repetition_penalty": 0.6}])
def test_repetition_penalty_matches_and_changes_the_result(generation, kwargs):
    _, _, _, ours, model, tokenizer = generation
    ids, mask, plain = _reference(model, tokenizer, PROMPTS)
    _, _, expected = _reference(model, tokenizer, PROMPTS, **kwargs)
    assert not np.array_equal(plain, expected), "the penalty must change this case"
    np.testing.assert_array_equal(_ours(ours, ids, mask, **kwargs), expected)


def test_min_new_tokens_holds_back_eos(generation):
    _, _, _, ours, model, tokenizer = generation
    ids, mask, free = _reference(model, tokenizer, PROMPTS[:2])
    eos = int(free[0, ids.shape[1]])  # row 0's first new token: without min_new_tokens it stops at once
    _, _, expected = _reference(model, tokenizer, PROMPTS[:2], eos_token_id=eos, min_new_tokens=5)
    got = _ours(ours, ids, mask, eos_token_id=eos, min_new_tokens=5)
    np.testing.assert_array_equal(got, expected)
    assert eos not in got[0, ids.shape[1]:ids.shape[1] + 5]


def test_sampling_top_k_1_is_greedy_and_a_seed_repeats(generation):
    _, _, _, ours, _, _ = generation
    greedy = ours(PROMPTS, do_sample=False, max_new_tokens=NEW)
    assert ours(PROMPTS, do_sample=True, top_k=1, temperature=0.7, seed=5, max_new_tokens=NEW) == greedy
    first = ours("ok", do_sample=True, seed=11, max_new_tokens=NEW, num_return_sequences=3)
    assert ours("ok", do_sample=True, seed=11, max_new_tokens=NEW, num_return_sequences=3) == first
    others = [ours("ok", do_sample=True, seed=s, top_p=0.9, temperature=1.5, max_new_tokens=NEW) for s in range(4)]
    assert len({o[0]["generated_text"] for o in others}) > 1, "different seeds should sample different text"


def test_manifest_generation_section_records_the_kv_layout(generation):
    arch, checkpoint, bundle, ours, model, _ = generation
    section = json.loads((bundle / "edgeformers.json").read_text())["generation"]
    config = model.config
    assert section["num_layers"] == config.num_hidden_layers == len(section["past_inputs"]) // 2
    assert section["num_heads"] == config.num_attention_heads
    expected_kv = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    assert section["num_kv_heads"] == expected_kv and (arch != "llama" or expected_kv < config.num_attention_heads)
    assert section["head_size"] == config.hidden_size // config.num_attention_heads
    assert section["eos_token_id"] == [config.eos_token_id]
    assert section["present_outputs"] == [n.replace("past_key_values", "present") for n in section["past_inputs"]]


def test_q8_variant_is_held_to_greedy_token_agreement(generation):
    _, _, bundle, ours, _, _ = generation
    report = json.loads((bundle / "edgeformers.json").read_text())["validation"]["q8"]
    assert report["metric"] == GREEDY_TOKEN_AGREEMENT and report["value"] >= floor_for("text-generation")
    q8 = pipeline("text-generation", bundle, device="cpu", dtype="q8")
    assert ours(PROMPTS[1], do_sample=False, max_new_tokens=NEW)[0]["generated_text"].startswith(PROMPTS[1])
    assert q8(PROMPTS[1], do_sample=False, max_new_tokens=NEW)[0]["generated_text"].startswith(PROMPTS[1])


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"max_new_tokens": 0}, r"max_new_tokens must be an integer >= 1"),
    ({"max_new_tokens": 2.5}, r"max_new_tokens must be an integer"),
    ({"do_sample": False, "num_return_sequences": 2}, r"Greedy methods without beam search do not support "
                                                      r"`num_return_sequences` different than 1 \(got 2\)"),
    ({"temperature": 0.0}, r"temperature must be a number > 0"),
    ({"top_p": 1.5}, r"top_p must be in \(0, 1\]"),
    ({"eos_token_id": "x"}, r"eos_token_id must be a token id"),
    ({"bogus": 1}, r"unknown argument 'bogus'"),
])
def test_bad_arguments_are_typed_and_the_pipeline_stays_usable(generation, kwargs, match):
    _, _, _, ours, _, _ = generation
    with pytest.raises(InputError, match=match):
        ours("ok", **kwargs)
    assert ours("ok", do_sample=False, max_new_tokens=2) == ours("ok", do_sample=False, max_new_tokens=2)


def test_prompt_past_the_context_window_is_refused(generation):
    _, _, _, ours, model, _ = generation
    limit = model.config.max_position_embeddings
    with pytest.raises(InputError, match=rf"text_inputs\[1\] is \d+ tokens; with max_new_tokens=5 that passes the "
                                         rf"model's {limit}-token context window"):
        ours(["ok", "the cat likes the red ball " * 40], do_sample=False, max_new_tokens=5)
    assert ours("ok", do_sample=False, max_new_tokens=5)[0]["generated_text"].startswith("ok")


def test_empty_prompt_without_bos_is_refused(generation):
    _, checkpoint, _, ours, _, tokenizer = generation
    if tokenizer("")["input_ids"]:  # Llama's tokenizer adds BOS: an empty prompt is a valid start
        theirs = transformers.pipeline("text-generation", model=str(checkpoint))
        assert ours("", do_sample=False, max_new_tokens=NEW) == theirs("", do_sample=False, max_new_tokens=NEW)
        return
    with pytest.raises(InputError, match=r"text_inputs\[0\] is empty and this tokenizer adds no BOS"):
        ours("", do_sample=False)


@pytest.mark.parametrize("seed", range(3))
def test_processors_match_transformers_logits_processors(seed):
    """The numpy processors against transformers' own on random scores (ties included)."""
    from transformers import generation as tg

    from edgeformers.runtime.generation import processors

    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(4, 64)).astype(np.float32) * 3
    scores[:, 5] = scores[:, 6]  # a tie at any rank
    ids = rng.integers(0, 64, size=(4, 9))
    t_ids, t_scores = torch.from_numpy(ids), torch.from_numpy(scores)
    cases = [
        (processors.repetition_penalty(scores, ids, 1.7), tg.RepetitionPenaltyLogitsProcessor(1.7)),
        (processors.repetition_penalty(scores, ids, 0.5), tg.RepetitionPenaltyLogitsProcessor(0.5)),
        (processors.temperature(scores, 0.6), tg.TemperatureLogitsWarper(0.6)),
        (processors.top_k(scores, 7), tg.TopKLogitsWarper(7)),
        (processors.top_k(scores, 500), tg.TopKLogitsWarper(500)),
        (processors.top_p(scores, 0.3), tg.TopPLogitsWarper(0.3)),
        (processors.top_p(scores, 0.95), tg.TopPLogitsWarper(0.95)),
        (processors.suppress_eos(scores, [3, 9]), tg.MinNewTokensLengthLogitsProcessor(9, 5, [3, 9])),
    ]
    for ours, theirs in cases:
        np.testing.assert_allclose(ours, theirs(t_ids, t_scores.clone()).numpy(), rtol=1e-6, err_msg=repr(theirs))


def test_sampled_first_tokens_follow_the_processed_distribution(generation):
    """4000 draws of one token: their frequencies match softmax(top_k(logits / temperature))
    from transformers' model and warpers, each within 4 standard errors."""
    from transformers import generation as tg

    _, _, _, ours, model, tokenizer = generation
    draws = 4000
    batch = tokenizer([PROMPTS[1]], return_tensors="pt")
    with torch.inference_mode():
        logits = model(**batch).logits[:, -1, :]
    processed = tg.TopKLogitsWarper(5)(batch["input_ids"], tg.TemperatureLogitsWarper(0.8)(batch["input_ids"], logits))
    expected = torch.softmax(processed, dim=-1)[0].numpy()
    ids = np.repeat(batch["input_ids"].numpy(), draws, axis=0)
    settings = ours.generation_settings(do_sample=True, top_k=5, temperature=0.8, max_new_tokens=1, seed=0)
    tokens = ours.generator.generate(ids, np.ones_like(ids), settings)[:, -1]
    counts = np.bincount(tokens, minlength=expected.size) / draws
    assert set(np.flatnonzero(counts)) <= set(np.flatnonzero(expected > 0))
    bound = 4 * np.sqrt(expected * (1 - expected) / draws) + 1e-9
    assert (np.abs(counts - expected) <= bound).all(), (counts[expected > 0], expected[expected > 0])


def test_validate_checks_the_decoder_again_with_and_without_past(generation):
    from click.testing import CliRunner

    from edgeformers.runtime.cli import cli

    _, _, bundle, _, _, _ = generation
    floor = ["--min-agreement", str(floor_for("text-generation"))]
    result = CliRunner().invoke(cli, ["validate", str(bundle), *floor])
    assert result.exit_code == 0, result.output
    assert "logits_with_past" in result.output and "greedy_token_agreement" in result.output
    result = CliRunner().invoke(cli, ["validate", str(bundle), "--atol", "1e-12", *floor])
    assert result.exit_code == 1 and "ValidationError" in result.output and "logits_with_past" in result.output


def test_export_refuses_a_task_the_family_cannot_do(checkpoint_factory, tmp_path):
    from edgeformers.exporter import export
    from edgeformers.models.errors import UnsupportedTaskError

    with pytest.raises(UnsupportedTaskError, match=r"'bert' \(bert family\) cannot do 'text-generation'"):
        export(str(checkpoint_factory("bert", "base")), tmp_path / "a", task="text-generation")
    with pytest.raises(UnsupportedTaskError, match=r"'gpt2' \(gpt2 family\) cannot do 'fill-mask'"):
        export(str(checkpoint_factory("gpt2", "causal-lm")), tmp_path / "b", task="fill-mask")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_pull_style_steps_give_the_tokens_generate_gives(generation):
    _, _, _, ours, model, tokenizer = generation
    ids, mask, expected = _reference(model, tokenizer, PROMPTS)
    decoding = ours.generator.start(ids, mask, ours.generation_settings(do_sample=False, max_new_tokens=NEW))
    steps = []
    while not decoding.done:
        steps.append(decoding.step())
    np.testing.assert_array_equal(np.stack(steps, axis=1), expected[:, ids.shape[1]:])
    with pytest.raises(InputError, match="this decoding is done"):
        decoding.step()
