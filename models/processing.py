"""Processing settings derived from a checkpoint's own config files.

Both the exporter (writing the manifest) and the runtime (opening a folder that has no
manifest) call these, so the two can never disagree.
"""

from __future__ import annotations

from typing import Any

from edgeformers.models.errors import BundleError

# transformers' sentinel for "no limit" (VERY_LARGE_INTEGER).
_UNSET_MAX_LENGTH = int(1e20)
# Longest limit passed on (int32 positions); larger values are clamped.
_LONGEST = 2**31 - 1
# Families whose position ids start after the padding index (RoBERTa's padding_idx + 1).
_POSITION_OFFSET = {"roberta": 2, "camembert": 2, "xlm-roberta": 2}


def text_max_length(config: dict[str, Any], tokenizer_config: dict[str, Any]) -> int | None:
    """The longest token sequence the model takes, as transformers' tokenizer sees it.

    ``tokenizer_config.json``'s ``model_max_length`` wins (that is what transformers
    truncates to); ``tokenizer.json`` may hard-code a smaller truncation that
    transformers ignores, so it is deliberately not consulted. Falls back to the
    config's position embeddings when the tokenizer sets no limit.
    """
    limit = tokenizer_config.get("model_max_length")
    if isinstance(limit, (int, float)) and not isinstance(limit, bool) and 1 <= limit < _UNSET_MAX_LENGTH:
        return min(int(limit), _LONGEST)
    positions = config.get("max_position_embeddings")
    if _is_int(positions) and positions > _POSITION_OFFSET.get(str(config.get("model_type")), 0):
        return min(positions - _POSITION_OFFSET.get(str(config.get("model_type")), 0), _LONGEST)
    return None


def special_token(tokenizer_config: dict[str, Any], name: str) -> str | None:
    """A special token's text from tokenizer_config.json (plain string or AddedToken dict)."""
    value = tokenizer_config.get(name)
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


# Families whose slow tokenizer's decode() strips the text (MarianTokenizer and
# M2M100Tokenizer end convert_tokens_to_string with .strip()); a tokenizer.json decoder
# works per token and cannot, so the runtime strips after decoding.
_STRIPS_DECODED_TEXT = frozenset({"marian", "m2m_100"})


def decode_strips(model_type: str | None) -> bool:
    """Whether decoded text must be ``str.strip()``-ed to equal transformers' decode; the
    exporter's tokenizer check (exporter/tokenizer_convert.py) applies the same rule."""
    return model_type in _STRIPS_DECODED_TEXT


def sentence_transformers_settings(
    modules: list[dict[str, Any]] | None,
    pooling_config: dict[str, Any] | None,
    sentence_bert_config: dict[str, Any] | None,
) -> dict[str, Any] | None:
    """The pooling a sentence-transformers checkpoint declares, or None if it declares none."""
    if not pooling_config:
        return None
    if pooling_config.get("pooling_mode_cls_token"):
        pooling = "cls"
    elif pooling_config.get("pooling_mode_mean_tokens"):
        pooling = "mean"
    elif pooling_config.get("pooling_mode_max_tokens"):
        pooling = "max"
    else:
        return None
    normalize = any(str(m.get("type", "")).endswith(".Normalize") for m in modules or [])
    settings: dict[str, Any] = {"pooling": pooling, "normalize": normalize}
    if sentence_bert_config and _is_int(sentence_bert_config.get("max_seq_length")) and (
        sentence_bert_config["max_seq_length"] >= 1
    ):
        settings["max_length"] = min(sentence_bert_config["max_seq_length"], _LONGEST)
    return settings


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_config(config: dict[str, Any], where: str) -> None:
    """Refuse config.json values the runtime would use and could not: ``model_type``,
    ``architectures``, ``id2label``, ``pad_token_id``, ``problem_type``,
    ``max_position_embeddings``, ``vocab_size``."""
    def fail(name: str, expected: str) -> BundleError:
        return BundleError(f"{where}: {name} should be {expected}, got {repr(config[name])[:60]}")

    if "model_type" in config and (not isinstance(config["model_type"], str) or not config["model_type"]):
        raise fail("model_type", "a non-empty string")
    architectures = config.get("architectures")
    if architectures is not None and not (
        isinstance(architectures, list) and all(isinstance(a, str) for a in architectures)
    ):
        raise fail("architectures", "a list of class names")
    id2label = config.get("id2label")
    if id2label is not None:
        if not isinstance(id2label, dict):
            raise fail("id2label", "an object mapping class ids to names")
        for key, value in id2label.items():
            if not (isinstance(key, str) and key.isascii() and key.isdigit() and len(key) < 10):
                raise BundleError(f"{where}: id2label key {key!r:.60} is not a class id (a non-negative integer)")
            if not isinstance(value, str):
                raise BundleError(f"{where}: id2label.{key} should be a label name, got {value!r:.60}")
    for name in ("pad_token_id",):
        if config.get(name) is not None and not (_is_int(config[name]) and config[name] >= 0):
            raise fail(name, "a non-negative token id or null")
    for name in ("max_position_embeddings", "vocab_size"):
        if config.get(name) is not None and not (_is_int(config[name]) and config[name] >= 1):
            raise fail(name, "a positive integer or null")
    problem = config.get("problem_type")
    if problem is not None and problem not in ("single_label_classification", "multi_label_classification", "regression"):
        raise fail("problem_type", "single_label_classification, multi_label_classification, regression or null")


def check_tokenizer_config(config: dict[str, Any], where: str) -> None:
    """``model_max_length`` a positive number or null (transformers' 1e30 means none);
    ``padding_side`` left or right."""
    limit = config.get("model_max_length")
    if limit is not None and not (
        isinstance(limit, (int, float)) and not isinstance(limit, bool) and limit == limit and limit > 0
    ):
        raise BundleError(f"{where}: model_max_length should be a positive number or null, got {limit!r:.60}")
    side = config.get("padding_side")
    if side is not None and side not in ("left", "right"):
        raise BundleError(f"{where}: padding_side should be 'left' or 'right', got {side!r:.60}")


def check_sentence_bert_config(config: dict[str, Any], where: str) -> None:
    """``max_seq_length`` a positive integer or null."""
    limit = config.get("max_seq_length")
    if limit is not None and not (_is_int(limit) and limit >= 1):
        raise BundleError(f"{where}: max_seq_length should be a positive integer or null, got {limit!r:.60}")
