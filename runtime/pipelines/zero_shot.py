"""zero-shot-classification: an NLI classifier scores "premise = text, hypothesis =
template(label)" for labels chosen at call time, as transformers'
ZeroShotClassificationPipeline does.

Every text × label pair of one call is tokenized at once and run in length-sorted,
per-batch-padded ONNX batches (transformers runs one pair per forward pass).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from edgeformers.models.errors import BundleError, InputError
from edgeformers.runtime.pipelines.base import (
    Pipeline,
    check_text,
    length_batches,
    softmax,
    text_batch,
)

logger = logging.getLogger(__name__)

DEFAULT_TEMPLATE = "This example is {}."


def entailment_id(labels: dict[int, str]) -> int:
    """The first label (in id order) whose name starts with "entail", case-insensitive, or -1."""
    for index in sorted(labels):
        if labels[index].lower().startswith("entail"):
            return index
    return -1


def parse_labels(candidate_labels: Any) -> list[str]:
    """A list of labels, or one comma-separated string ("sports, politics")."""
    if isinstance(candidate_labels, str):
        labels = [label.strip() for label in check_text(candidate_labels, "candidate_labels").split(",")
                  if label.strip()]
    elif isinstance(candidate_labels, (list, tuple)):
        labels = list(candidate_labels)
        for index, label in enumerate(labels):
            if not isinstance(label, str):
                raise InputError(f"candidate_labels[{index}] is {type(label).__name__}; expected a string")
            check_text(label, f"candidate_labels[{index}]")
    else:
        raise InputError(
            "candidate_labels is required: pass a list of labels or a comma-separated string, "
            'e.g. candidate_labels=["sports", "politics"]'
        )
    if not labels:
        raise InputError('candidate_labels is empty; pass at least one label, e.g. candidate_labels=["sports"]')
    return labels


def fill_template(template: Any, labels: list[str]) -> list[str]:
    """``template`` filled with each label; refuses a template with no ``{}`` to fill."""
    if not isinstance(template, str):
        raise InputError(
            f"hypothesis_template is {type(template).__name__}; expected a string such as {DEFAULT_TEMPLATE!r}"
        )
    check_text(template, "hypothesis_template")
    try:
        filled = [template.format(label) for label in labels]
    except (IndexError, KeyError, ValueError) as err:
        raise InputError(
            f"hypothesis_template {template!r} could not be formatted with a label ({err}); "
            f"use one '{{}}' where the label goes, e.g. {DEFAULT_TEMPLATE!r}"
        ) from None
    if filled[0] == template:
        raise InputError(
            f"hypothesis_template {template!r} has no '{{}}' for the label; e.g. {DEFAULT_TEMPLATE!r}"
        )
    return filled


class ZeroShotClassificationPipeline(Pipeline):
    task = "zero-shot-classification"

    def prepare(self) -> None:
        self.entailment_id = entailment_id(self.labels)
        if self.entailment_id == -1:
            found = ", ".join(repr(name) for _, name in sorted(self.labels.items())) or "none"
            raise BundleError(
                f"{self.bundle.path}: model has no entailment label (labels: {found}); zero-shot-classification "
                "needs an NLI classifier whose id2label names an 'entailment' class (e.g. an MNLI model)"
            )
        # As transformers: the contradiction logit is taken to be the first one, or the
        # last when entailment is the first.
        self.contradiction_id = -1 if self.entailment_id == 0 else 0

    def __call__(
        self,
        sequences: Any,
        *args: Any,
        candidate_labels: Any = None,
        hypothesis_template: str = DEFAULT_TEMPLATE,
        multi_label: bool | None = None,
        multi_class: bool | None = None,
        batch_size: int | None = None,
    ) -> Any:
        """Like transformers: a dict ``{sequence, labels, scores}`` (labels sorted by score)
        for a string, a list of such dicts for a list. ``candidate_labels`` may also be the
        second positional argument. ``multi_label=True`` scores each label on its own
        (entailment vs contradiction); otherwise scores sum to 1 across labels."""
        if args:
            if len(args) > 1 or candidate_labels is not None:
                raise InputError(
                    f"unexpected extra positional arguments {args!r}; pass candidate_labels=[...] "
                    "(or the labels as the one argument after the sequences)"
                )
            candidate_labels = args[0]
        if multi_class is not None:
            logger.warning("multi_class is deprecated (as in transformers); use multi_label")
            multi_label = multi_class
        texts, single = text_batch(sequences, "sequences")
        labels = parse_labels(candidate_labels)
        filled = fill_template(hypothesis_template, labels)
        for index, text in enumerate(texts):
            if not text:
                where = "sequences" if single else f"sequences[{index}]"
                raise InputError(f"{where} is an empty string; pass the text to classify")
        if not texts:
            return []
        logits = self.pair_logits([t for t in texts for _ in labels], filled * len(texts), batch_size)
        per_text = logits.reshape(len(texts), len(labels), -1)
        results = [self._postprocess(text, labels, rows, bool(multi_label)) for text, rows in zip(texts, per_text)]
        return results[0] if single else results

    def pair_logits(self, premises: list[str], hypotheses: list[str], batch_size: int | None) -> np.ndarray:
        """NLI logits for each (premise, hypothesis) pair, in input order."""
        encodings = self._encode(premises, hypotheses)
        width = len(self.labels)
        logits = np.zeros((len(encodings), width), dtype=np.float32)
        for group in length_batches([len(e.ids) for e in encodings], batch_size):
            batch = self.tokenizer.pad([encodings[i] for i in group])
            logits[group] = self.model.run(batch.feed(), ["logits"])["logits"]
        return logits

    def _encode(self, premises: list[str], hypotheses: list[str]) -> list[Any]:
        """Truncate only the premise, as transformers does; a pair whose hypothesis alone
        is too long for that is left untruncated (transformers' "too short" fallback)."""
        try:
            return self.tokenizer.encode(premises, hypotheses, strategy="only_first")
        except Exception as err:
            if "too short" not in str(err):
                raise
        encodings = []
        for premise, hypothesis in zip(premises, hypotheses):
            try:
                encodings.extend(self.tokenizer.encode([premise], [hypothesis], strategy="only_first"))
            except Exception as err:
                if "too short" not in str(err):
                    raise
                encodings.extend(self.tokenizer.encode([premise], [hypothesis], truncation=False))
        limit = self.tokenizer.max_length
        if limit and any(len(e.ids) > limit for e in encodings):
            raise InputError(
                f"a filled hypothesis_template is too long for this model ({limit} tokens with the text); "
                "use shorter candidate_labels or a shorter hypothesis_template"
            )
        return encodings

    def _postprocess(self, text: str, labels: list[str], logits: np.ndarray, multi_label: bool) -> dict[str, Any]:
        if multi_label or len(labels) == 1:
            pair = logits[:, [self.contradiction_id, self.entailment_id]]
            scores = softmax(pair)[:, 1]
        else:
            scores = softmax(logits[:, self.entailment_id])
        order = list(reversed(scores.argsort()))  # transformers' order, ties included
        return {
            "sequence": text,
            "labels": [labels[i] for i in order],
            "scores": [float(scores[i]) for i in order],
        }
