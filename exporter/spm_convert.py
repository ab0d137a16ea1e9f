"""sentencepiece models re-expressed as ``tokenizers`` objects numbered by a vocab.json.

Marian and M2M100 keep two numberings: a sentencepiece model cuts text into pieces and a
separate ``vocab.json`` turns each piece *string* into the model's id (a string missing from
vocab.json becomes ``<unk>``). transformers has no fast tokenizer for either, and the
runtime reads only ``tokenizer.json``, so this module builds one: a ``tokenizers`` Unigram
whose i-th entry is vocab.json's id i, scored with the sentencepiece model's log
probabilities so that the Viterbi segmentation is the one sentencepiece finds.

Entries of vocab.json that the sentencepiece model does not know (the other language's
pieces of a shared Marian vocabulary, language codes, ``<pad>``) must never win over the
model's own pieces, yet a single unknown character that happens to be such an entry is
given its id by the slow tokenizer (it looks the unknown surface up in vocab.json). They
get a score of ``-_FILL`` per character plus a small bonus per extra character: any path
that covers a character with a real piece beats them, and a longer such entry beats its
own parts. What this cannot express (a run of several unknown characters that is not
itself a vocab.json entry: one ``<unk>`` for the slow tokenizer, one id per part) is
done by the normalizer instead: it replaces such a run by one character that no entry
holds, which the Unigram turns into ``<unk>``. Whatever else differs is caught by the
token-for-token check in exporter/tokenizer_convert.py, which fails the export rather than
ship a tokenizer that disagrees.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeformers.models.errors import ExportError

# sentencepiece ModelProto.SentencePiece.Type
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6
_UNIGRAM, _BPE = 1, 2
_FILL = 1e4  # per character, far below any real piece's log probability (about -20 at worst)
_SPACE = "\u2581"  # sentencepiece's whitespace marker


def read_spm(path: str | Path) -> Any:
    """The sentencepiece ModelProto of ``path``, refused unless it is a plain unigram or BPE
    model (byte fallback and whitespace-as-suffix are not converted here)."""
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    try:
        proto.ParseFromString(Path(path).read_bytes())
    except Exception as err:
        raise ExportError(f"{path}: not a readable sentencepiece model: {err}") from err
    trainer = proto.trainer_spec
    if trainer.model_type not in (_UNIGRAM, _BPE):
        raise ExportError(f"{path}: sentencepiece model type {trainer.model_type} is neither unigram (1) nor "
                          "BPE (2); only those are converted to tokenizer.json")
    if trainer.byte_fallback or trainer.treat_whitespace_as_suffix:
        raise ExportError(f"{path}: sentencepiece byte_fallback / treat_whitespace_as_suffix are not supported")
    return proto


def unigram_over_vocab(proto: Any, vocab: dict[str, int], unk_token: str, source: str) -> Any:
    """A Tokenizer segmenting like ``proto`` whose ids are ``vocab``'s ids (see the module doc;
    a BPE ``proto`` goes to :func:`_bpe_over_vocab`)."""
    from tokenizers import Tokenizer
    from tokenizers.models import Unigram

    ids = sorted(vocab.values())
    if ids != list(range(len(ids))):
        raise ExportError(f"{source}: its ids are not 0..{len(ids) - 1} without gaps; cannot number a tokenizer by it")
    if unk_token not in vocab:
        raise ExportError(f"{source}: the unknown token {unk_token!r} is not in it")
    if proto.trainer_spec.model_type == _BPE:
        return _bpe_over_vocab(proto, vocab, unk_token)
    scores = {p.piece: p.score for p in proto.pieces if p.type == _NORMAL}
    entries: list[tuple[str, float]] = [("", 0.0)] * len(ids)
    for piece, index in vocab.items():
        score = scores.get(piece)
        if score is None:
            score = -_FILL * len(piece) + (len(piece) - 1)
        entries[index] = (piece, float(score))
    tokenizer = Tokenizer(Unigram(entries, unk_id=vocab[unk_token], byte_fallback=False))
    tokenizer.normalizer = _normalizer(proto.normalizer_spec, _unknown_runs(proto, vocab))
    _set_metaspace(tokenizer, proto)
    return tokenizer


def _bpe_over_vocab(proto: Any, vocab: dict[str, int], unk_token: str) -> Any:
    """A BPE Tokenizer numbered by ``vocab``: sentencepiece's BPE merges the adjacent pair whose
    joined piece scores highest, so every two-way split of a piece into pieces becomes a
    merge ranked by that piece's score. A run of unknown characters is one ``<unk>``, as for
    the unigram model; a single one found in vocab.json keeps its id there."""
    from tokenizers import Tokenizer
    from tokenizers.models import BPE

    spm_ids = {p.piece: i for i, p in enumerate(proto.pieces) if p.type in (_NORMAL, _USER_DEFINED)}
    scores = {p.piece: p.score for p in proto.pieces if p.type in (_NORMAL, _USER_DEFINED)}
    merges = []
    for piece, score in scores.items():
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in spm_ids and right in spm_ids and {piece, left, right} <= vocab.keys():
                merges.append((-score, spm_ids[piece], spm_ids[left], spm_ids[right], left, right))
    ordered = [(left, right) for *_, left, right in sorted(merges)]
    tokenizer = Tokenizer(BPE(dict(vocab), ordered, unk_token=unk_token, fuse_unk=True, byte_fallback=False))
    tokenizer.normalizer = _normalizer(proto.normalizer_spec, _unknown_runs(proto, vocab))
    _set_metaspace(tokenizer, proto)
    return tokenizer


def _normalizer(spec: Any, unknown_runs: Any) -> Any:
    """sentencepiece's normalization: its precompiled character map (nmt_nfkc ...), then, with
    remove_extra_whitespaces, no leading/trailing spaces and one space between words; last,
    runs of unknown characters collapsed (:func:`_unknown_runs`)."""
    from tokenizers import Regex, normalizers

    steps = []
    if spec.precompiled_charsmap:
        steps.append(normalizers.Precompiled(spec.precompiled_charsmap))
    if spec.remove_extra_whitespaces:
        steps.append(normalizers.Replace(Regex("^ +| +$"), ""))
        steps.append(normalizers.Replace(Regex(" {2,}"), " "))
    if unknown_runs is not None:
        steps.append(unknown_runs)
    return normalizers.Sequence(steps)


def _unknown_runs(proto: Any, vocab: dict[str, int]) -> Any:
    """A normalizer step replacing each run of two or more characters that ``proto`` has no
    piece for (sentencepiece merges such a run into one unknown piece, which the slow
    tokenizer looks up in vocab.json as a whole) by one character absent from ``vocab``,
    so the Unigram gives it one ``<unk>``; a run that is itself a vocab.json entry is kept
    and matched whole. None when every character of vocab.json is known to ``proto``."""
    from tokenizers import Regex, normalizers

    known = {p.piece for p in proto.pieces if p.type in (_NORMAL, _USER_DEFINED) and len(p.piece) == 1}
    known |= {" ", _SPACE}
    used = {char for piece in vocab for char in piece}
    if used <= known:
        return None
    marker = next(chr(c) for c in range(0xE000, 0xF900) if chr(c) not in used)
    unknown = "[^" + "".join(_escape(c) for c in sorted(known)) + "]"
    whole = sorted((p for p in vocab if len(p) > 1 and not set(p) & known), key=len, reverse=True)
    keep = ""
    if whole:
        alternatives = "|".join("".join(_escape(c) for c in p) for p in whole)
        keep = f"(?!(?:{alternatives})(?!{unknown}))"
    return normalizers.Replace(Regex(f"(?<!{unknown}){keep}{unknown}{{2,}}"), marker)


def _escape(char: str) -> str:
    return f"\\x{{{ord(char):x}}}"


def _set_metaspace(tokenizer: Any, proto: Any) -> None:
    """Spaces become ``▁`` with a dummy prefix on every text segment, as sentencepiece encodes
    each segment between special tokens separately; the decoder undoes it."""
    from tokenizers import decoders, pre_tokenizers

    scheme = "always" if proto.normalizer_spec.add_dummy_prefix else "never"
    split = bool(proto.trainer_spec.split_by_whitespace)
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement=_SPACE, prepend_scheme=scheme, split=split)
    tokenizer.decoder = decoders.Metaspace(replacement=_SPACE, prepend_scheme=scheme, split=split)


def add_tokens(tokenizer: Any, tokens: list[tuple[int, str, bool]], source: str) -> None:
    """Add (id, text, special) tokens matched before normalization, as the slow tokenizer splits
    them out of the text first; each must land on the id the slow tokenizer gives it."""
    from tokenizers import AddedToken

    for token_id, text, special in sorted(tokens):
        added = AddedToken(text, special=special, normalized=False)
        if special:
            tokenizer.add_special_tokens([added])
        else:
            tokenizer.add_tokens([added])
        if tokenizer.token_to_id(text) != token_id:
            raise ExportError(f"{source}: token {text!r} has id {token_id} in the slow tokenizer but "
                              f"{tokenizer.token_to_id(text)} in tokenizer.json (ids are not contiguous)")


def suffix_processor(prefix: list[tuple[str, int]], eos: tuple[str, int]) -> Any:
    """``prefix $A eos`` for one text and ``prefix $A $B eos`` for a pair (Marian: no prefix;
    M2M100: the source language token)."""
    from tokenizers import processors

    head = " ".join(f"{text}:0" for text, _ in prefix)
    single = f"{head} $A:0 {eos[0]}:0".strip()
    pair = f"{head} $A:0 $B:0 {eos[0]}:0".strip()
    return processors.TemplateProcessing(single=single, pair=pair, special_tokens=sorted({*prefix, eos}))


def marian_tokenizers(slow: Any) -> dict[str, Any]:
    """``{"tokenizer.json": tokenizer}`` for a MarianTokenizer with one shared vocab.json.

    Encoding: the source sentencepiece model numbered by vocab.json, specials split out
    first, language codes (``>>fr<<``) kept whole, ``</s>`` appended. Decoding target ids
    needs only the id -> piece table, which is the same vocab.json (MarianTokenizer's
    ``decode`` then strips the text: models.processing.decode_strips). Separate source and
    target vocabularies are refused: transformers' MarianTokenizer skips the *source*
    vocabulary's special ids when it decodes target ids, so there is no sound reference
    to check a target tokenizer against."""
    if slow.separate_vocabs:
        raise ExportError("this Marian checkpoint has separate source and target vocabularies (target_vocab.json); "
                          "transformers decodes its target ids with the source vocabulary's special ids, so "
                          "edgeformers cannot write and check a tokenizer.json for it")
    source = unigram_over_vocab(read_spm(slow.spm_files[0]), slow.encoder, str(slow.unk_token), "Marian vocab.json")
    _add_marian_tokens(source, slow, slow.encoder)
    return {"tokenizer.json": source}


def _add_marian_tokens(tokenizer: Any, slow: Any, vocab: dict[str, int]) -> None:
    specials = {str(t) for t in slow.all_special_tokens}
    tokens = [(vocab[t], t, True) for t in specials if t in vocab]
    codes = [t for t in vocab if t.startswith(">>") and t.endswith("<<") and t not in specials]
    tokens += [(vocab[t], t, False) for t in codes]
    add_tokens(tokenizer, tokens, "Marian vocab.json")
    eos = str(slow.eos_token)
    tokenizer.post_processor = suffix_processor([], (eos, vocab[eos]))


def m2m100_tokenizer(slow: Any) -> dict[str, Any]:
    """``{"tokenizer.json": ...}`` for an M2M100Tokenizer: its sentencepiece model numbered by
    vocab.json, the language tokens ``__xx__`` after it, and ``__src__ $A </s>`` around
    each text for the tokenizer's current ``src_lang`` (the runtime swaps the prefix per
    call, as transformers' ``src_lang`` setter does)."""
    vocab = dict(slow.encoder)
    tokenizer = unigram_over_vocab(read_spm(slow.spm_file), vocab, str(slow.unk_token), "M2M100 vocab.json")
    specials = {str(t) for t in slow.all_special_tokens}
    tokens = [(vocab[t], t, True) for t in specials if t in vocab]
    tokens += [(int(i), str(t), str(t) in specials) for t, i in slow.lang_token_to_id.items()]
    add_tokens(tokenizer, tokens, "M2M100 vocab.json")
    prefix = [(slow.convert_ids_to_tokens(i), i) for i in slow.prefix_tokens]
    suffix = [(slow.convert_ids_to_tokens(i), i) for i in slow.suffix_tokens]
    if len(suffix) != 1:
        raise ExportError(f"M2M100 tokenizer appends {suffix}; expected one end-of-sequence token")
    tokenizer.post_processor = suffix_processor(prefix, suffix[0])
    return {"tokenizer.json": tokenizer}
