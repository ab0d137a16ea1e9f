"""What every pipeline shares: the bundle, one session, the tokenizer, input checks."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import numpy as np

from edgeformers.models.errors import InputError
from edgeformers.runtime.bundle import Bundle
from edgeformers.runtime.devices import DevicePlan
from edgeformers.runtime.session import OnnxModel
from edgeformers.runtime.tokenizer import TextTokenizer

DEFAULT_BATCH_SIZE = 16


class Pipeline:
    """Base of the task pipelines. Subclasses set ``task`` and implement ``__call__``."""

    task: ClassVar[str]

    def __init__(
        self,
        bundle: Bundle,
        dtype: str,
        plan: DevicePlan,
        threads: int | None = None,
        strict: bool = False,
    ) -> None:
        self.bundle = bundle
        self.dtype = dtype
        self.device = plan.device
        self.model = OnnxModel(bundle.onnx_path(dtype), plan, threads=threads, strict=strict)
        self.tokenizer = TextTokenizer(bundle.path, bundle.manifest.processing.get("max_length"))
        self.prepare()

    def prepare(self) -> None:
        """Task-specific checks and lookups once the session and tokenizer exist; a bundle
        the task cannot use fails here, at load time, not on the first call."""

    @property
    def providers(self) -> list[str]:
        """The execution providers the session really runs on (after any fallback)."""
        return self.model.providers

    @property
    def labels(self) -> dict[int, str]:
        return self.bundle.manifest.labels

    def label(self, index: int) -> str:
        return self.labels.get(index, f"LABEL_{index}")

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(task={self.task!r}, bundle={str(self.bundle.path)!r}, "
            f"dtype={self.dtype!r}, providers={self.providers})"
        )


def text_batch(inputs: Any, name: str = "inputs") -> tuple[list[str], bool]:
    """``(texts, was_single)`` for a string or a list of strings; anything else is refused."""
    if isinstance(inputs, str):
        return [inputs], True
    if isinstance(inputs, (list, tuple)):
        for index, item in enumerate(inputs):
            if not isinstance(item, str):
                raise InputError(f"{name}[{index}] is {type(item).__name__}; expected a string")
        return list(inputs), False
    raise InputError(f"{name} is {type(inputs).__name__}; expected a string or a list of strings")


def chunks(count: int, batch_size: int | None) -> Iterator[slice]:
    size = batch_size or DEFAULT_BATCH_SIZE
    if size < 1:
        raise InputError(f"batch_size must be at least 1, got {size}")
    for start in range(0, count, size):
        yield slice(start, min(start + size, count))


#: A row starts a batch of its own when its batch's longest row is both this much longer
#: and at least MIN_PADDING_SPLIT tokens longer: a 265-token QA window padded to 384 beside
#: full windows cost ~5% of a call, while a few pad tokens cost less than another run.
MAX_PADDING_RATIO = 1.25
MIN_PADDING_SPLIT = 32


def length_batches(lengths: Sequence[int], batch_size: int | None) -> Iterator[list[int]]:
    """Indices grouped longest first into batches of at most ``batch_size`` rows of
    similar length, so per-batch padding stays small. Callers put results back by index."""
    size = batch_size or DEFAULT_BATCH_SIZE
    if size < 1:
        raise InputError(f"batch_size must be at least 1, got {size}")
    batch: list[int] = []
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        if batch:
            longest, length = lengths[batch[0]], lengths[index]
            wasteful = longest > MAX_PADDING_RATIO * length and longest - length >= MIN_PADDING_SPLIT
            if len(batch) == size or wasteful:
                yield batch
                batch = []
        batch.append(index)
    if batch:
        yield batch


def check_top_k(top_k: Any, allow_none: bool = True) -> None:
    if top_k is None and allow_none:
        return
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
        raise InputError(f"top_k must be a positive integer{' or None' if allow_none else ''}, got {top_k!r}")


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits))


def unbatch(results: Sequence[Any], was_single: bool) -> Any:
    return results[0] if was_single else list(results)
