"""Slow (sentencepiece) tokenizers written as tokenizer.json at export, checked token for token.

The runtime reads only tokenizer.json (the ``tokenizers`` library). A checkpoint that ships
only a slow tokenizer (T5's spiece.model, ALBERT, mBART's sentencepiece.bpe.model,
Marian's source.spm/target.spm/vocab.json, M2M100) gets one here:

- tokenizers transformers can convert go through its own converter
  (``AutoTokenizer(use_fast=True)``);
- Marian and M2M100, which transformers has no fast tokenizer for, go through
  exporter/spm_convert.py.

Either way the written file is then held to the slow tokenizer on the validation texts and
on hard strings (accents, CJK, emoji, digits, repeated spaces, unknown characters): the
same ids, and the same text when those ids (and target-side ids, and every id of the
vocabulary in runs) are decoded. Any difference fails the export with an ExportError
naming the first text and both token lists; export is atomic, so nothing is left behind.
A checkpoint that already has a tokenizer.json is not touched here.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgeformers.exporter.spm_convert import m2m100_tokenizer, marian_tokenizers
from edgeformers.exporter.validate import VALIDATION_TEXTS
from edgeformers.models.errors import ExportError
from edgeformers.models.processing import decode_strips

log = logging.getLogger(__name__)

#: Strings slow and converted tokenizers are known to part ways on, beyond VALIDATION_TEXTS.
HARD_TEXTS: tuple[str, ...] = (
    "Ça va? Très bien, merci! Crème brûlée, naïve señor, Ångström, Kraków.",
    "北京是中国的首都。서울은 한국의 수도입니다. Привет, как дела?",
    "We won the match 🎉🎉 and celebrated ❤️ 👍🏽 👨‍👩‍👧",
    "The price rose from $5 to $12.99 (a 160% increase) in 2024; call 555-0199, 1,000,000 or 1.5e-3.",
    "  leading,   repeated    spaces,\ttabs\tand\nnew lines   trailing  ",
    "Unknown: ẞ ǅ ⱥ ꙮ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ﷽ \u200b zero-width and ⅷ ﬁ ligatures",
    "x",
    "",
)
_SWEEP_RUN = 16  # ids per decoded run when every id of the vocabulary is decoded
_SWEEP_LIMIT = 300_000
_OWN_CONVERTERS: dict[str, Callable[[Any], dict[str, Any]]] = {
    "MarianTokenizer": marian_tokenizers,
    "M2M100Tokenizer": m2m100_tokenizer,
}


def write_checked_tokenizer(checkpoint: Path, work: Path) -> bool:
    """Write ``work``/tokenizer.json for a ``checkpoint`` that has only a slow tokenizer and
    check it against that tokenizer (ExportError on any difference). False, writing nothing,
    when the checkpoint has a tokenizer.json already or no slow tokenizer this can convert."""
    if (checkpoint / "tokenizer.json").is_file():
        return False
    slow = _load(checkpoint, use_fast=False)
    if slow is None or getattr(slow, "is_fast", False):
        return False
    name = type(slow).__name__
    own = _OWN_CONVERTERS.get(name)
    if own is not None:
        converted = own(slow)
        (work / "tokenizer.json").unlink(missing_ok=True)  # whatever optimum's unchecked conversion left
        slow.save_pretrained(str(work))  # source.spm, vocab.json ...: what transformers reloads the bundle from
        for file, tokenizer in converted.items():
            tokenizer.save(str(work / file))
    else:
        fast = _load(checkpoint, use_fast=True)
        if fast is None or not getattr(fast, "is_fast", False):
            return False
        (work / "tokenizer.json").unlink(missing_ok=True)
        fast.save_pretrained(str(work))
    strip = decode_strips(_model_type(checkpoint))
    try:
        checked = check_tokenizer(slow, work, strip=strip)
    except ExportError as err:
        if own is not None:
            raise
        raise ExportError(f"{err}. This is transformers' own fast conversion of {checkpoint}, which its pipelines "
                          "use by default; to ship it anyway, save it into the checkpoint (AutoTokenizer."
                          "from_pretrained(CHECKPOINT).save_pretrained(CHECKPOINT) writes tokenizer.json) and export "
                          "again") from None
    log.info("%s: wrote tokenizer.json from %s, identical on %d texts and %d decoded id runs",
             checkpoint, name, checked["texts"], checked["decoded"])
    return True


def check_tokenizer(slow: Any, folder: Path, strip: bool = False) -> dict[str, int]:
    """Hold ``folder``/tokenizer.json to the slow tokenizer: ids of every check text, decoded
    text of those ids, of their target-side ids, and of every vocabulary id in runs of
    ``_SWEEP_RUN``. ``strip`` applies the runtime's
    :func:`decode_strips` rule. Returns how many texts and decoded runs were compared."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    name = type(slow).__name__
    decoded = 0
    texts = [*VALIDATION_TEXTS, *HARD_TEXTS]
    for text in texts:
        expected = list(slow(text)["input_ids"])
        encoding = tokenizer.encode(text)
        if list(encoding.ids) != expected:
            raise ExportError(_mismatch(name, text, slow.convert_ids_to_tokens(expected), expected,
                                        list(encoding.tokens), list(encoding.ids)))
        _check_decode(slow, tokenizer, expected, name, strip, use_source=True)
        target_ids = list(slow(text_target=text)["input_ids"])  # Marian: the target sentencepiece model's ids
        _check_decode(slow, tokenizer, target_ids, name, strip)
        decoded += 2
    size = len(tokenizer.get_vocab(with_added_tokens=True))
    step = max(1, size // _SWEEP_LIMIT)
    ids = list(range(0, size, step))
    for start in range(0, len(ids), _SWEEP_RUN):
        _check_decode(slow, tokenizer, ids[start:start + _SWEEP_RUN], name, strip)
        decoded += 1
    return {"texts": len(texts), "decoded": decoded}


def _check_decode(slow: Any, tokenizer: Any, ids: list[int], name: str, strip: bool,
                  use_source: bool = False) -> None:
    """Decoded as the runtime decodes: skip_special_tokens, then transformers' clean-up of
    tokenization spaces where the tokenizer's config asks for it (BERT's), which the slow
    tokenizer applies itself. With ``strip`` the runtime strips (Marian, M2M100) and the
    texts must be equal; otherwise they must be equal but for surrounding whitespace,
    which some slow tokenizers (T5's) strip and transformers' own fast tokenizer, the one
    its pipelines use, keeps."""
    kwargs = {"use_source_tokenizer": True} if use_source and name == "MarianTokenizer" else {}
    expected = slow.decode(ids, skip_special_tokens=True, **kwargs)
    got = tokenizer.decode(ids, skip_special_tokens=True)
    if slow.clean_up_tokenization_spaces:
        got = slow.clean_up_tokenization(got)
    if (got.strip() != expected) if strip else (got.strip() != expected.strip()):
        raise ExportError(f"the tokenizer.json written for this {name} decodes ids {_short(ids)} to {got!r:.200} "
                          f"but {name} decodes them to {expected!r:.200}; export stopped (no bundle written)")


def _mismatch(name: str, text: str, slow_tokens: list[str], slow_ids: list[int],
              fast_tokens: list[str], fast_ids: list[int]) -> str:
    first = next((i for i, (a, b) in enumerate(zip(slow_ids, fast_ids)) if a != b), min(len(slow_ids), len(fast_ids)))
    start = max(0, first - 3)
    return (
        f"the tokenizer.json written for this {name} disagrees with it on {text!r:.120}: from token {first}, "
        f"{name} gives {_short(slow_tokens[start:])} (ids {_short(slow_ids[start:])}) but tokenizer.json gives "
        f"{_short(fast_tokens[start:])} (ids {_short(fast_ids[start:])}); export stopped (no bundle written)"
    )


def _short(items: list[Any], limit: int = 12) -> str:
    shown = ", ".join(repr(i) for i in items[:limit])
    return f"[{shown}{', …' if len(items) > limit else ''}]"


def _load(checkpoint: Path, use_fast: bool) -> Any:
    """transformers' tokenizer of ``checkpoint``, None when it has none; never the checkpoint's
    own code (trust_remote_code=False; exporter/source.py refuses ``auto_map`` earlier)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(checkpoint), use_fast=use_fast, trust_remote_code=False)
    except Exception as err:  # no tokenizer files, or a tokenizer transformers cannot build
        log.debug("%s: no %s tokenizer: %s", checkpoint, "fast" if use_fast else "slow", err)
        return None


def _model_type(checkpoint: Path) -> str | None:
    try:
        value = json.loads((checkpoint / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None
