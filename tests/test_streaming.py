"""Streaming text-generation: pieces that join to transformers' text (CJK and emoji split
over several byte-level tokens included), never a piece that a later token changes, a
cancel handle that leaves the pipeline usable, and ``edgeformers run`` streaming to the
terminal (Ctrl-C: one line, exit code 130)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from edgeformers.models.errors import InputError  # noqa: E402
from edgeformers.runtime import pipeline  # noqa: E402
from edgeformers.runtime.generation.streaming import IncrementalDetokenizer  # noqa: E402
from edgeformers.runtime.pipelines.fill_mask import clean_up_tokenization  # noqa: E402
from tests.fixtures.scripted_decoder import PROMPT  # noqa: E402

NEW = 24


@pytest.fixture(scope="module")
def scripted(scripted_decoder):
    """(checkpoint, bundle, our pipeline, transformers' pipeline) for the scripted Llama."""
    checkpoint, bundle = scripted_decoder
    theirs = transformers.pipeline("text-generation", model=str(checkpoint))
    return checkpoint, bundle, pipeline("text-generation", bundle, device="cpu"), theirs


def _is_cjk(char: str) -> bool:
    return 0x4E00 <= ord(char) <= 0x9FFF or 0x3040 <= ord(char) <= 0x30FF


def test_stream_joins_to_transformers_text_on_cjk_and_emoji(scripted):
    _, _, ours, theirs = scripted
    expected = theirs(PROMPT, do_sample=False, max_new_tokens=NEW, return_full_text=False)[0]["generated_text"]
    assert any(_is_cjk(c) for c in expected) and "🙂" in expected, expected  # the script really is multi-byte
    stream = ours.stream(PROMPT, do_sample=False, max_new_tokens=NEW)
    pieces = list(stream)
    assert "".join(pieces) == expected == ours(PROMPT, do_sample=False, max_new_tokens=NEW,
                                               return_full_text=False)[0]["generated_text"]
    assert len(stream.token_ids) == NEW and stream.finish_reason == "length"
    # half characters were held back, never shown: fewer pieces than tokens, no U+FFFD mid-stream
    assert len(pieces) < NEW and not any("\ufffd" in piece for piece in pieces[:-1])


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_stream_joins_to_transformers_text_on_random_models(bundle_factory, arch):
    """The random tiny GPT-2 and Llama of test_text_generation: whatever they emit (often
    broken UTF-8 from lone byte tokens), the pieces join to transformers' text."""
    checkpoint, bundle = bundle_factory(arch, "causal-lm", "text-generation")
    ours = pipeline("text-generation", bundle, device="cpu")
    theirs = transformers.pipeline("text-generation", model=str(checkpoint))
    for prompt in ("ok", "The quick brown fox jumps over", "Café au lait in Zürich 🙂"):
        for beams in (1, 3):
            call = {"do_sample": False, "max_new_tokens": NEW, "num_beams": beams}
            expected = theirs(prompt, return_full_text=False, **call)[0]["generated_text"]
            assert "".join(ours.stream(prompt, **call)) == expected, (prompt, beams)


def test_beam_search_streams_the_prefix_its_beams_agree_on(scripted):
    """With beams, a piece comes as soon as every beam (and every kept finished
    hypothesis) shares it: here long before the search ends; the pieces join to
    transformers' beam-search text. A cancel delivers the leading beam."""
    _, _, ours, theirs = scripted
    call = {"do_sample": False, "max_new_tokens": NEW, "num_beams": 3}
    expected = theirs(PROMPT, return_full_text=False, **call)[0]["generated_text"]
    stream = ours.stream(PROMPT, **call)
    first = next(stream)
    assert stream.finish_reason is None and 0 < len(stream.token_ids) < NEW // 2, "the first piece waited for the end"
    rest = list(stream)
    assert first + "".join(rest) == expected and len(rest) > 3 and stream.finish_reason == "length"
    stream = ours.stream(PROMPT, **call)
    shown = next(stream) + next(stream)
    stream.cancel()
    tail = "".join(stream)
    assert stream.finish_reason == "cancelled" and len(stream.token_ids) < NEW
    assert expected.startswith(shown)
    assert shown + tail == ours._text("", ours.tokenizer.encode([PROMPT])[0].ids, stream.token_ids, False)


def test_stream_of_a_chat_joins_to_the_assistant_message(scripted):
    _, _, ours, theirs = scripted
    chat = [{"role": "user", "content": "Where is 東京?"}]
    expected = theirs(chat, do_sample=False, max_new_tokens=NEW)[0]["generated_text"][-1]["content"]
    assert "".join(ours.stream(chat, do_sample=False, max_new_tokens=NEW)) == expected


def test_sampled_stream_repeats_the_sampled_call(scripted):
    _, _, ours, _ = scripted
    kwargs = dict(do_sample=True, seed=3, temperature=5.0, top_k=0, max_new_tokens=NEW)  # flat: random tokens
    expected = ours("the cat", return_full_text=False, **kwargs)[0]["generated_text"]
    assert expected != ours("the cat", return_full_text=False, **dict(kwargs, seed=4))[0]["generated_text"]
    assert "".join(ours.stream("the cat", **kwargs)) == expected


def test_cancel_inside_the_loop_and_from_another_thread(scripted):
    _, _, ours, _ = scripted
    full = ours(PROMPT, do_sample=False, max_new_tokens=NEW, return_full_text=False)[0]["generated_text"]
    stream = ours.stream(PROMPT, do_sample=False, max_new_tokens=NEW)
    pieces = []
    for piece in stream:
        pieces.append(piece)
        if len(pieces) == 2:
            stream.cancel()
    assert stream.finish_reason == "cancelled" and len(stream.token_ids) < NEW
    # what was streamed is the text of exactly the tokens generated before the cancel
    assert "".join(pieces) == ours._text("", ours.tokenizer.encode([PROMPT])[0].ids, stream.token_ids, False)
    assert full.startswith("".join(pieces))

    stream = ours.stream(PROMPT, do_sample=False, max_new_tokens=NEW)
    first = next(stream)
    canceller = threading.Thread(target=stream.cancel)
    canceller.start()
    canceller.join()
    rest = list(stream)
    assert stream.cancelled and stream.finish_reason == "cancelled" and full.startswith(first + "".join(rest))
    assert list(stream) == []  # an ended stream stays ended
    # the pipeline is untouched: the next call and the next stream give the full text again
    assert ours(PROMPT, do_sample=False, max_new_tokens=NEW, return_full_text=False)[0]["generated_text"] == full
    assert "".join(ours.stream(PROMPT, do_sample=False, max_new_tokens=NEW)) == full


def test_streams_from_several_threads_at_once(scripted):
    """Each stream holds its own KV cache: streams interleaved on one pipeline from four
    threads each give their own prompt's text."""
    _, _, ours, _ = scripted
    prompts = [PROMPT, "the cat", "Where is 東京?", "ok"]
    expected = [ours(p, do_sample=False, max_new_tokens=NEW, return_full_text=False)[0]["generated_text"]
                for p in prompts]
    streams = [ours.stream(p, do_sample=False, max_new_tokens=NEW) for p in prompts]
    barrier = threading.Barrier(len(streams))
    got: dict[int, str] = {}

    def consume(index: int) -> None:
        barrier.wait()
        got[index] = "".join(streams[index])

    threads = [threading.Thread(target=consume, args=(i,)) for i in range(len(streams))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [got[i] for i in range(len(prompts))] == expected


def test_stream_stops_at_eos_like_the_call(scripted):
    _, _, ours, theirs = scripted
    eos = ours.tokenizer.encode(["首都"], add_special_tokens=False)[0].ids[0]  # a token the script reaches
    expected = theirs(PROMPT, do_sample=False, max_new_tokens=NEW, eos_token_id=eos,
                      return_full_text=False)[0]["generated_text"]
    stream = ours.stream(PROMPT, do_sample=False, max_new_tokens=NEW, eos_token_id=eos)
    assert "".join(stream) == expected and stream.finish_reason == "eos" and stream.token_ids[-1] == eos


def test_stream_honours_stop_strings_and_the_other_decoding_arguments(scripted):
    _, _, ours, _ = scripted
    for kwargs in ({"stop_strings": "首都"}, {"stop_strings": ["movie", "zzz"]}, {"repetition_penalty": 5.0},
                   {"no_repeat_ngram_size": 2}, {"generate_kwargs": {"max_new_tokens": 7}}):
        kwargs = {"do_sample": False, "max_new_tokens": NEW, **kwargs}
        expected = ours(PROMPT, return_full_text=False, **kwargs)[0]["generated_text"]
        stream = ours.stream(PROMPT, **kwargs)
        assert "".join(stream) == expected, kwargs
        if "stop_strings" in kwargs:
            assert stream.finish_reason == "stop" and len(stream.token_ids) < NEW, kwargs


@pytest.mark.parametrize(("args", "kwargs", "match"), [
    ((PROMPT,), {"num_beams": 2, "do_sample": True}, r"sampled beam search .* is not available"),
    ((PROMPT,), {"num_return_sequences": 2}, r"num_return_sequences=2 needs the pipeline call"),
    (([PROMPT, PROMPT],), {}, r"stream takes one prompt"),
    ((PROMPT,), {"bogus": 1}, r"stream got unknown argument 'bogus'"),
    ((PROMPT,), {"max_new_tokens": 0}, r"max_new_tokens must be an integer >= 1"),
    ((PROMPT,), {"return_full_text": True}, r"stream yields only the new text"),
])
def test_bad_stream_arguments_are_typed_and_the_pipeline_stays_usable(scripted, args, kwargs, match):
    _, _, ours, _ = scripted
    with pytest.raises(InputError, match=match):
        ours.stream(*args, **kwargs)
    assert "".join(ours.stream(PROMPT, do_sample=False, max_new_tokens=3))


def _reference(tokenizer, clean: bool):
    return lambda ids: tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=clean)


@pytest.mark.parametrize("kind", ["bpe-plain", "unigram"])
@pytest.mark.parametrize("clean", [False, True])
def test_detokenizer_matches_transformers_decode_on_random_tokens(tmp_path, kind, clean):
    """Random ids (lone UTF-8 bytes, CJK, punctuation after spaces, specials) through
    byte-level BPE and Metaspace: the pieces join to transformers' decode of the whole
    sequence minus the prompt's, and the text shown so far is always a prefix of it."""
    from tests.fixtures.checkpoints import build_tokenizer

    tokenizer = build_tokenizer(kind, tmp_path)
    backend = tokenizer.backend_tokenizer
    ids = tokenizer("I like it 東京 🙂 , don 't . 's ' ' café 北京", add_special_tokens=False)["input_ids"]
    pool = np.array(ids + list(range(len(tokenizer))), dtype=np.int64)
    weights = np.where(np.arange(pool.size) < len(ids), 40.0, 1.0)
    rng = np.random.default_rng(0)
    reference = _reference(tokenizer, clean)
    for _ in range(40):
        tokens = rng.choice(pool, size=int(rng.integers(2, 30)), p=weights / weights.sum()).tolist()
        cut = int(rng.integers(1, len(tokens)))
        prompt, new = tokens[:cut], tokens[cut:]
        expected = reference(tokens)[len(reference(prompt)):]
        detokenizer = IncrementalDetokenizer(lambda t: backend.decode(t, skip_special_tokens=True), prompt,
                                             clean_up_tokenization if clean else None)
        shown = ""
        for token in new:
            shown += detokenizer.add([token])
            assert expected.startswith(shown), (prompt, new, shown, expected)
        assert shown + detokenizer.flush() == expected, (prompt, new)


@pytest.mark.parametrize("kind", ["bpe-plain", "unigram"])
@pytest.mark.parametrize("clean", [False, True])
def test_stripping_detokenizer_matches_a_stripped_decode(tmp_path, kind, clean):
    """Marian's decode strips the text (text2text.py strips, then cleans up): streamed, the
    leading whitespace is dropped and trailing whitespace is held until text follows it."""
    from tests.fixtures.checkpoints import build_tokenizer

    tokenizer = build_tokenizer(kind, tmp_path)
    backend = tokenizer.backend_tokenizer
    ids = tokenizer("  a  b ,  東京  🙂 . 's", add_special_tokens=False)["input_ids"]
    rng = np.random.default_rng(1)
    stripped_something = False
    for _ in range(60):
        new = rng.choice(np.array(ids), size=int(rng.integers(1, 12))).tolist()
        raw = backend.decode(new, skip_special_tokens=True)
        expected = clean_up_tokenization(raw.strip()) if clean else raw.strip()
        stripped_something |= raw != raw.strip()
        detokenizer = IncrementalDetokenizer(lambda t: backend.decode(t, skip_special_tokens=True), [],
                                             clean_up_tokenization if clean else None, strip=True)
        shown = ""
        for token in new:
            shown += detokenizer.add([token])
            assert expected.startswith(shown), (new, shown, expected)
        assert shown + detokenizer.flush() == expected, new
    assert stripped_something, "no sequence had whitespace at an edge: the test would not test the strip"


def test_cli_run_streams_the_pipeline_text(scripted):
    from click.testing import CliRunner

    from edgeformers.runtime.cli import cli

    _, bundle, ours, _ = scripted
    expected = ours(PROMPT, do_sample=False, max_new_tokens=NEW, return_full_text=False)[0]["generated_text"]
    result = CliRunner().invoke(cli, ["run", str(bundle), PROMPT, "--max-new-tokens", str(NEW), "--greedy"])
    assert result.exit_code == 0, result.output
    assert result.stdout == expected + "\n"
    chat = [{"role": "user", "content": "Hi 🙂"}]
    result = CliRunner().invoke(cli, ["run", str(bundle), json.dumps(chat), "--max-new-tokens", "8", "--greedy"])
    assert result.exit_code == 0, result.output
    assert result.stdout == ours(chat, do_sample=False, max_new_tokens=8, return_full_text=False)[0]["generated_text"] + "\n"
    result = CliRunner().invoke(cli, ["run", str(bundle), PROMPT, "--json", "--max-new-tokens", "4", "--greedy"])
    assert result.exit_code == 0 and json.loads(result.stdout) == ours(PROMPT, do_sample=False, max_new_tokens=4)


_INTERRUPTED_RUN = r"""
import os, signal, sys
from edgeformers.runtime.generation import streaming
from edgeformers.runtime.cli import main

real = streaming.TextStream._advance
def advance(self):
    if len(self.token_ids) == 6:
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C after the sixth token
    return real(self)
streaming.TextStream._advance = advance
sys.argv = ["edgeformers", "run", sys.argv[1], sys.argv[2], "--max-new-tokens", "20", "--greedy"]
main()
"""


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT delivery is POSIX")
def test_ctrl_c_stops_the_stream_with_one_line_and_exit_code_130(scripted):
    _, bundle, ours, _ = scripted
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    done = subprocess.run([sys.executable, "-c", _INTERRUPTED_RUN, str(bundle), PROMPT], capture_output=True,
                          text=True, timeout=120, env=env)
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip().splitlines() == ["interrupted after 6 tokens"], done.stderr
    full = ours(PROMPT, do_sample=False, max_new_tokens=20, return_full_text=False)[0]["generated_text"]
    assert done.stdout.strip() and full.startswith(done.stdout.rstrip("\n"))
