"""Whisper's token rules in numpy and plain Python, as transformers 4.57 applies them.

- :class:`TimestampRules` is ``WhisperTimeStampLogitsProcessor``: timestamps come in pairs, never
  go backwards, the first token is a timestamp no later than ``max_initial_timestamp_index``,
  and a timestamp is forced when the timestamps' total probability beats every text token.
- :func:`segment_tokens` is what ``WhisperForConditionalGeneration.generate`` keeps of one
  window's new tokens (padding and the final EOS dropped; after the last timestamp pair only
  what ends in a timestamp).
- :func:`decode_asr` is ``WhisperTokenizer._decode_asr``, the pipeline's post-processing: chunks
  of long audio joined by their longest common token run (chunk strides), segment-level
  timestamps, the language of language tokens. Word-level timestamps are not done.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

NEG_INF = np.float32(-np.inf)
#: transformers' whisper LANGUAGES: code -> name, for the language tokens a multilingual model emits.
LANGUAGE_NAMES = {
    "en": "english", "zh": "chinese", "de": "german", "es": "spanish", "ru": "russian", "ko": "korean",
    "fr": "french", "ja": "japanese", "pt": "portuguese", "tr": "turkish", "pl": "polish", "ca": "catalan",
    "nl": "dutch", "ar": "arabic", "sv": "swedish", "it": "italian", "id": "indonesian", "hi": "hindi",
    "fi": "finnish", "vi": "vietnamese", "he": "hebrew", "uk": "ukrainian", "el": "greek", "ms": "malay",
    "cs": "czech", "ro": "romanian", "da": "danish", "hu": "hungarian", "ta": "tamil", "no": "norwegian",
    "th": "thai", "ur": "urdu", "hr": "croatian", "bg": "bulgarian", "lt": "lithuanian", "la": "latin",
    "mi": "maori", "ml": "malayalam", "cy": "welsh", "sk": "slovak", "te": "telugu", "fa": "persian",
    "lv": "latvian", "bn": "bengali", "sr": "serbian", "az": "azerbaijani", "sl": "slovenian", "kn": "kannada",
    "et": "estonian", "mk": "macedonian", "br": "breton", "eu": "basque", "is": "icelandic", "hy": "armenian",
    "ne": "nepali", "mn": "mongolian", "bs": "bosnian", "kk": "kazakh", "sq": "albanian", "sw": "swahili",
    "gl": "galician", "mr": "marathi", "pa": "punjabi", "si": "sinhala", "km": "khmer", "sn": "shona",
    "yo": "yoruba", "so": "somali", "af": "afrikaans", "oc": "occitan", "ka": "georgian", "be": "belarusian",
    "tg": "tajik", "sd": "sindhi", "gu": "gujarati", "am": "amharic", "yi": "yiddish", "lo": "lao",
    "uz": "uzbek", "fo": "faroese", "ht": "haitian creole", "ps": "pashto", "tk": "turkmen", "nn": "nynorsk",
    "mt": "maltese", "sa": "sanskrit", "lb": "luxembourgish", "my": "myanmar", "bo": "tibetan", "tl": "tagalog",
    "mg": "malagasy", "as": "assamese", "tt": "tatar", "haw": "hawaiian", "ln": "lingala", "ha": "hausa",
    "ba": "bashkir", "jw": "javanese", "su": "sundanese", "yue": "cantonese",
}


class TimestampRules:
    """``WhisperTimeStampLogitsProcessor(generation_config, begin_index)`` as a
    ``(sequences, scores) -> scores`` processor."""

    def __init__(self, no_timestamps_token_id: int, eos_token_id: int, begin_index: int,
                 max_initial_timestamp_index: int | None) -> None:
        self.no_timestamps = no_timestamps_token_id
        self.begin = no_timestamps_token_id + 1
        self.eos = eos_token_id
        self.begin_index = begin_index
        self.max_initial = max_initial_timestamp_index

    def __call__(self, sequences: np.ndarray, scores: np.ndarray) -> np.ndarray:
        scores = scores.copy()
        scores[:, self.no_timestamps] = NEG_INF
        begin = self.begin
        for k in range(sequences.shape[0]):
            seq = sequences[k, self.begin_index:].tolist()
            last = len(seq) >= 1 and seq[-1] >= begin
            penultimate = len(seq) < 2 or seq[-2] >= begin
            if last:
                if penultimate:  # a pair closed: text comes next
                    scores[k, begin:] = NEG_INF
                else:  # a lone timestamp: its pair, or EOS
                    scores[k, :self.eos] = NEG_INF
            stamps = [t for t in seq if t >= begin]
            if stamps:  # timestamps never go backwards
                scores[k, begin:stamps[-1] if last and not penultimate else stamps[-1] + 1] = NEG_INF
        if sequences.shape[1] == self.begin_index:
            scores[:, :begin] = NEG_INF
            if self.max_initial is not None:
                scores[:, begin + self.max_initial + 1:] = NEG_INF
        logprobs = _log_softmax(scores.astype(np.float32))
        for k in range(sequences.shape[0]):
            stamp_mass = _logsumexp(logprobs[k, begin:])
            if stamp_mass > logprobs[k, :begin].max():
                scores[k, :begin] = NEG_INF
        return scores


def _log_softmax(scores: np.ndarray) -> np.ndarray:
    top = scores.max(axis=-1, keepdims=True)
    shifted = scores - top
    with np.errstate(divide="ignore"):
        return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _logsumexp(values: np.ndarray) -> float:
    top = values.max()
    if not np.isfinite(top):
        return float(top)
    return float(top + np.log(np.exp(values - top).sum()))


def segment_tokens(new_tokens: list[int], eos_token_id: int, pad_token_id: int, timestamp_begin: int) -> list[int]:
    """The tokens transformers' Whisper generate returns for one 30 s window from the tokens
    generated after the prompt: trailing padding and the EOS dropped, then the window cut
    into timestamp segments and joined again (text after the last timestamp pair that does
    not end in a timestamp is dropped, as ``_retrieve_segment`` drops it)."""
    seq = list(new_tokens)
    while len(seq) > 1 and seq[-1] == pad_token_id and seq[-2] == pad_token_id:
        seq.pop()
    if seq and seq[-1] == eos_token_id:
        seq.pop()
    stamps = [t >= timestamp_begin for t in seq]
    pairs = [i + 1 for i in range(len(seq) - 1) if stamps[i] and stamps[i + 1]]
    if not pairs:
        return seq
    single_ending = stamps[-2:] == [False, True]
    end = len(seq) if single_ending else pairs[-1] + 1
    return seq[:end]


def longest_common_sequence(sequences: list[list[int]]) -> list[int]:
    """transformers' whisper ``_find_longest_common_sequence`` (no token timestamps): each
    next chunk's tokens overlap the previous ones at the best-matching offset, and the two
    are cut in the middle of that overlap."""
    left = list(sequences[0])
    total: list[int] = []
    for right in sequences[1:]:
        best, indices = 0.0, (len(left), len(left), 0, 0)
        left_length, right_length = len(left), len(right)
        for i in range(1, left_length + right_length):
            eps = i / 10000.0
            left_start, left_stop = max(0, left_length - i), min(left_length, left_length + right_length - i)
            right_start, right_stop = max(0, i - left_length), min(right_length, i)
            matches = int(np.sum(np.array(left[left_start:left_stop]) == np.array(right[right_start:right_stop])))
            matching = matches / i + eps
            if matches > 1 and matching > best:
                best, indices = matching, (left_start, left_stop, right_start, right_stop)
        left_start, left_stop, right_start, right_stop = indices
        total.extend(left[:(left_stop + left_start) // 2])
        left = list(right[(right_stop + right_start) // 2:])
    total.extend(left)
    return total


def decode_asr(outputs: list[dict[str, Any]], decode: Callable[[list[int]], str], special_ids: set[int],
               token_text: Callable[[int], str], timestamp_begin: int, prompt_id: int | None, start_id: int | None,
               return_timestamps: bool, return_language: bool, time_precision: float,
               segment_size: int = 1500) -> tuple[str, dict[str, Any]]:
    """``WhisperTokenizer._decode_asr``: ``outputs`` are the windows in order, each
    ``{"tokens": [...], "stride": (chunk_s, left_s, right_s)}`` (stride only when chunking,
    in seconds). Returns (text, {"chunks": [...]} or {})."""
    last_language = None

    def new_chunk() -> dict[str, Any]:
        return {"language": last_language, "timestamp": [None, None], "text": ""}

    chunks: list[dict[str, Any]] = []
    chunk = new_chunk()
    time_offset = 0.0
    previous: list[list[int]] = []
    skip = False
    for output in outputs:
        tokens = _strip_prompt(list(output["tokens"]), prompt_id, start_id)
        last_timestamp = None
        first_timestamp = timestamp_begin
        cur_max = prev_segments_len = penultimate_ts = 0.0
        if "stride" in output:
            chunk_len, stride_left, stride_right = output["stride"]
            time_offset -= stride_left
            right_stride_start = chunk_len - stride_right
            if stride_left:
                first_timestamp = stride_left / time_precision + timestamp_begin
            if stride_right:
                for token in reversed(tokens):
                    if token >= timestamp_begin:
                        if last_timestamp is not None and (token - timestamp_begin) * time_precision < right_stride_start:
                            break
                        last_timestamp = token
        current: list[int] = []
        for i, token in enumerate(tokens):
            if token in special_ids:
                language = LANGUAGE_NAMES.get(token_text(token)[2:-2])
                if language is not None:
                    if last_language and language != last_language and not return_timestamps:
                        previous.append(current)
                        chunk["text"] = decode(longest_common_sequence(previous))
                        chunks.append(chunk)
                        previous, current = [], []
                        chunk = new_chunk()
                    chunk["language"] = language
                    last_language = language
            elif token >= timestamp_begin:
                timestamp = float((token - timestamp_begin) * time_precision)
                if timestamp < cur_max:
                    single_ending = i >= 2 and not (tokens[i - 1] >= timestamp_begin and tokens[i - 2] >= timestamp_begin)
                    if single_ending:
                        prev_segments_len += time_precision * segment_size
                    else:
                        cur_max = penultimate_ts
                        prev_segments_len += penultimate_ts
                penultimate_ts, cur_max = cur_max, timestamp
                time = round((token - timestamp_begin) * time_precision + time_offset + prev_segments_len, 2)
                if last_timestamp and token >= last_timestamp:
                    skip = True
                elif skip or (previous and token < first_timestamp):
                    skip = False
                elif chunk["timestamp"][0] is None:
                    chunk["timestamp"][0] = time
                elif time != chunk["timestamp"][0]:
                    chunk["timestamp"][1] = time
                    previous.append(current)
                    chunk["text"] = decode(longest_common_sequence(previous))
                    chunks.append(chunk)
                    previous, current = [], []
                    chunk = new_chunk()
            else:
                current.append(token)
        if "stride" in output:
            time_offset += chunk_len - stride_right
        if current:
            previous.append(current)
        elif not any(p for p in previous):
            chunk = new_chunk()
            previous = []
    if previous:
        chunk["text"] = decode(longest_common_sequence(previous))
        chunks.append(chunk)
    text = "".join(c["text"] for c in chunks)
    if not (return_timestamps or return_language):
        return text, {}
    for c in chunks:
        if return_timestamps:
            c["timestamp"] = tuple(c["timestamp"])
        else:
            c.pop("timestamp")
        if not return_language:
            c.pop("language")
    return text, {"chunks": chunks}


def _strip_prompt(tokens: list[int], prompt_id: int | None, start_id: int | None) -> list[int]:
    """``WhisperTokenizer._strip_prompt``: drop a ``<|startofprev|>`` prompt up to the start token."""
    if not tokens or prompt_id is None or tokens[0] != prompt_id:
        return tokens
    if start_id in tokens:
        return tokens[tokens.index(start_id):]
    return []
