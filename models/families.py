"""Architecture families: which tasks each can do and how to export, quantize and validate it.

Adding a BERT-like family is one ``_register`` call below; ``tests/test_catalog.py``
proves every family only names known tasks and that model types are unique.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    """

    name: str
    model_types: tuple[str, ...]
    tasks: frozenset[str]
    atol: float = 5e-4
    subword_style: str = "wordpiece"  # "wordpiece" (##), "bpe" (byte-level Ġ) or "unigram" (▁)
    quantize_per_channel: bool = True  # encoders: per-tensor int8 costs MiniLM ~0.1 cosine
    quantize_reduce_range: bool = False


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


_register(Family("bert", ("bert",), ENCODER_TASKS))
_register(Family("distilbert", ("distilbert",), ENCODER_TASKS))
_register(Family("roberta", ("roberta", "camembert", "xlm-roberta"), ENCODER_TASKS, subword_style="bpe"))
_register(Family("deberta-v2", ("deberta-v2",), ENCODER_TASKS, atol=1e-3, subword_style="unigram"))
_register(Family("albert", ("albert",), ENCODER_TASKS, subword_style="unigram"))
_register(Family("electra", ("electra",), ENCODER_TASKS))
_register(Family("mpnet", ("mpnet",), ENCODER_TASKS))
# optimum-onnx 0.1.0 has no question-answering export for ModernBERT (tests/test_families.py).
_register(Family("modernbert", ("modernbert",), ENCODER_TASKS - {"question-answering"}, atol=1e-3,
                 subword_style="bpe"))


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
