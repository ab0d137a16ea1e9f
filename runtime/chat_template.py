"""Chat messages rendered with the tokenizer's own chat template, as transformers'
``apply_chat_template`` renders them (transformers/utils/chat_template_utils.py, 4.57).

The template is Jinja code from a stranger's bundle, so it runs in Jinja's
``ImmutableSandboxedEnvironment`` (no attribute access to internals, no mutation of the
inputs), exactly the environment transformers uses, with the same settings
(``trim_blocks``, ``lstrip_blocks``, loop controls) and the same extras: ``raise_exception``,
``strftime_now``, a ``tojson`` filter that keeps non-ASCII text and takes ``indent``,
``separators`` and ``sort_keys``, and the ``{% generation %}`` block (rendered as is).
The special tokens (``bos_token``, ``eos_token`` ...) are passed in as transformers passes
its ``special_tokens_map``. jinja2 is imported only here, when a chat is rendered.

Where the template comes from, in transformers' order: ``chat_template.jinja`` (plus
named ones in ``chat_templates/*.jinja``) when present, else tokenizer_config.json's
``chat_template`` (a string, or a list of ``{"name", "template"}``).
"""

from __future__ import annotations

import copy
import functools
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from edgeformers.models.errors import BundleError, InputError
from edgeformers.models.processing import special_token
from edgeformers.runtime.bundle_files import MAX_CONFIG_BYTES, read_limited

if TYPE_CHECKING:
    from edgeformers.runtime.bundle import Bundle

logger = logging.getLogger(__name__)

CHAT_TEMPLATE_FILE = "chat_template.jinja"
CHAT_TEMPLATE_DIR = "chat_templates"
#: transformers' SPECIAL_TOKENS_ATTRIBUTES: what every template may read by name.
SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
_CONTINUE_TAG = "CONTINUE_FINAL_MESSAGE_TAG "

Conversation = list[dict[str, Any]]


def is_chat(inputs: Any) -> bool:
    """Whether a pipeline input is chat messages (one conversation, a list of dicts) or a
    list of conversations, by its first item, as transformers' pipeline decides."""
    return isinstance(inputs, (list, tuple)) and len(inputs) > 0 and isinstance(inputs[0], (dict, list, tuple))


def conversations(inputs: Any, name: str = "text_inputs") -> tuple[list[Conversation], bool]:
    """``(conversations, was_single)`` for one conversation or a list of them, each checked:
    a list of dicts with a string ``role`` and a ``content`` key (any value: text, content
    blocks, None beside tool calls; the template decides what it renders). A bad message is
    an ``InputError`` naming it."""
    single = isinstance(inputs[0], dict)
    chats = [inputs] if single else list(inputs)
    for number, chat in enumerate(chats):
        where = name if single else f"{name}[{number}]"
        if not isinstance(chat, (list, tuple)) or not chat:
            shown = "an empty list" if isinstance(chat, (list, tuple)) else type(chat).__name__
            raise InputError(f"{where} is {shown}; a conversation is a non-empty list of messages like "
                             '{"role": "user", "content": "..."}')
        for index, message in enumerate(chat):
            _check_message(message, index, f"{where}[{index}]")
    return [list(chat) for chat in chats], single


def _check_message(message: Any, index: int, where: str) -> None:
    if not isinstance(message, dict):
        raise InputError(f"chat message {index} ({where}) is {type(message).__name__}; each chat message is a dict "
                         'like {"role": "user", "content": "..."}')
    missing = [key for key in ("role", "content") if key not in message]
    if missing:
        raise InputError(f"chat message {index} ({where}) has no {' or '.join(map(repr, missing))} key; each chat "
                         f"message needs 'role' and 'content' (it has {sorted(map(str, message))})")
    if not isinstance(message["role"], str) or not message["role"]:
        raise InputError(f"chat message {index} ({where}) has role {message['role']!r}; a role is a non-empty string such as 'system', "
                         "'user' or 'assistant'")


class ChatTemplate:
    """A bundle's chat template(s) and the special tokens rendered into them."""

    def __init__(self, templates: str | dict[str, str], special_tokens: dict[str, Any], where: str = "") -> None:
        self.templates = templates
        self.special_tokens = dict(special_tokens)
        self.where = where

    @classmethod
    def from_bundle(cls, bundle: Bundle) -> ChatTemplate | None:
        """The bundle's template, or None when it has none."""
        where = str(bundle.path)
        config = bundle.read_json("tokenizer_config.json")
        templates: str | dict[str, str] | None = _files(bundle)
        if templates is None:
            templates = _from_config(config.get("chat_template"), f"{where}/tokenizer_config.json")
        if templates is None:
            return None
        specials_map = bundle.read_json("special_tokens_map.json")
        tokens: dict[str, Any] = {}
        for name in SPECIAL_TOKEN_NAMES:
            value = special_token(config, name) or special_token(specials_map, name)
            if value:
                tokens[name] = value
        extra = config.get("additional_special_tokens") or specials_map.get("additional_special_tokens") or []
        if isinstance(extra, list):
            extra = [t.get("content") if isinstance(t, dict) else t for t in extra]
            extra = [t for t in extra if isinstance(t, str)]
            if extra:
                tokens["additional_special_tokens"] = extra
        return cls(templates, tokens, where)

    def select(self, name: str | None = None, tools: list[Any] | None = None) -> str:
        """The template text: transformers' ``get_chat_template`` (a named template, the
        ``tool_use`` one when tools are given, else ``default``)."""
        if isinstance(self.templates, str):
            return self.templates if name is None else name
        if name is not None:
            return self.templates.get(name, name)
        if tools is not None and "tool_use" in self.templates:
            return self.templates["tool_use"]
        if "default" in self.templates:
            return self.templates["default"]
        raise BundleError(f"{self.where}: the tokenizer has several chat templates and none named 'default' "
                          f"({', '.join(sorted(self.templates))}); pass chat_template=<name>")

    def render(self, messages: Sequence[dict[str, Any]], add_generation_prompt: bool = False,
               continue_final_message: bool = False, tools: list[dict[str, Any]] | None = None,
               documents: list[dict[str, Any]] | None = None, chat_template: str | None = None,
               **kwargs: Any) -> str:
        """One conversation as text, identical to transformers'
        ``apply_chat_template(messages, tokenize=False, ...)``."""
        import jinja2

        if continue_final_message and add_generation_prompt:
            raise InputError("continue_final_message and add_generation_prompt cannot both be set: one continues the "
                             "last message, the other starts a new assistant message")
        compiled = _compile(self.select(chat_template, tools), self.where)
        chat = [dict(m) for m in messages]
        final = ""
        if continue_final_message:
            chat = copy.deepcopy(chat)
            final = _tag_final_message(chat)
        values = {**self.special_tokens, **kwargs}
        try:
            rendered = compiled.render(messages=chat, tools=tools, documents=documents,
                                       add_generation_prompt=add_generation_prompt, **values)
        except jinja2.TemplateError as err:  # raise_exception(), undefined names, sandbox refusals
            at = _first_refused(compiled, chat, str(err), tools, documents, values)
            where = f" at message {at}" if at is not None else ""
            raise InputError(f"the chat template refused these messages{where}: {err}") from None
        except (TypeError, ValueError, KeyError, IndexError, AttributeError) as err:
            raise InputError(f"the chat template failed on these messages: {type(err).__name__}: {err}") from None
        if continue_final_message:
            rendered = _cut_at_tag(rendered, final)
        return rendered


def _first_refused(compiled: Any, chat: Conversation, error: str, tools: Any, documents: Any,
                   values: dict[str, Any]) -> int | None:
    """The index of the first message whose conversation prefix the template refuses with
    the same error (a role out of order), so the error can name it; None if no prefix does."""
    import jinja2

    for end in range(1, len(chat)):
        try:
            compiled.render(messages=chat[:end], tools=tools, documents=documents, add_generation_prompt=False,
                            **values)
        except jinja2.TemplateError as err:
            return end - 1 if str(err) == error else None
        except Exception:  # noqa: BLE001 - a prefix failing otherwise says nothing about the index
            return None
    return len(chat) - 1


def _files(bundle: Bundle) -> str | dict[str, str] | None:
    """``chat_template.jinja`` and ``chat_templates/*.jinja``, as transformers loads them."""
    templates: dict[str, str] = {}
    if bundle.folder.exists(CHAT_TEMPLATE_FILE):
        templates["default"] = _read(bundle, CHAT_TEMPLATE_FILE)
    folder = bundle.folder.folder(CHAT_TEMPLATE_DIR)
    if folder is not None:
        for entry in sorted(folder.iterdir()):
            if entry.name.endswith(".jinja"):
                templates[entry.name.removesuffix(".jinja")] = _read(bundle, f"{CHAT_TEMPLATE_DIR}/{entry.name}")
    if not templates:
        return None
    return templates["default"] if list(templates) == ["default"] else templates


def _read(bundle: Bundle, name: str) -> str:
    where = f"{bundle.path}/{name}"
    try:
        return read_limited(bundle.file(name), MAX_CONFIG_BYTES, where).decode("utf-8")
    except UnicodeDecodeError as err:
        raise BundleError(f"{where} is not UTF-8 text ({err.reason} at byte {err.start})") from None


def _from_config(value: Any, where: str) -> str | dict[str, str] | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(t, dict) and isinstance(t.get("name"), str)
                                       and isinstance(t.get("template"), str) for t in value):
        return {t["name"]: t["template"] for t in value}
    raise BundleError(f"{where}: chat_template is {type(value).__name__}; expected a string or a list of "
                      '{"name": ..., "template": ...}')


def _tag_final_message(chat: Conversation) -> str:
    """Mark the end of the last message so the rendered text can be cut right after it
    (transformers' continue_final_message); returns the message's text."""
    content = chat[-1]["content"]
    if isinstance(content, (list, tuple)):
        for block in reversed(content):
            if "text" in block:
                final = block["text"]
                block["text"] = block["text"] + _CONTINUE_TAG
                return str(final)
        raise InputError("continue_final_message is set but the final message has no text block to continue")
    if not isinstance(content, str):
        raise InputError(f"continue_final_message is set but the final message's content is {content!r}, not text")
    chat[-1]["content"] = content + _CONTINUE_TAG
    return content


def _cut_at_tag(rendered: str, final: str) -> str:
    tag = _CONTINUE_TAG.strip()
    if final.strip() not in rendered or tag not in rendered:
        raise InputError("continue_final_message is set but the final message does not appear in the chat the "
                         "template renders (the template drops part of it); continue another way")
    at = rendered.rindex(tag)
    if rendered[at:at + len(_CONTINUE_TAG)] == _CONTINUE_TAG:
        return rendered[:at]
    return rendered[:at].rstrip()  # the template trimmed the message's trailing space


def _raise_exception(message: str) -> None:
    import jinja2

    raise jinja2.exceptions.TemplateError(message)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None,
            sort_keys: bool = False) -> str:
    # Jinja's own tojson escapes HTML characters; chat templates expect plain JSON.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


@functools.lru_cache(maxsize=16)
def _compile(source: str, where: str) -> Any:
    """The template compiled once per text (templates are immutable and thread-safe)."""
    import jinja2
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationBlock(Extension):
        """``{% generation %}...{% endgeneration %}`` marks assistant text for training
        masks in transformers; rendering keeps its body unchanged."""

        tags = {"generation"}

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.Scope(body).set_lineno(lineno)

    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                extensions=[GenerationBlock, loopcontrols])
    environment.filters["tojson"] = _tojson
    environment.globals["raise_exception"] = _raise_exception
    environment.globals["strftime_now"] = _strftime_now
    try:
        return environment.from_string(source)
    except jinja2.TemplateSyntaxError as err:
        raise BundleError(f"{where}: the chat template is not valid Jinja (line {err.lineno}: {err.message})") from None


@dataclass
class Prompts:
    """A text-generation call's inputs: the texts to tokenize and, for chat input, the
    conversations they were rendered from, to build transformers' outputs."""

    texts: list[str]
    single: bool
    chats: list[Conversation] | None = None
    continue_final: list[bool] = field(default_factory=list)

    def output(self, index: int, new_text: str, full: bool) -> str | Conversation:
        """``generated_text`` as transformers' pipeline returns it: the new text alone, or
        (``full``) the prompt followed by it; for a chat, the conversation with the new
        assistant message appended, or the continued final message."""
        if not full:
            return new_text
        if self.chats is None:
            return self.texts[index] + new_text
        chat = self.chats[index]
        if self.continue_final[index]:
            return [*chat[:-1], {"role": chat[-1]["role"], "content": chat[-1]["content"] + new_text}]
        return [*chat, {"role": "assistant", "content": new_text}]


def chat_prompts(template: ChatTemplate | None, inputs: Any, continue_final_message: bool | None,
                 name: str = "text_inputs") -> Prompts:
    """Render chat input (see :func:`is_chat`) as transformers' pipeline does: a generation
    prompt after the messages, or, when the last message is the assistant's (or
    ``continue_final_message``), that message continued."""
    if continue_final_message is not None and not isinstance(continue_final_message, bool):
        raise InputError(f"continue_final_message must be True, False or None, got {continue_final_message!r}")
    chats, single = conversations(inputs, name)
    if template is None:
        raise InputError(f"{name} is a chat (a list of messages) but this bundle's tokenizer has no chat template "
                         "(tokenizer_config.json 'chat_template' or chat_template.jinja); pass plain text instead")
    texts, continues = [], []
    for chat in chats:
        cont = chat[-1]["role"] == "assistant" if continue_final_message is None else continue_final_message
        texts.append(template.render(chat, add_generation_prompt=not cont, continue_final_message=cont))
        continues.append(cont)
    return Prompts(texts, single, chats, continues)
