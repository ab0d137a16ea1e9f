"""question-answering (extractive), with transformers' arguments, windowing and scores.

A long context is cut into overlapping windows (``max_seq_len`` tokens, ``doc_stride``
overlap) by the tokenizer itself; every window of every example in a call goes to the
model in as few padded batches as possible. Each window's logits are then decoded the way
transformers' ``QuestionAnsweringPipeline`` does, quirks included (answers with the same
text are merged by summing their scores, across windows too), so results match it.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from edgeformers.models.errors import BundleError, InputError
from edgeformers.runtime.pipelines.base import (
    Pipeline,
    check_count,
    check_padding,
    check_text,
    check_top_k,
    length_batches,
)

_MAX_SEQ_LEN = 384  # transformers' cap on the window length
_NULL_SCORE = 1000000.0  # transformers' starting "no answer" score: large and positive
_MASKED = -10000.0
_OUTPUTS = ["start_logits", "end_logits"]


class QuestionAnsweringPipeline(Pipeline):
    task = "question-answering"

    def prepare(self) -> None:
        missing = [name for name in _OUTPUTS if name not in self.model.output_names]
        if missing:
            raise BundleError(
                f"{self.model.path.name} has no {missing} outputs (it has {self.model.output_names}); "
                "re-export the checkpoint with --task question-answering"
            )
        self.cls_id = self.tokenizer.special_token_id("cls_token")
        # transformers puts the question first unless the tokenizer pads on the left
        self.question_first = not self.tokenizer.padding_left

    def __call__(
        self,
        *args: Any,
        question: str | list[str] | None = None,
        context: str | list[str] | None = None,
        top_k: int | None = None,
        doc_stride: int | None = None,
        max_answer_len: int | None = None,
        max_seq_len: int | None = None,
        max_question_len: int | None = None,
        handle_impossible_answer: bool | None = None,
        align_to_words: bool | None = None,
        padding: bool | str | None = None,
        topk: int | None = None,
        batch_size: int | None = None,
    ) -> Any:
        """Answer each question from its context: ``{score, start, end, answer}`` with
        ``context[start:end] == answer``, or a list of them when ``top_k`` > 1.

        Inputs as transformers takes them: ``question=``/``context=`` (strings, or lists),
        a ``{"question", "context"}`` dict, a list of dicts, or ``(question, context)``.
        ``max_question_len`` is accepted and, as in transformers with fast tokenizers,
        unused; so is ``padding`` (windows are padded per batch behind the attention mask).
        None means transformers' default for every argument (top_k 1, max_answer_len 15,
        align_to_words True); the deprecated ``topk`` still works, with a warning.
        A single example gives a single result, several give a list.
        """
        examples = question_answer_examples(args, question, context)
        if topk is not None and top_k is None:
            warnings.warn("topk is deprecated (as in transformers); use top_k", FutureWarning, stacklevel=3)
            top_k = topk
        top_k = 1 if top_k is None else top_k
        max_answer_len = 15 if max_answer_len is None else max_answer_len
        align_to_words = True if align_to_words is None else align_to_words
        check_top_k(top_k, allow_none=False)
        _check_positive("max_answer_len", max_answer_len)
        check_count("max_question_len", max_question_len)
        if padding is not None:
            check_padding(padding)
        max_seq_len, doc_stride = self._window_sizes(max_seq_len, doc_stride)
        windows = self._windows(examples, max_seq_len, doc_stride)
        flat = [encoding for group in windows for encoding in group]
        logits = iter(self._logits(flat, batch_size))
        results = []
        for (_, text), group in zip(examples, windows):
            outputs = [(encoding, *next(logits)) for encoding in group]
            results.append(self._answers(text, outputs, top_k, max_answer_len, handle_impossible_answer,
                                         align_to_words))
        return results[0] if len(results) == 1 else results

    def _window_sizes(self, max_seq_len: Any, doc_stride: Any) -> tuple[int, int]:
        """transformers' defaults: min(model max, 384) tokens, overlap min(half that, 128)."""
        limit = self.tokenizer.max_length
        if max_seq_len is None:
            max_seq_len = min(limit or _MAX_SEQ_LEN, _MAX_SEQ_LEN)
        _check_positive("max_seq_len", max_seq_len)
        if limit is not None and max_seq_len > limit:
            raise InputError(f"max_seq_len={max_seq_len} exceeds the model's maximum of {limit} tokens; "
                             f"pass max_seq_len <= {limit}")
        if doc_stride is None:
            doc_stride = min(max_seq_len // 2, 128)
        if not isinstance(doc_stride, int) or isinstance(doc_stride, bool) or doc_stride < 0:
            raise InputError(f"doc_stride must be a non-negative integer, got {doc_stride!r}")
        added = self.tokenizer.num_special_tokens_to_add(pair=False)
        if doc_stride >= max_seq_len - added:
            raise InputError(
                f"doc_stride={doc_stride} must be smaller than max_seq_len={max_seq_len} minus the {added} "
                f"special tokens (the overlap between windows must leave room for new tokens); "
                f"pass doc_stride < {max_seq_len - added}"
            )
        return max_seq_len, doc_stride

    def _windows(self, examples: list[tuple[str, str]], max_seq_len: int, doc_stride: int) -> list[list[Any]]:
        """Each example's windows: the tokenizer's encoding plus its ``overflowing`` ones."""
        questions, contexts = [q for q, _ in examples], [c for _, c in examples]
        self._check_room(questions, contexts, max_seq_len, doc_stride)
        first, second = (questions, contexts) if self.question_first else (contexts, questions)
        strategy = "only_second" if self.question_first else "only_first"
        encodings = self.tokenizer.encode(first, second, truncation=True, max_length=max_seq_len,
                                          stride=doc_stride, strategy=strategy)
        return [[encoding, *encoding.overflowing] for encoding in encodings]

    def _check_room(self, questions: list[str], contexts: list[str], max_seq_len: int, doc_stride: int) -> None:
        """Refuse what the tokenizer would fail on (a question that leaves no room for the
        context) or crash on (a Rust panic: doc_stride not below the context room)."""
        added = self.tokenizer.num_special_tokens_to_add(pair=True)
        question_tokens = self.tokenizer.encode(questions, truncation=False, add_special_tokens=False)
        for index, (encoding, context) in enumerate(zip(question_tokens, contexts)):
            room = max_seq_len - added - len(encoding.ids)
            if room > doc_stride:
                continue
            context_tokens = self.tokenizer.encode([context], truncation=False, add_special_tokens=False)[0]
            if len(context_tokens.ids) <= room:
                continue  # fits in one window: nothing is truncated
            if room <= 0:
                raise InputError(
                    f"question {index} is {len(encoding.ids)} tokens, which with {added} special tokens leaves "
                    f"no room for the context in max_seq_len={max_seq_len}; shorten the question or raise max_seq_len"
                )
            raise InputError(
                f"doc_stride={doc_stride} must be smaller than the {room} context tokens that fit beside "
                f"question {index} in max_seq_len={max_seq_len}; pass doc_stride < {room} or shorten the question"
            )

    def _logits(self, encodings: list[Any], batch_size: int | None) -> list[tuple[np.ndarray, np.ndarray]]:
        """(start, end) logits per window, unpadded. Windows of similar length share a
        batch (``length_batches``), padded on the right whatever the tokenizer says:
        transformers runs each window alone (unpadded), and left padding would shift the
        position ids of absolute-position models."""
        found: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for rows in length_batches([len(e.ids) for e in encodings], batch_size):
            batch = self.tokenizer.pad([encodings[i] for i in rows])
            out = self.model.run(batch.feed(), _OUTPUTS)
            for row, index in enumerate(rows):
                n = len(encodings[index].ids)
                found[index] = (out["start_logits"][row, :n].astype(np.float32),
                                out["end_logits"][row, :n].astype(np.float32))
        return [found[i] for i in range(len(encodings))]

    def _answers(self, context: str, outputs: list[tuple[Any, np.ndarray, np.ndarray]], top_k: int,
                 max_answer_len: int, handle_impossible_answer: bool, align_to_words: bool) -> Any:
        """transformers' ``postprocess``: best spans per window, mapped to characters,
        same-text answers merged (scores summed), then the ``top_k`` best overall."""
        null_score = _NULL_SCORE
        answers: list[dict[str, Any]] = []
        candidates = top_k * 2 + 10 if align_to_words else top_k  # word alignment may merge some
        sequence = 1 if self.question_first else 0
        for encoding, start, end in outputs:
            allowed = self._allowed(encoding)
            starts, ends, scores, null_score = select_spans(
                start, end, allowed, null_score, candidates, handle_impossible_answer, max_answer_len)
            for s, e, score in zip(starts, ends, scores):
                begin, finish = char_span(encoding, int(s), int(e), sequence, align_to_words)
                text = context[begin:finish]
                same = next((a for a in answers if a["answer"].lower() == text.lower()), None)
                if same is not None:
                    same["score"] += score.item()
                else:
                    answers.append({"score": score.item(), "start": begin, "end": finish, "answer": text})
        if handle_impossible_answer:
            answers.append({"score": null_score, "start": 0, "end": 0, "answer": ""})
        answers = sorted(answers, key=lambda a: a["score"], reverse=True)[:top_k]
        return answers[0] if len(answers) == 1 else answers

    def _allowed(self, encoding: Any) -> np.ndarray:
        """Tokens that may be in an answer: the context's and the CLS token (kept because
        some models point at it for "no answer"); with context first, transformers masks none."""
        if self.question_first:
            allowed = np.array([sid == 1 for sid in encoding.sequence_ids], dtype=bool)
        else:
            allowed = np.ones(len(encoding.ids), dtype=bool)
        if self.cls_id is not None:
            allowed |= np.asarray(encoding.ids) == self.cls_id
        return allowed & (np.asarray(encoding.attention_mask) == 1)


def select_spans(start: np.ndarray, end: np.ndarray, allowed: np.ndarray, null_score: float, top_k: int,
                 handle_impossible_answer: bool, max_answer_len: int) -> tuple[Any, Any, Any, float]:
    """transformers' ``select_starts_ends``: softmax over the allowed tokens' start and
    end logits of one window, the CLS product as "no answer", then the best spans."""
    start = np.where(allowed, start, np.float32(_MASKED))[None]
    end = np.where(allowed, end, np.float32(_MASKED))[None]
    start = np.exp(start - start.max(axis=-1, keepdims=True))
    start = start / start.sum()
    end = np.exp(end - end.max(axis=-1, keepdims=True))
    end = end / end.sum()
    if handle_impossible_answer:
        null_score = min(null_score, (start[0, 0] * end[0, 0]).item())
    start[0, 0] = end[0, 0] = 0.0
    starts, ends, scores = decode_spans(start, end, top_k, max_answer_len, allowed[None].astype(np.int64))
    return starts, ends, scores, null_score


def decode_spans(start: np.ndarray, end: np.ndarray, top_k: int, max_answer_len: int,
                 allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """transformers' ``decode_spans``: score every (start, end) with start <= end and
    length <= max_answer_len as p(start) * p(end), keep the ``top_k`` best. The same numpy
    calls on the same shapes, so ties break the same way."""
    outer = np.matmul(np.expand_dims(start, -1), np.expand_dims(end, 1))
    candidates = np.tril(np.triu(outer), max_answer_len - 1)
    flat = candidates.flatten()
    if top_k == 1:
        best = np.array([np.argmax(flat)])
    elif len(flat) <= top_k:  # transformers crashes (argpartition out of bounds) when ==
        best = np.argsort(-flat)
    else:
        index = np.argpartition(-flat, top_k)[0:top_k]
        best = index[np.argsort(-flat[index])]
    starts, ends = np.unravel_index(best, candidates.shape)[1:]
    # allowed.nonzero() of a (1, n) mask also yields the row indices (zeros), so position 0
    # always passes this filter in transformers; passing the tuple keeps that.
    keep = np.isin(starts, allowed.nonzero()) & np.isin(ends, allowed.nonzero())
    starts, ends = starts[keep], ends[keep]
    return starts, ends, candidates[0, starts, ends]


def char_span(encoding: Any, s: int, e: int, sequence: int, align_to_words: bool) -> tuple[int, int]:
    """Token span -> character span in the context; with ``align_to_words`` widened to
    whole words, falling back to token offsets where the tokenizer has no word (special
    tokens), as transformers' ``get_indices`` does."""
    if align_to_words:
        try:
            first = encoding.word_to_chars(encoding.token_to_word(s), sequence_index=sequence)[0]
            last = encoding.word_to_chars(encoding.token_to_word(e), sequence_index=sequence)[1]
            return first, last
        except Exception:  # no word for this token: keep to its offsets
            pass
    return encoding.offsets[s][0], encoding.offsets[e][1]


def question_answer_examples(args: tuple[Any, ...], question: Any, context: Any) -> list[tuple[str, str]]:
    """``(question, context)`` pairs from every input form transformers accepts."""
    if args and (question is not None or context is not None):
        raise InputError("pass the inputs either positionally or as question=/context=, not both")
    if len(args) == 2 and all(isinstance(a, str) for a in args):
        items: Any = [{"question": args[0], "context": args[1]}]
    elif len(args) == 1:
        items = args[0]
    elif args:
        items = list(args)
    elif question is None or context is None:
        missing = "question" if question is None else "context"
        raise InputError(f"{missing} is missing; call pipe(question='...', context='...')")
    elif isinstance(question, str) and isinstance(context, str):
        items = [{"question": question, "context": context}]
    elif isinstance(question, (list, tuple)) and isinstance(context, str):
        items = [{"question": q, "context": context} for q in question]
    elif isinstance(question, (list, tuple)) and isinstance(context, (list, tuple)):
        if len(question) != len(context):
            raise InputError(f"question has {len(question)} items but context has {len(context)}; "
                             "pass lists of the same length, or one context string for all questions")
        items = [{"question": q, "context": c} for q, c in zip(question, context)]
    else:
        raise InputError(f"question is {type(question).__name__} and context is {type(context).__name__}; "
                         "pass two strings, a list of questions with one context string, or two lists")
    if isinstance(items, (dict, str)):
        items = [items]
    if not isinstance(items, (list, tuple)):
        raise InputError(f"inputs is {type(items).__name__}; expected a {{'question', 'context'}} dict or a list")
    return [_example(item, index) for index, item in enumerate(items)]


def _example(item: Any, index: int) -> tuple[str, str]:
    if isinstance(item, str):
        raise InputError(f"inputs[{index}] is a plain string; pass question='...' and context='...', "
                         "or a {'question': ..., 'context': ...} dict (a JSON object on the command line)")
    if not isinstance(item, dict):
        raise InputError(f"inputs[{index}] is {type(item).__name__}; expected a {{'question', 'context'}} dict")
    unknown = sorted(set(item) - {"question", "context"})
    if unknown:
        raise InputError(f"inputs[{index}] has unknown keys {unknown}; expected only 'question' and 'context'")
    for key in ("question", "context"):
        value = item.get(key)
        if value is None:
            raise InputError(f"inputs[{index}] has no {key}; pass {{'question': '...', 'context': '...'}}")
        if not isinstance(value, str):
            raise InputError(f"inputs[{index}]['{key}'] is {type(value).__name__}; expected a string")
        if not value:
            raise InputError(f"{key} {index} is empty; pass a non-empty {key} string")
        check_text(value, f"inputs[{index}]['{key}']")
    return item["question"], item["context"]


def _check_positive(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InputError(f"{name} must be a positive integer, got {value!r}")
