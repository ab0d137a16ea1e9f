"""Task-level agreement of a variant (q8, fp16 …) with the fp32 graph, held to the
catalog's threshold for the task (``edgeformers.models.agreement``).

The validation set is ~40 fixed, varied texts (short, long, accented, CJK, emoji, other
scripts, names and places) shaped for the task: single texts for classifiers and
embeddings, NLI pairs for zero-shot, question/context pairs for QA, texts with the
model's mask token for fill-mask. Large enough that one changed answer is 2.5 points,
small enough that a tiny model checks in well under a second. Inputs run in padded
batches of 8, as the runtime's pipelines run them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeformers.exporter import audio_inputs
from edgeformers.exporter.validate import VALIDATION_TEXTS
from edgeformers.exporter.vision_inputs import VISION_TASKS, agreement_feeds
from edgeformers.models.agreement import (
    CHARACTER_AGREEMENT,
    ENTITY_AGREEMENT,
    GREEDY_TOKEN_AGREEMENT,
    LABEL_AGREEMENT,
    MIN_COSINE,
    QUERY_LABEL_AGREEMENT,
    SPAN_AGREEMENT,
    TOP1_TOKEN_AGREEMENT,
    AgreementRule,
    agreement_rule,
)
from edgeformers.models.errors import InputError, ValidationError

logger = logging.getLogger(__name__)

#: New tokens per prompt in the greedy-token check (text-generation).
GREEDY_NEW_TOKENS = 8

AGREEMENT_TEXTS: tuple[str, ...] = (
    *VALIDATION_TEXTS,  # the fp32-vs-PyTorch texts first, then ~35 more
    "My name is Wolfgang and I live in Berlin.",
    "Hugging Face Inc. is based in New York City; Sarah Connor works there.",
    "The service was slow and rude, but the food was excellent.",
    "Absolutely fantastic!",
    "ok",
    "What a wonderful day 🌞🎉",
    "The book is boring and far too long.",
    "Angela Merkel met Emmanuel Macron in Paris on Tuesday.",
    "Ünïcödé Straße, São Paulo, Kraków and Reykjavík.",
    "I would not recommend it to anyone.",
    "The product works well, nothing special.",
    "北京和上海是中国最大的城市。",
    "서울은 한국의 수도입니다.",
    "Привет, как дела? Всё хорошо.",
    "The meeting is at 10:30 on 2024-03-15, room 4B.",
    "def f(x): return x ** 2  # square",
    "WHY IS EVERYTHING IN CAPITALS?!",
    "the cat likes the red ball every day!",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby across the street.",
    "Apple released a new phone in California last September.",
    "Email me at jane.doe@example.com or call +1 555 0100.",
    "It's not bad... actually, it's pretty good.",
    "The stock fell 3.5% after the earnings report from Microsoft.",
    "😀😃😄😁",
    "Barack Obama was born in Hawaii and studied at Harvard.",
    "The river flows quietly past the old mill in the morning.",
    " ".join(["the movie was long but the ending made up for it."] * 6),
    "Dr. Smith arrived late; the patients were not amused.",
    "Ich habe keine Zeit, aber das Essen war gut.",
    "La vie est belle à Montréal en été.",
    "¿Dónde está la biblioteca? ¡No lo sé!",
    "   leading and trailing spaces   ",
    "Tokyo, Osaka and Kyoto are cities in Japan.",
    "مرحبا بالعالم، كيف حالك؟",
)
# Questions for QA pairs (each text is a context) and labels for zero-shot NLI pairs,
# taken in turn.
QUESTIONS: tuple[str, ...] = (
    "Who is it about?", "Where does it happen?", "What is it?", "When was it?",
    "Why?", "How much does it cost?", "Which city is named?",
)
ZERO_SHOT_LABELS: tuple[str, ...] = ("politics", "sports", "food", "travel", "technology", "happy", "sad")
ZERO_SHOT_TEMPLATE = "This example is {}."  # transformers' default hypothesis_template
BATCH_SIZE = 8
MAX_ANSWER_LEN = 15  # transformers' default max_answer_len


def masked_texts(mask_token: str) -> list[str]:
    """Each validation text with one word (the middle one, at most the sixth, so that
    truncation keeps it) replaced by ``mask_token``; one-word texts get it appended."""
    texts = []
    for text in AGREEMENT_TEXTS:
        words = text.split()
        if len(words) > 1:
            words[min(len(words) // 2, 5)] = mask_token
        else:
            words.append(mask_token)
        texts.append(" ".join(words))
    return texts


def qa_pairs() -> list[tuple[str, str]]:
    """(question, context) pairs: every validation text as a context."""
    return [(QUESTIONS[i % len(QUESTIONS)], text) for i, text in enumerate(AGREEMENT_TEXTS)]


def zero_shot_pairs() -> list[tuple[str, str]]:
    """(premise, hypothesis) pairs as the zero-shot pipeline builds them."""
    return [(text, ZERO_SHOT_TEMPLATE.format(ZERO_SHOT_LABELS[i % len(ZERO_SHOT_LABELS)]))
            for i, text in enumerate(AGREEMENT_TEXTS)]


@dataclass
class AgreementCheck:
    """The validation set of one task, tokenized for one bundle, with fp32's outputs on it.

    ``positions[b]`` marks, per batch, the token positions the metric reads: context
    tokens (QA), real non-special tokens (NER), mask positions (fill-mask), real tokens
    (embeddings); unused for sequence labels.
    """

    task: str
    rule: AgreementRule
    feeds: list[dict[str, np.ndarray]]
    positions: list[np.ndarray]
    examples: int
    labels: dict[int, str] = field(default_factory=dict)
    fp32_results: list[dict[str, np.ndarray]] = field(default_factory=list)
    #: The lowest passing value: the catalog's unless the user chose one (``--min-agreement``).
    threshold: float = 1.0
    threshold_source: str = "catalog"
    #: The manifest's generation section (text-generation): the variants are decoded with it.
    generation: dict[str, Any] = field(default_factory=dict)
    #: CTC's blank id (automatic-speech-recognition): dropped from the transcripts compared.
    blank: int | None = None

    @classmethod
    def prepare(cls, folder: Path, task: str, max_length: int | None, graph_inputs: list[str],
                fp32: Path | None = None, min_agreement: float | None = None,
                generation: dict[str, Any] | None = None) -> AgreementCheck:
        """Tokenize the task's validation set with the bundle's tokenizer in ``folder``
        (labels from its config.json) and, if ``fp32`` is given, run that graph on it.
        ``min_agreement`` replaces the catalog's threshold (a user's own bar, recorded)."""
        from edgeformers.exporter.validate import reference_tokenizer
        from edgeformers.runtime.bundle import read_json

        rule = agreement_rule(task)
        threshold = rule.threshold if min_agreement is None else check_min_agreement(min_agreement)
        vision = _task_name(task) in VISION_TASKS  # synthetic images, no tokenizer (exporter/vision_inputs.py)
        audio = _task_name(task) in audio_inputs.AUDIO_TASKS  # synthetic clips (exporter/audio_inputs.py)
        tokenizer = None if vision or audio else reference_tokenizer(folder)
        id2label = read_json(folder / "config.json").get("id2label") or {}
        check = cls(task=_task_name(task), rule=rule, feeds=[], positions=[], examples=0,
                    labels={int(k): str(v) for k, v in id2label.items()}, threshold=threshold,
                    threshold_source="catalog" if min_agreement is None else "user",
                    generation=dict(generation or {}))
        if vision:
            check.feeds, check.examples = agreement_feeds(folder, check.task, graph_inputs)
        elif audio:
            check.feeds, check.examples = audio_inputs.agreement_feeds(folder, check.task, graph_inputs)
            check.blank = audio_inputs.blank_id(folder)
        else:
            check._tokenize(tokenizer, max_length, set(graph_inputs) | {"attention_mask"})
        if fp32 is not None:
            check.fp32_results = check._run(fp32)
        return check

    def _tokenize(self, tokenizer: Any, max_length: int | None, keep: set[str]) -> None:
        limit = {"max_length": max_length} if max_length else {}
        first: list[str]
        second: list[str] | None = None
        truncation: str | bool = True
        if self.task == "question-answering":
            first, second = map(list, zip(*qa_pairs()))
            truncation = "only_second"
        elif self.task == "zero-shot-classification":
            first, second = map(list, zip(*zero_shot_pairs()))
        elif self.task == "fill-mask":
            first = masked_texts(tokenizer.mask_token)
        elif self.task == "text-generation":
            first = [text for text in AGREEMENT_TEXTS if text.strip()]
            if max_length:  # room for the new tokens inside the context window
                limit = {"max_length": max_length - GREEDY_NEW_TOKENS}
            tokenizer.padding_side = "left"  # continuations start right after each prompt
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
        else:
            first = list(AGREEMENT_TEXTS)
        self.examples = len(first)
        for start in range(0, len(first), BATCH_SIZE):
            args = [first[start:start + BATCH_SIZE]]
            if second is not None:
                args.append(second[start:start + BATCH_SIZE])
            encoded = tokenizer(*args, padding=True, truncation=truncation, return_tensors="np",
                                return_special_tokens_mask=True, **limit)
            attention = encoded["attention_mask"].astype(bool)
            if self.task == "question-answering":
                rows = [[sid == 1 for sid in encoded.sequence_ids(i)] for i in range(attention.shape[0])]
                positions = np.asarray(rows, dtype=bool) & attention
            elif self.task == "fill-mask":
                positions = encoded["input_ids"] == tokenizer.mask_token_id
            elif self.task == "token-classification":
                positions = attention & ~encoded["special_tokens_mask"].astype(bool)
            else:
                positions = attention
            self.feeds.append({k: v for k, v in encoded.items() if k in keep})
            self.positions.append(positions)
        if self.task == "fill-mask" and not any(p.any() for p in self.positions):
            # No mask survived tokenization (a tokenizer without one): compare every real token.
            self.positions = [feed["attention_mask"].astype(bool) for feed in self.feeds]

    def measure(self, candidate: Path) -> dict[str, Any]:
        """The agreement report of the graph at ``candidate`` against fp32."""
        return task_agreement(self.fp32_results, self._run(candidate), self)

    def _run(self, graph: Path) -> list[dict[str, np.ndarray]]:
        """The graph's outputs per batch; a generator's greedy continuations (``tokens``)."""
        from edgeformers.exporter.validate import run_onnx

        if self.rule.metric != GREEDY_TOKEN_AGREEMENT:
            return run_onnx(graph, self.feeds)
        from edgeformers.runtime.devices import resolve_device
        from edgeformers.runtime.generation import DecoderOnlyGenerator, GenerationSettings
        from edgeformers.runtime.session import OnnxModel

        generator = DecoderOnlyGenerator(OnnxModel(graph, resolve_device("cpu")), self.generation, str(graph))
        settings = GenerationSettings(max_new_tokens=GREEDY_NEW_TOKENS, eos_token_id=[])
        return [{"tokens": generator.generate(feed["input_ids"], feed["attention_mask"], settings)
                 [:, -GREEDY_NEW_TOKENS:]} for feed in self.feeds]


def check_min_agreement(value: float) -> float:
    """A user's threshold must be a number in (0, 1]: every metric is a share or a cosine."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise InputError(f"--min-agreement must be a number in (0, 1], got {value!r}")
    return float(value)


def _task_name(task: str) -> str:
    from edgeformers.models.tasks import resolve_task

    return resolve_task(task).name


def task_agreement(reference: list[dict[str, np.ndarray]], candidate: list[dict[str, np.ndarray]],
                   check: AgreementCheck) -> dict[str, Any]:
    """How far ``candidate``'s answers move from ``reference``'s (fp32) by the task's
    metric; the report says whether that passes the catalog's threshold."""
    rule = check.rule
    value, details = _METRICS[rule.metric](reference, candidate, check)
    return {
        "reference": "fp32",
        "inputs": check.examples,
        "metric": rule.metric,
        "value": value,
        "threshold": check.threshold,
        "threshold_source": check.threshold_source,
        "passed": bool(value >= check.threshold),
        rule.metric: value,  # the figure under its own name too, as earlier manifests had it
        "details": details,
    }


def hold_to_threshold(report: dict[str, Any], dtype: str, allow_degraded: bool) -> dict[str, Any]:
    """Raise :class:`ValidationError` with the figures if the variant failed its
    threshold, unless ``allow_degraded``: then mark the report ``degraded`` and go on."""
    if report["passed"]:
        return report
    figures = describe_failure(dtype, report)
    if not allow_degraded:
        raise ValidationError(f"{figures}; nothing was written (--allow-degraded keeps such a variant, marked)")
    logger.warning("keeping a degraded variant: %s", figures)
    return {**report, "degraded": True}


def describe_failure(dtype: str, report: dict[str, Any]) -> str:
    return (f"the {dtype} variant is below its task's threshold: {report['metric']} "
            f"{report['value']:.4f} < {report['threshold']:g} over {report['inputs']} inputs")


# --- metrics: (fp32 results, variant results, check) -> (value, details) ----------------

Metric = Callable[[list[dict[str, np.ndarray]], list[dict[str, np.ndarray]], AgreementCheck],
                  tuple[float, dict[str, Any]]]


def _label_agreement(reference: list[dict[str, np.ndarray]], candidate: list[dict[str, np.ndarray]],
                     check: AgreementCheck) -> tuple[float, dict[str, Any]]:
    same = [int(a == b) for ref, cand in zip(reference, candidate)
            for a, b in zip(ref["logits"].argmax(-1), cand["logits"].argmax(-1))]
    return _share(sum(same), len(same), "inputs")


def _span_agreement(reference: list[dict[str, np.ndarray]], candidate: list[dict[str, np.ndarray]],
                    check: AgreementCheck) -> tuple[float, dict[str, Any]]:
    agree = total = 0
    for ref, cand, allowed in zip(reference, candidate, check.positions):
        for row in range(allowed.shape[0]):
            want = _best_span(ref["start_logits"][row], ref["end_logits"][row], allowed[row])
            got = _best_span(cand["start_logits"][row], cand["end_logits"][row], allowed[row])
            agree += want == got
            total += 1
    return _share(agree, total, "pairs")


def _best_span(start: np.ndarray, end: np.ndarray, allowed: np.ndarray) -> tuple[int, int] | None:
    """The (start, end) token span the question-answering pipeline answers with."""
    from edgeformers.runtime.pipelines.question_answering import select_spans

    if not allowed.any():
        return None
    starts, ends, _, _ = select_spans(start.astype(np.float32), end.astype(np.float32), allowed, 0.0, 1,
                                      False, MAX_ANSWER_LEN)
    return (int(starts[0]), int(ends[0])) if len(starts) else None


def _entity_agreement(reference: list[dict[str, np.ndarray]], candidate: list[dict[str, np.ndarray]],
                      check: AgreementCheck) -> tuple[float, dict[str, Any]]:
    matched = total = fp32_entities = 0
    for ref, cand, real in zip(reference, candidate, check.positions):
        for row in range(real.shape[0]):
            want = _entities(ref["logits"][row].argmax(-1), real[row], check.labels)
            got = _entities(cand["logits"][row].argmax(-1), real[row], check.labels)
            matched += len(want & got)
            total += max(len(want), len(got))
            fp32_entities += len(want)
    value, details = _share(matched, total, "entities")
    return value, {**details, "fp32_entities": fp32_entities}


def _entities(label_ids: np.ndarray, real: np.ndarray, labels: dict[int, str]) -> set[tuple[int, int, str]]:
    """(first token, last token, type) of each entity, grouped as aggregation_strategy=
    'simple' groups tokens: a B- tag or another type opens a new group; 'O' is dropped."""
    from edgeformers.runtime.pipelines.entity_grouping import get_tag

    groups: list[tuple[int, int, str]] = []
    for index in np.flatnonzero(real):
        bi, tag = get_tag(labels.get(int(label_ids[index]), f"LABEL_{int(label_ids[index])}"))
        if groups and groups[-1][2] == tag and bi != "B":
            groups[-1] = (groups[-1][0], int(index), tag)
        else:
            groups.append((int(index), int(index), tag))
    return {group for group in groups if group[2] != "O"}


def _top1_token_agreement(reference: list[dict[str, np.ndarray]], candidate: list[dict[str, np.ndarray]],
                          check: AgreementCheck) -> tuple[float, dict[str, Any]]:
    agree = total = 0
    for ref, cand, positions in zip(reference, candidate, check.positions):
        same = ref["logits"].argmax(-1) == cand["logits"].argmax(-1)
        agree += int(same[positions].sum())
        total += int(positions.sum())
    return _share(agree, total, "positions")


def _min_cosine(reference: list[dict[str, np.ndarray]], candidate: list[dict[str, np.ndarray]],
                check: AgreementCheck) -> tuple[float, dict[str, Any]]:
    cosines: list[float] = []
    for ref, cand, mask in zip(reference, candidate, check.positions):
        weights = mask[..., None].astype(np.float32)
        for name, want in ref.items():
            if want.ndim != 3:
                continue
            a = (want * weights).sum(1) / weights.sum(1)
            b = (cand[name].astype(np.float32) * weights).sum(1) / weights.sum(1)
            cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
            cosines.extend(float(c) if math.isfinite(c) else -1.0 for c in cos)  # NaN/inf: the worst
    if not cosines:
        raise ValidationError("feature-extraction graph has no (batch, tokens, hidden) output to compare")
    return min(cosines), {"mean_cosine": float(np.mean(cosines)), "embeddings": len(cosines)}


def _greedy_token_agreement(reference: list[dict[str, np.ndarray]], candidate: list[dict[str, np.ndarray]],
                            check: AgreementCheck) -> tuple[float, dict[str, Any]]:
    """Per row, positions up to and including the first difference (all of them if none):
    after a difference the two continuations condition on different text."""
    agree = total = identical = 0
    for ref, cand in zip(reference, candidate):
        for want, got in zip(ref["tokens"], cand["tokens"]):
            differ = np.flatnonzero(want != got)
            counted = int(differ[0]) + 1 if differ.size else len(want)
            agree += counted - int(bool(differ.size))
            total += counted
            identical += int(not differ.size)
    value, details = _share(agree, total, "positions")
    return value, {**details, "identical_rows": identical, "new_tokens": GREEDY_NEW_TOKENS}


def _query_label_agreement(reference: list[dict[str, np.ndarray]], candidate: list[dict[str, np.ndarray]],
                           check: AgreementCheck) -> tuple[float, dict[str, Any]]:
    """Object detection: per (image, query), the top class (no-object included) against fp32's;
    the largest normalized box difference beside it."""
    agree = total = 0
    box_diff = 0.0
    for ref, cand in zip(reference, candidate):
        same = ref["logits"].argmax(-1) == cand["logits"].argmax(-1)
        agree, total = agree + int(same.sum()), total + int(same.size)
        box_diff = max(box_diff, float(np.abs(ref["pred_boxes"] - cand["pred_boxes"]).max(initial=0.0)))
    value, details = _share(agree, total, "queries")
    return value, {**details, "max_box_diff": box_diff}


def _share(agree: int, total: int, unit: str) -> tuple[float, dict[str, Any]]:
    return (agree / total if total else 1.0), {"agree": int(agree), unit: int(total)}


def _character_agreement(reference: list[dict[str, np.ndarray]], candidate: list[dict[str, np.ndarray]],
                         check: AgreementCheck) -> tuple[float, dict[str, Any]]:
    return audio_inputs.character_agreement(reference, candidate, check.blank)


_METRICS: dict[str, Metric] = {
    CHARACTER_AGREEMENT: _character_agreement,
    LABEL_AGREEMENT: _label_agreement,
    SPAN_AGREEMENT: _span_agreement,
    ENTITY_AGREEMENT: _entity_agreement,
    TOP1_TOKEN_AGREEMENT: _top1_token_agreement,
    MIN_COSINE: _min_cosine,
    GREEDY_TOKEN_AGREEMENT: _greedy_token_agreement,
    QUERY_LABEL_AGREEMENT: _query_label_agreement,
}
