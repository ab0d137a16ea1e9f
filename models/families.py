"""Architecture families: which tasks each can do and how to export, quantize and validate it.

Adding a BERT-like family is one ``_register`` call below; ``tests/test_catalog.py``
proves every family only names known tasks and that model types are unique.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from edgeformers.models.dtypes import VARIANT_DTYPES
from edgeformers.models.errors import UnsupportedTaskError
from edgeformers.models.tasks import TASKS

ENCODER_TASKS: frozenset[str] = frozenset(
    {
        "text-classification",
        "feature-extraction",
        "zero-shot-classification",
        "fill-mask",
        "token-classification",
        "question-answering",
    }
)


@dataclass(frozen=True)
class Family:
    """What one architecture family needs.

    ``atol`` is the fp32 export tolerance against PyTorch: it belongs to the
    architecture (attention kernels and GELU approximations differ per family), not to
    one global number. ``subword_style`` tells the token-classification pipeline how
    word boundaries show in the vocabulary.

    ``dtypes`` are the variants the architecture can take besides fp32 (a request for
    another is refused before any work). ``optimizer_model_type`` is onnxruntime's
    transformer-fusion model type for ``--optimize`` (None: no fusions for this family).
    ``q4_8bit_nodes`` names (by node-name fragment) the MatMuls that q4 keeps at 8 bits:
    on all-MiniLM-L6-v2 the value and FFN-up projections carry most of 4-bit's error
    (pure q4: mean cosine 0.967; with those two at 8 bits: 0.989, still smaller than q8).
    """

    name: str
    model_types: tuple[str, ...]
    tasks: frozenset[str]
    atol: float = 5e-4
    subword_style: str = "wordpiece"  # "wordpiece" (##), "bpe" (byte-level Ġ) or "unigram" (▁)
    quantize_per_channel: bool = True  # encoders: per-tensor int8 costs MiniLM ~0.1 cosine
    quantize_reduce_range: bool = False
    dtypes: tuple[str, ...] = VARIANT_DTYPES
    optimizer_model_type: str | None = "bert"
    q4_8bit_nodes: tuple[str, ...] = ()


FAMILIES: dict[str, Family] = {}


def _register(family: Family) -> Family:
    for other in FAMILIES.values():
        clash = set(other.model_types) & set(family.model_types)
        if clash:
            raise ValueError(f"model types {sorted(clash)} registered twice")
    unknown = family.tasks - set(TASKS)
    if unknown:
        raise ValueError(f"family {family.name!r} names unknown tasks {sorted(unknown)}")
    FAMILIES[family.name] = family
    return family


_BERT_8BIT = ("/attention/self/value/", "/intermediate/dense/")
_register(Family("bert", ("bert",), ENCODER_TASKS, q4_8bit_nodes=_BERT_8BIT))
_register(Family("distilbert", ("distilbert",), ENCODER_TASKS, q4_8bit_nodes=("/attention/v_lin/", "/ffn/lin1/")))
_register(Family("roberta", ("roberta", "camembert", "xlm-roberta"), ENCODER_TASKS, subword_style="bpe",
                 q4_8bit_nodes=_BERT_8BIT))
_register(Family("deberta-v2", ("deberta-v2",), ENCODER_TASKS, atol=1e-3, subword_style="unigram",
                 q4_8bit_nodes=("/attention/self/value_proj/", "/intermediate/dense/")))
# ALBERT shares one set of weights across all layers, so 4-bit error compounds layer after
# layer: the tiny fixture keeps 0.35-0.53 of labels at q4 (block 32 or 16) where others keep 0.85+.
_register(Family("albert", ("albert",), ENCODER_TASKS, subword_style="unigram",
                 dtypes=tuple(d for d in VARIANT_DTYPES if d not in ("q4", "q4f16"))))
_register(Family("electra", ("electra",), ENCODER_TASKS, q4_8bit_nodes=_BERT_8BIT))
_register(Family("mpnet", ("mpnet",), ENCODER_TASKS, q4_8bit_nodes=("/attention/attn/v/", "/intermediate/dense/")))
# optimum-onnx 0.1.0 has no question-answering export for ModernBERT (tests/test_families.py).
_register(Family("modernbert", ("modernbert",), ENCODER_TASKS - {"question-answering"}, atol=1e-3,
                 subword_style="bpe", q4_8bit_nodes=("/attn/Wqkv/", "/mlp/Wi/")))


# Decoder-only generators: one graph with past key/values (optimum's text-generation-with-past).
# No onnxruntime fusions yet; q8 and q4 (MatMulNBits, block 32; q4f16 on top) are held to greedy-token
# agreement with fp32.
_DECODER_DTYPES = ("q8", "q4", "q4f16")
_register(Family("gpt2", ("gpt2",), frozenset({"text-generation"}), atol=1e-4, subword_style="bpe",
                 quantize_per_channel=False, dtypes=_DECODER_DTYPES, optimizer_model_type=None))
# Llama-style (grouped-query attention: fewer KV heads than query heads; RoPE; RMSNorm).
_register(Family("llama", ("llama",), frozenset({"text-generation"}), atol=1e-4,
                 subword_style="bpe", quantize_per_channel=False, dtypes=_DECODER_DTYPES,
                 optimizer_model_type=None))
# Qwen3: GQA with an explicit head_dim, RMSNorm on queries and keys (q_norm/k_norm), tied embeddings in the
# small checkpoints (Qwen3-0.6B/1.7B); optimum-onnx 0.1.0 exports it with past.
_register(Family("qwen3", ("qwen3",), frozenset({"text-generation"}), atol=1e-4, subword_style="bpe",
                 quantize_per_channel=False, dtypes=_DECODER_DTYPES, optimizer_model_type=None))


# Encoder-decoder generators: encoder_model + decoder_model_merged (optimum's
# text2text-generation-with-past, the decoder's first step and its cached steps in one graph
# behind use_cache_branch). Any of them runs all three seq2seq tasks, as in transformers.
SEQ2SEQ_TASKS: frozenset[str] = frozenset({"text2text-generation", "summarization", "translation"})
# q8 and q4 are tested inside the merged decoder's If branches (tests/test_seq2seq.py,
# tests/test_decoder_export.py); q4f16 is not offered until a test holds it there.
_SEQ2SEQ = dict(quantize_per_channel=False, dtypes=("q8", "q4"), optimizer_model_type=None)
_register(Family("bart", ("bart",), SEQ2SEQ_TASKS, atol=1e-4, subword_style="bpe", **_SEQ2SEQ))
# mBART-50 style: the target language code is the forced first token (forced_bos_token_id).
_register(Family("mbart", ("mbart",), SEQ2SEQ_TASKS, atol=1e-4, subword_style="unigram", **_SEQ2SEQ))
# T5: relative position buckets, no biases, task prefixes from config.json task_specific_params.
_register(Family("t5", ("t5",), SEQ2SEQ_TASKS, atol=1e-4, subword_style="unigram", **_SEQ2SEQ))
# Marian (opus-mt): sentencepiece vocabularies converted to tokenizer.json at export.
_register(Family("marian", ("marian",), SEQ2SEQ_TASKS, atol=1e-4, subword_style="unigram", **_SEQ2SEQ))

# Image models: one graph taking pixel_values (preprocessing: runtime/vision). Conv layers stay
# fp32 in q8 (the dynamic quantizer takes MatMul/Gemm/Gather), so no ConvInteger is needed.
IMAGE_CLASSIFICATION: frozenset[str] = frozenset({"image-classification"})
_VISION = dict(quantize_per_channel=True, dtypes=("q8",), optimizer_model_type=None)
_register(Family("vit", ("vit",), IMAGE_CLASSIFICATION, atol=1e-4, **_VISION))
_register(Family("deit", ("deit",), IMAGE_CLASSIFICATION, atol=1e-4, **_VISION))
_register(Family("convnext", ("convnext",), IMAGE_CLASSIFICATION, atol=1e-4, **_VISION))
# DETR with a transformers ResNet backbone (use_timm_backbone=False; timm checkpoints need timm).
_register(Family("detr", ("detr",), frozenset({"object-detection"}), atol=1e-4, **_VISION))
# VisionEncoderDecoder (ViT + GPT-2 style): an image encoder and a merged decoder caching its
# self-attention only (exporter/image_to_text.py); q8 held to greedy-token agreement.
_register(Family("vision-encoder-decoder", ("vision-encoder-decoder",), frozenset({"image-to-text"}), atol=1e-4,
                 quantize_per_channel=False, dtypes=("q8",), optimizer_model_type=None))

# Audio encoders on raw waveforms (input_values; preprocessing: runtime/audio): CTC speech recognition
# and sequence-classification heads. Per-channel and reduce-range int8 are known to hurt wav2vec2, so
# q8 is per-tensor without reduce-range; its conv front end stays fp32 (no ConvInteger needed).
AUDIO_ENCODER_TASKS: frozenset[str] = frozenset({"automatic-speech-recognition", "audio-classification"})
_AUDIO = dict(quantize_per_channel=False, quantize_reduce_range=False, dtypes=("q8", "fp16"),
              optimizer_model_type=None)
_register(Family("wav2vec2", ("wav2vec2",), AUDIO_ENCODER_TASKS, atol=1e-4, **_AUDIO))
_register(Family("hubert", ("hubert",), AUDIO_ENCODER_TASKS, atol=1e-4, **_AUDIO))
# AST: a ViT over Kaldi-style log-mel filter banks (runtime/audio/features.py ast_fbank); its patch
# embedding is a Conv2d, which q8 leaves fp32.
_register(Family("ast", ("audio-spectrogram-transformer",), frozenset({"audio-classification"}), atol=1e-4, **_AUDIO))
# Whisper: an encoder-decoder speech recognizer (exporter/whisper_export.py; runtime/pipelines/whisper.py).
# Its encoder differs from PyTorch by ~1e-3 (attention over 1500 frames, activations up to |10|). q8 quantizes
# the merged decoder inside its If-node subgraphs; per-channel and reduce-range are known to hurt Whisper.
_register(Family("whisper", ("whisper",), frozenset({"automatic-speech-recognition"}), atol=2e-3,
                 quantize_per_channel=False, quantize_reduce_range=False, dtypes=("q8",), optimizer_model_type=None))


def family_for(model_type: str) -> Family:
    for family in FAMILIES.values():
        if model_type in family.model_types:
            return family
    known = sorted(t for f in FAMILIES.values() for t in f.model_types)
    raise UnsupportedTaskError(
        f"architecture {model_type!r} is not in the catalog; supported model types: {', '.join(known)}"
    )


def check_supports(model_type: str, task: str) -> Family:
    """The family of ``model_type``, or a clear error if it cannot do ``task``."""
    family = family_for(model_type)
    if task not in family.tasks:
        raise UnsupportedTaskError(
            f"architecture {model_type!r} ({family.name} family) cannot do {task!r}; "
            f"it supports: {', '.join(sorted(family.tasks))}"
        )
    return family


def check_dtypes(family: Family, dtypes: Iterable[str]) -> None:
    """Refuse, before any work, variants this family cannot take, naming those it can."""
    refused = [d for d in dtypes if d != "fp32" and d not in family.dtypes]
    if refused:
        raise UnsupportedTaskError(
            f"dtype {', '.join(refused)} is not available for the {family.name} family "
            f"(model types {', '.join(family.model_types)}); it takes: fp32, {', '.join(family.dtypes)}"
        )
