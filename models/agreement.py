"""How far a variant (q8, fp16 …) may move from the fp32 export before it is refused.

Each task compares a variant's answers with fp32's by the metric its pipeline's answer
is made of, on the exporter's validation set (``exporter/agreement.py``, ~40 varied
inputs, so one changed answer costs 2.5 points, not 17). A variant below its task's
threshold fails ``export``/``quantize``/``validate``; ``--allow-degraded`` keeps it,
marked as such in the manifest.

Why these numbers (``.venv/bin/python scripts/measure_agreement.py [--minilm]`` prints
the figures; q8 unless said):

- Embeddings, 0.90: the real all-MiniLM-L6-v2 keeps a min pooled cosine of 0.960 over the
  set (short texts such as "I love this." are the lowest; mean 0.985; fp16 1.0000);
  per-tensor int8, the known-bad setting for encoders, drops it to 0.81, scrambled
  weights far lower. The tiny fixtures measure 0.91 (modernbert) to 0.98 (bert).
- Labels 0.60, spans 0.50, entities 0.50, top-1 token 0.35: PROVISIONAL floors. They are
  set by what breaks, not by what a good real model keeps: a scrambled variant lands at
  chance (labels ~0.33-0.5 with 2-3 labels, spans and entities ~0-0.2, masked tokens ~0).
  A trained model's q8 is expected at 0.97+ on in-domain text (published dynamic-int8
  results lose ~1 point of accuracy/F1/EM), but no trained classifier, QA, NER or MLM
  checkpoint is available offline to measure one, and the tiny random fixtures — whose
  heads have no confident answers, so every near-tie flips under int8 — measure only
  0.70-1.0 (labels), 0.675-0.90 (spans), 0.65-0.87 (entities) and 0.50-0.875 (top-1) on
  the eight families, varying by seed. Raising these floors to real-model values needs
  fixtures with confident (trained) heads first.
- fp16 keeps 0.95-1.0 on every metric and family.
- Greedy-token agreement for generators (the generation issue) shares the structure: a
  metric name here, a threshold, and a function in ``exporter/agreement.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

from edgeformers.models.errors import UnsupportedTaskError
from edgeformers.models.tasks import TASKS, resolve_task


@dataclass(frozen=True)
class AgreementRule:
    """The metric one task's variants are held to and the lowest value that passes.

    ``metric`` names the figure in the manifest's validation report (higher is better,
    at most 1.0); ``description`` says in words how it is computed.
    """

    metric: str
    threshold: float
    description: str


LABEL_AGREEMENT = "label_agreement"
SPAN_AGREEMENT = "span_agreement"
ENTITY_AGREEMENT = "entity_agreement"
TOP1_TOKEN_AGREEMENT = "top1_token_agreement"
MIN_COSINE = "min_cosine"
GREEDY_TOKEN_AGREEMENT = "greedy_token_agreement"  # for generators: reserved, no task uses it yet

_LABELS = AgreementRule(
    LABEL_AGREEMENT, 0.60,
    "share of inputs whose top label (argmax of the logits) is the same as fp32's",
)

#: task -> rule. Read-only: the catalog is data, not a registry to patch at run time.
AGREEMENT_RULES: MappingProxyType[str, AgreementRule] = MappingProxyType({
    "text-classification": _LABELS,
    "zero-shot-classification": _LABELS,
    "question-answering": AgreementRule(
        SPAN_AGREEMENT, 0.50,
        "share of question/context pairs whose best answer span is the same as fp32's: the "
        "(start, end) over context tokens maximising start + end logits with end >= start and "
        "at most 15 tokens, as the question-answering pipeline chooses it",
    ),
    "token-classification": AgreementRule(
        ENTITY_AGREEMENT, 0.50,
        "entity spans (argmax labels over real tokens, grouped B-/I- as aggregation_strategy="
        "'simple' groups them, 'O' dropped): spans identical to fp32's (same tokens and type) "
        "divided by max(fp32's count, variant's count), summed over all inputs",
    ),
    "fill-mask": AgreementRule(
        TOP1_TOKEN_AGREEMENT, 0.35,
        "share of mask positions (all real token positions if the inputs hold no mask) whose "
        "top-1 token is the same as fp32's",
    ),
    "feature-extraction": AgreementRule(
        MIN_COSINE, 0.90,
        "lowest cosine between fp32's and the variant's embeddings, mean-pooled over the "
        "attention mask, over all inputs",
    ),
})


def agreement_rule(task: str) -> AgreementRule:
    """The rule for ``task`` (a name or alias)."""
    name = resolve_task(task).name
    try:
        return AGREEMENT_RULES[name]
    except KeyError:
        raise UnsupportedTaskError(
            f"task {name!r} has no agreement threshold in the catalog (models/agreement.py); "
            f"tasks with one: {', '.join(AGREEMENT_RULES)}"
        ) from None


def _check_complete() -> None:
    missing = set(TASKS) - set(AGREEMENT_RULES)
    if missing:
        raise ValueError(f"tasks without an agreement rule: {sorted(missing)}")


_check_complete()
