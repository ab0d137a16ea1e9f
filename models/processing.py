"""Processing settings derived from a checkpoint's own config files.

Both the exporter (writing the manifest) and the runtime (opening a folder that has no
manifest) call these, so the two can never disagree.
"""

from __future__ import annotations

from typing import Any

# transformers' sentinel for "no limit" (VERY_LARGE_INTEGER).
_UNSET_MAX_LENGTH = int(1e20)
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
    if isinstance(limit, (int, float)) and 0 < limit < _UNSET_MAX_LENGTH:
        return int(limit)
    positions = config.get("max_position_embeddings")
    if isinstance(positions, int) and positions > 0:
        return positions - _POSITION_OFFSET.get(str(config.get("model_type")), 0)
    return None


def special_token(tokenizer_config: dict[str, Any], name: str) -> str | None:
    """A special token's text from tokenizer_config.json (plain string or AddedToken dict)."""
    value = tokenizer_config.get(name)
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


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
    if sentence_bert_config and isinstance(sentence_bert_config.get("max_seq_length"), int):
        settings["max_length"] = sentence_bert_config["max_seq_length"]
    return settings
