"""Chat templates: rendering identical to transformers' ``apply_chat_template`` on real
templates (ChatML, Llama 3, Zephyr, Gemma, Mistral, a tool-calling one), where the
template comes from (tokenizer_config.json string or named list, chat_template.jinja),
the text-generation pipeline's chat outputs equal to transformers' pipeline, and bad chat
input as typed errors that leave the pipeline usable."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
jinja2 = pytest.importorskip("jinja2")

from edgeformers.models.errors import BundleError, InputError  # noqa: E402
from edgeformers.runtime import pipeline  # noqa: E402
from edgeformers.runtime.bundle import Bundle  # noqa: E402
from edgeformers.runtime.chat_template import ChatTemplate  # noqa: E402
from tests.fixtures.chat_templates import (  # noqa: E402
    CONVERSATIONS,
    GEMMA,
    MISTRAL,
    SYSTEM_CONVERSATION,
    TEMPLATES,
    TOOL_CONVERSATION,
    WEATHER_TOOL,
    ZEPHYR,
)

NEW = 12


@pytest.fixture(scope="module")
def tokenizer(scripted_decoder):
    """transformers' tokenizer of the scripted checkpoint (Llama-style specials <s> </s> <unk> <pad>)."""
    return transformers.AutoTokenizer.from_pretrained(str(scripted_decoder[0]))


@pytest.fixture(scope="module")
def chat(scripted_decoder):
    """(checkpoint, bundle, our pipeline, transformers' pipeline); the bundle's template is ChatML."""
    checkpoint, bundle = scripted_decoder
    return (checkpoint, bundle, pipeline("text-generation", bundle, device="cpu"),
            transformers.pipeline("text-generation", model=str(checkpoint)))


def _theirs(tokenizer, template, messages, **kwargs):
    tokenizer.chat_template = template
    return tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_rendering_matches_apply_chat_template(tokenizer, scripted_decoder, name):
    ours = ChatTemplate(TEMPLATES[name], ChatTemplate.from_bundle(Bundle.open(scripted_decoder[1])).special_tokens)
    cases = [(conversation, {"add_generation_prompt": flag}) for conversation in CONVERSATIONS for flag in (True, False)]
    cases.append((CONVERSATIONS[2], {"continue_final_message": True}))  # assistant prefill
    if name not in ("gemma", "mistral"):
        cases.append((SYSTEM_CONVERSATION, {"add_generation_prompt": True}))
    if name == "tools":
        cases += [(TOOL_CONVERSATION, {"tools": [WEATHER_TOOL], "add_generation_prompt": True}),
                  (CONVERSATIONS[1], {"tools": [WEATHER_TOOL]})]
    rendered = []
    for messages, kwargs in cases:
        expected = _theirs(tokenizer, TEMPLATES[name], messages, **kwargs)
        assert ours.render(messages, **kwargs) == expected, (messages, kwargs)
        rendered.append(expected)
    if name == "tools":  # tojson kept non-ASCII text, with and without indent
        assert "Météo actuelle" in rendered[-2] and '"arguments": {"city": "Genève"}' in rendered[-2]


def test_special_tokens_come_from_the_bundle_as_transformers_passes_them(tokenizer, scripted_decoder):
    template = ChatTemplate.from_bundle(Bundle.open(scripted_decoder[1]))
    assert template.special_tokens == tokenizer.special_tokens_map
    assert template.special_tokens["bos_token"] == "<s>"


@pytest.mark.parametrize(("template", "messages", "message", "index"), [
    (MISTRAL, [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
     "Conversation roles must alternate user/assistant/user/assistant/...", 1),
    (MISTRAL, [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "tool", "content": "c"}],
     "Conversation roles must alternate user/assistant/user/assistant/...", 2),
    (GEMMA, SYSTEM_CONVERSATION, "System role not supported", 0),
])
def test_a_template_that_raises_is_an_input_error_naming_the_message(tokenizer, template, messages, message, index):
    with pytest.raises(jinja2.TemplateError, match=message.replace(".", r"\.")):
        _theirs(tokenizer, template, messages, add_generation_prompt=True)
    with pytest.raises(InputError, match=rf"refused these messages at message {index}: {message}".replace(".", r"\.")):
        ChatTemplate(template, {"bos_token": "<s>", "eos_token": "</s>"}).render(messages, add_generation_prompt=True)


def test_named_templates_are_chosen_as_transformers_chooses(tokenizer):
    named = {"default": TEMPLATES["chatml"], "tool_use": TEMPLATES["tools"], "zephyr": ZEPHYR}
    ours = ChatTemplate(named, dict(tokenizer.special_tokens_map))
    tokenizer.chat_template = dict(named)
    for kwargs in ({}, {"tools": [WEATHER_TOOL]}, {"chat_template": "zephyr"}):
        expected = tokenizer.apply_chat_template(CONVERSATIONS[1], tokenize=False, add_generation_prompt=True, **kwargs)
        assert ours.render(CONVERSATIONS[1], add_generation_prompt=True, **kwargs) == expected, kwargs
    with pytest.raises(BundleError, match="several chat templates and none named 'default'"):
        ChatTemplate({"a": ZEPHYR, "b": ZEPHYR}, {}).render(CONVERSATIONS[0])


def test_chat_pipeline_matches_transformers_pipeline(chat):
    _, _, ours, theirs = chat
    single = [{"role": "user", "content": "Where is 東京?"}]
    prefill = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "I like"}]
    kwargs = {"do_sample": False, "max_new_tokens": NEW}
    for inputs, extra in ((single, {}), (single, {"return_full_text": False}), (prefill, {}),
                          (prefill, {"continue_final_message": False}), ([single, prefill], {}),
                          ([single, prefill], {"return_full_text": False})):
        expected = theirs(inputs, **kwargs, **extra)
        assert ours(inputs, **kwargs, **extra) == expected, (inputs, extra)
    assert ours([single, prefill], batch_size=2, **kwargs) == theirs([single, prefill], **kwargs)
    # the model is fed exactly transformers' chat tokens: the tokenizer adds no BOS to a rendered chat
    fed = [e.ids for e in ours._encode(ours._prompts([single, prefill], None))]
    assert fed == [theirs.tokenizer.apply_chat_template(single, add_generation_prompt=True),
                   theirs.tokenizer.apply_chat_template(prefill, continue_final_message=True)]
    # the prefilled answer is continued: the scripted model says "東京" after "like"
    assert ours(prefill, **kwargs)[0]["generated_text"][-1]["content"].startswith("I like東京")


def _edit(source, target, files):
    """A copy of ``source`` with ``files`` (name -> text, or None to delete) changed; a
    bundle's manifest gets their new sizes and sha256 so it still opens (and verifies)."""
    shutil.copytree(source, target)
    manifest_path = target / "edgeformers.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else None
    for name, text in files.items():
        if text is None:
            (target / name).unlink(missing_ok=True)
            if manifest:
                manifest["files"].pop(name, None)
            continue
        data = text.encode("utf-8")
        (target / name).write_bytes(data)
        if manifest:
            manifest["files"][name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    if manifest:
        manifest_path.write_text(json.dumps(manifest, indent=2))
    return target


@pytest.mark.parametrize("source", ["config-string", "jinja-over-config", "config-named-list"])
def test_template_sources_match_transformers(chat, tmp_path, source):
    """tokenizer_config.json's chat_template (a string, or a list of named templates) and
    chat_template.jinja, which wins over it: the pipeline renders what transformers renders."""
    checkpoint, bundle, _, _ = chat
    config = json.loads((checkpoint / "tokenizer_config.json").read_text())
    assert config["chat_template"] == TEMPLATES["chatml"]
    files = {"tokenizer_config.json": json.dumps(config), "chat_template.jinja": None}
    if source == "jinja-over-config":
        files["chat_template.jinja"] = ZEPHYR
    elif source == "config-named-list":
        config["chat_template"] = [{"name": "default", "template": ZEPHYR}, {"name": "tool_use", "template": MISTRAL}]
        files["tokenizer_config.json"] = json.dumps(config)
    theirs = transformers.pipeline("text-generation", model=str(_edit(checkpoint, tmp_path / "checkpoint", files)))
    ours = pipeline("text-generation", _edit(bundle, tmp_path / "bundle", files), device="cpu", verify=True)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert ours(messages, do_sample=False, max_new_tokens=NEW) == theirs(messages, do_sample=False, max_new_tokens=NEW)
    assert ours.chat_template.select() == (TEMPLATES["chatml"] if source == "config-string" else ZEPHYR)


@pytest.mark.parametrize(("inputs", "match"), [
    ([{"role": "user", "content": "a"}, "oops"], r"chat message 1 \(text_inputs\[1\]\) is str"),
    ([{"role": "user"}], r"chat message 0 \(text_inputs\[0\]\) has no 'content' key"),
    ([{"content": "a"}], r"chat message 0 \(text_inputs\[0\]\) has no 'role' key"),
    ([{"role": "user", "content": "a"}, {"role": 3, "content": "b"}], r"chat message 1 .* has role 3"),
    ([[{"role": "user", "content": "a"}], []], r"text_inputs\[1\] is an empty list"),
    ([[{"role": "user", "content": "a"}], "x"], r"text_inputs\[1\] is str"),
    ([{"role": "user", "content": "a"}, {"role": "assistant", "content": None}], r"continue_final_message is set"),
])
def test_malformed_chat_messages_are_typed_and_the_pipeline_stays_usable(chat, inputs, match):
    _, _, ours, _ = chat
    with pytest.raises(InputError, match=match):
        ours(inputs, do_sample=False, max_new_tokens=2)
    assert ours([{"role": "user", "content": "ok"}], do_sample=False, max_new_tokens=2)


def test_template_errors_surface_as_typed_errors(chat, tmp_path, bundle_factory):
    _, bundle, ours, _ = chat
    raising = _edit(bundle, tmp_path / "raising", {"chat_template.jinja": MISTRAL})
    pipe = pipeline("text-generation", raising, device="cpu")
    bad_order = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    with pytest.raises(InputError, match=r"refused these messages at message 1: Conversation roles must alternate"):
        pipe(bad_order, do_sample=False, max_new_tokens=2)
    assert pipe([{"role": "user", "content": "a"}], do_sample=False, max_new_tokens=2)

    broken = _edit(bundle, tmp_path / "broken", {"chat_template.jinja": "{% for m in messages %}{{ m.content }"})
    pipe = pipeline("text-generation", broken, device="cpu")  # plain text still works
    assert pipe("I like", do_sample=False, max_new_tokens=2)
    with pytest.raises(BundleError, match=r"the chat template is not valid Jinja"):
        pipe([{"role": "user", "content": "a"}], do_sample=False, max_new_tokens=2)

    # a template is read through the bundle's path checks: a link out of the bundle is refused at load
    escaping = _edit(bundle, tmp_path / "escaping", {"chat_template.jinja": None})
    (escaping / "chat_template.jinja").symlink_to(tmp_path / "raising" / "chat_template.jinja")
    with pytest.raises(BundleError, match=r"chat_template\.jinja"):
        pipeline("text-generation", escaping, device="cpu")

    _, plain = bundle_factory("gpt2", "causal-lm", "text-generation")
    assert "chat_template" not in json.loads((plain / "tokenizer_config.json").read_text())
    with pytest.raises(InputError, match=r"this bundle's tokenizer has no chat template"):
        pipeline("text-generation", plain, device="cpu")([{"role": "user", "content": "a"}])
    with pytest.raises(InputError, match=r"continue_final_message applies to chat messages only"):
        ours("I like", continue_final_message=True)
