"""How far a variant (q8, fp16 …) may move from the fp32 export before it is refused.

Each task compares a variant's answers with fp32's by the metric its pipeline's answer
is made of, on the exporter's validation set (``exporter/agreement.py``, ~40 varied
inputs, so one changed answer costs 2.5 points, not 17). A variant below its task's
threshold fails ``export``/``quantize``/``validate``; ``--allow-degraded`` keeps it,
marked as such in the manifest.

Why these numbers (``.venv/bin/python scripts/measure_agreement.py [--minilm]`` prints
the figures; q8 unless said). They are the bar for real, trained checkpoints, the ones
users export; a user may set another with ``--min-agreement`` (recorded in the manifest):

- Embeddings, min cosine 0.95: the real all-MiniLM-L6-v2 keeps 0.960 over the set (short
  texts such as "I love this." are the lowest; mean 0.985; fp16 1.0000); per-tensor int8,
  the known-bad setting for encoders, drops it to 0.81; scrambled weights far lower.
- Labels 0.90, spans 0.80, entities 0.80, top-1 masked token 0.75: published dynamic-int8
  results on trained encoders lose about one point of accuracy/F1/EM, so in-domain
  agreement sits near 0.97-0.99. The validation set is deliberately out of domain for
  most models (code, CJK, "ok"), where a classifier's answer is a near-tie that int8 may
  flip, so the bars leave room for 4 flips in 40 labels, and more for spans, entities and
  masked tokens, which have more near-ties per input. A broken variant lands at chance
  (labels ~0.33-0.5, spans and entities ~0-0.2, masked tokens ~0). No trained classifier,
  QA, NER or MLM checkpoint is installable offline here, so these four bars are reasoned,
  not yet measured on a real model of each task.
- Tiny random-weight test checkpoints have no confident answers: every near-tie flips
  under int8 (labels 0.70-1.0, spans 0.675-0.90, entities 0.65-0.87, top-1 0.50-0.875
  across the eight families). The test suite exports them with an explicit
  ``--min-agreement`` (tests/fixtures/floors.py), never by lowering these bars.
- Characters 0.90 (CTC speech recognition): dynamic int8 on trained wav2vec2 models moves
  word error rates by well under a point when per-channel and reduce-range are off (the
  catalog turns both off for the family), i.e. ~1-2% of characters; a broken variant
  produces another transcript altogether (~0). Reasoned, not yet measured on a trained
  CTC model (none is installable offline here); audio labels take the label bar.
- fp16 keeps 0.95-1.0 on every metric and family.
- Greedy tokens 0.85 (text-generation): each validation prompt is continued greedily for
  a fixed number of tokens by fp32 and by the variant; the figure is the share of
  positions, up to and including the first difference in each row, that agree (after a
  difference the two continuations condition on different text, so later tokens say
  nothing about the variant). Published int8 decoders keep their greedy text for most of a
  short continuation; a broken variant diverges at the first token (~0). Reasoned, not yet
  measured on a trained decoder (none is installable offline here).
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
GREEDY_TOKEN_AGREEMENT = "greedy_token_agreement"
QUERY_LABEL_AGREEMENT = "query_label_agreement"
CHARACTER_AGREEMENT = "character_agreement"

_LABELS = AgreementRule(
    LABEL_AGREEMENT, 0.90,
    "share of inputs whose top label (argmax of the logits) is the same as fp32's",
)

#: task -> rule. Read-only: the catalog is data, not a registry to patch at run time.
AGREEMENT_RULES: MappingProxyType[str, AgreementRule] = MappingProxyType({
    "text-classification": _LABELS,
    "zero-shot-classification": _LABELS,
    "question-answering": AgreementRule(
        SPAN_AGREEMENT, 0.80,
        "share of question/context pairs whose best answer span is the same as fp32's: the "
        "(start, end) over context tokens maximising start + end logits with end >= start and "
        "at most 15 tokens, as the question-answering pipeline chooses it",
    ),
    "token-classification": AgreementRule(
        ENTITY_AGREEMENT, 0.80,
        "entity spans (argmax labels over real tokens, grouped B-/I- as aggregation_strategy="
        "'simple' groups them, 'O' dropped): spans identical to fp32's (same tokens and type) "
        "divided by max(fp32's count, variant's count), summed over all inputs",
    ),
    "fill-mask": AgreementRule(
        TOP1_TOKEN_AGREEMENT, 0.75,
        "share of mask positions (all real token positions if the inputs hold no mask) whose "
        "top-1 token is the same as fp32's",
    ),
    "text-generation": AgreementRule(
        GREEDY_TOKEN_AGREEMENT, 0.85,
        "greedy continuations of the validation prompts (8 new tokens each, no EOS stop) by fp32 "
        "and the variant: positions that agree, counted up to and including each row's first "
        "difference, divided by the positions so counted",
    ),
    **{task: AgreementRule(
        GREEDY_TOKEN_AGREEMENT, 0.85,
        "greedy decoder continuations of the validation texts (8 new tokens each from the decoder start "
        "token, no EOS stop) by fp32 and the variant (encoder and decoder both of that variant): positions "
        "that agree, counted up to and including each row's first difference, divided by the positions "
        "so counted",
    ) for task in ("text2text-generation", "summarization", "translation")},
    "image-classification": _LABELS,
    "audio-classification": _LABELS,
    "automatic-speech-recognition": AgreementRule(
        CHARACTER_AGREEMENT, 0.90,
        "CTC models: one minus the character error rate of the variant's greedy transcripts (per-frame "
        "argmax, repeats collapsed, blanks dropped) against fp32's, over synthetic validation clips",
    ),
    "image-to-text": AgreementRule(
        GREEDY_TOKEN_AGREEMENT, 0.85,
        "greedy captions of 16 synthetic images (8 new tokens each from the decoder start token, no EOS stop) by "
        "fp32 and the variant (encoder and decoder both of that variant): positions that agree, counted up to "
        "and including each row's first difference",
    ),
    "object-detection": AgreementRule(
        QUERY_LABEL_AGREEMENT, 0.90,
        "share of (image, query) pairs of the synthetic validation images whose top class (argmax of the "
        "logits, the no-object class included) is the same as fp32's; the largest box difference is "
        "reported beside it",
    ),
    "feature-extraction": AgreementRule(
        MIN_COSINE, 0.95,
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
