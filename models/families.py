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
# No onnxruntime fusions yet; q8 is held to greedy-token agreement with fp32.
_DECODER_DTYPES = ("q8",)
_register(Family("gpt2", ("gpt2",), frozenset({"text-generation"}), atol=1e-4, subword_style="bpe",
                 quantize_per_channel=False, dtypes=_DECODER_DTYPES, optimizer_model_type=None))
# Llama-style (grouped-query attention: fewer KV heads than query heads; RoPE; RMSNorm).
_register(Family("llama", ("llama",), frozenset({"text-generation"}), atol=1e-4,
                 subword_style="bpe", quantize_per_channel=False, dtypes=_DECODER_DTYPES,
                 optimizer_model_type=None))


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
