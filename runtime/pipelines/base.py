"""What every pipeline shares: the bundle, its sessions (one per graph component), the
tokenizer, input checks."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

import numpy as np

from edgeformers.models.errors import BundleError, InputError
from edgeformers.runtime.bundle import Bundle
from edgeformers.runtime.devices import DevicePlan
from edgeformers.runtime.session import OnnxModel
from edgeformers.runtime.tokenizer import TextTokenizer

DEFAULT_BATCH_SIZE = 16


#: Arguments transformers' ``Pipeline.__call__`` takes for every task. ``num_workers``
#: sizes its DataLoader; here batches run in the calling thread, so it changes nothing.
COMMON_ARGUMENTS = ("num_workers",)


class Pipeline:
    """Base of the task pipelines. Subclasses set ``task`` and implement ``__call__`` with
    their real arguments; the base checks every call against that signature first
    (:func:`checked_call`), so a bad argument is an ``InputError``, never a ``TypeError``."""

    task: ClassVar[str]
    #: False for pipelines whose inputs are not text (images, audio): no tokenizer.json needed.
    uses_tokenizer: ClassVar[bool] = True
    #: The graphs the pipeline runs, by the variant's component names (runtime/bundle.py
    #: ``_COMPONENTS``): one ``model`` for encoders and decoder-only generators,
    #: ``("encoder_model", "decoder_model_merged")`` for encoder-decoder generators.
    components: ClassVar[tuple[str, ...]] = ("model",)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__call__" in cls.__dict__:
            cls.__call__ = checked_call(cls.__dict__["__call__"])  # type: ignore[method-assign]

    def __init__(
        self,
        bundle: Bundle,
        dtype: str,
        plan: DevicePlan,
        threads: int | None = None,
        strict: bool = False,
        requested_task: str | None = None,
    ) -> None:
        self.bundle = bundle
        self.dtype = dtype
        self.device = plan.device
        #: The task name the caller asked for (an alias such as "translation_en_to_fr" carries
        #: arguments transformers reads from it); ``task`` is the canonical name.
        self.requested_task = requested_task or self.task
        variant = bundle.variant(dtype)
        missing = [name for name in self.components if name not in variant.files]
        if missing:
            raise BundleError(
                f"{bundle.path}: variant {dtype!r} has no {', '.join(missing)} graph; {self.task} runs "
                f"{', '.join(self.components)} (the variant has: {', '.join(variant.files)})"
            )
        #: One session per component; ``model`` is the first (the only one for most pipelines).
        self.models = {name: OnnxModel(bundle.onnx_path(dtype, name), plan, threads=threads, strict=strict)
                       for name in self.components}
        self.model = self.models[self.components[0]]
        self.tokenizer = (TextTokenizer(bundle.path, bundle.manifest.processing.get("max_length"))
                          if self.uses_tokenizer else None)
        self.prepare()

    def prepare(self) -> None:
        """Task-specific checks and lookups once the session and tokenizer exist; a bundle
        the task cannot use fails here, at load time, not on the first call."""

    @property
    def providers(self) -> list[str]:
        """The execution providers the sessions really run on (after any fallback)."""
        return list(dict.fromkeys(p for model in self.models.values() for p in model.providers))

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


def checked_call(call: Callable[..., Any]) -> Callable[..., Any]:
    """``call`` behind the checks every pipeline shares: arguments bound to its signature
    (an unknown name is an ``InputError`` listing the accepted ones), ``batch_size`` an int
    >= 1, and transformers' ``num_workers`` accepted and dropped."""
    signature = inspect.signature(call)
    parameters = list(signature.parameters.values())[1:]
    named = [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    accepted = ", ".join(named + list(COMMON_ARGUMENTS))
    # Only the inputs go by position (transformers ignores or refuses anything after them),
    # unless the pipeline takes ``*args`` (QA's forms, zero-shot's labels) and checks them.
    inputs = [p.name for p in parameters if p.kind is p.POSITIONAL_OR_KEYWORD and p.default is p.empty]
    takes_args = any(p.kind is p.VAR_POSITIONAL for p in parameters)

    @functools.wraps(call)
    def checked(self: Pipeline, *args: Any, **kwargs: Any) -> Any:
        for name in COMMON_ARGUMENTS:
            check_count(name, kwargs.pop(name, None), minimum=0)
        if len(args) > len(inputs) and not takes_args:
            raise InputError(
                f"{self.task} takes {len(inputs)} positional argument{'s' if len(inputs) != 1 else ''} "
                f"({', '.join(inputs)}) but got {len(args)}; pass the others by name: {accepted}"
            )
        unknown = [name for name in kwargs if name not in named]
        if unknown:
            raise InputError(
                f"{self.task} got unknown argument{'s' if len(unknown) > 1 else ''} "
                f"{', '.join(map(repr, unknown))}; it accepts: {accepted}"
            )
        try:
            bound = signature.bind(self, *args, **kwargs)
        except TypeError as err:  # missing inputs, too many positional arguments
            raise InputError(f"{self.task}: {err}; it accepts: {accepted}") from None
        check_count("batch_size", bound.arguments.get("batch_size"))
        return call(self, *args, **kwargs)

    return checked


def check_count(name: str, value: Any, minimum: int = 1) -> None:
    """``value`` is None or an int >= ``minimum`` (not a bool, float or numeric string)."""
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum} (or None for the default), got {value!r}")


def check_text(text: str, where: str) -> str:
    """Refuse what the ``tokenizers`` library cannot take: a string that is not valid
    Unicode (a lone surrogate such as ``"\\ud800"``; transformers fails there with a
    TypeError). Every text a pipeline tokenizes comes through here."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:
            raise InputError(
                f"{where} has a lone surrogate {text[err.start]!r} at position {err.start}, which is not valid "
                "Unicode text; decode the source with errors='replace' or drop it"
            ) from None
    return text


def text_batch(inputs: Any, name: str = "inputs") -> tuple[list[str], bool]:
    """``(texts, was_single)`` for a string or a list of strings; anything else is refused."""
    if isinstance(inputs, str):
        return [check_text(inputs, name)], True
    if isinstance(inputs, (list, tuple)):
        for index, item in enumerate(inputs):
            if not isinstance(item, str):
                raise InputError(f"{name}[{index}] is {type(item).__name__}; expected a string")
            check_text(item, f"{name}[{index}]")
        return list(inputs), False
    raise InputError(f"{name} is {type(inputs).__name__}; expected a string or a list of strings")


def check_fits(encodings: Sequence[Any], limit: int | None, hint: str = "pass truncation=True") -> None:
    """With truncation off, an input longer than the model maximum is refused here, naming
    it, instead of failing inside the graph (position embeddings run out)."""
    if not limit:
        return
    for index, encoding in enumerate(encodings):
        if len(encoding.ids) > limit:
            raise InputError(
                f"inputs[{index}] is {len(encoding.ids)} tokens, longer than the model's {limit}-token maximum; "
                f"shorten it or {hint}"
            )


#: transformers' truncation values -> the ``tokenizers`` strategy (None: no truncation).
TRUNCATION = {True: "longest_first", "longest_first": "longest_first", "only_first": "only_first",
              "only_second": "only_second", False: None, "do_not_truncate": None}
#: transformers' padding values. Batches here are always padded to their longest row
#: behind the attention mask, so each value gives the results transformers gives.
PADDING = (True, False, "longest", "max_length", "do_not_pad")


def truncation_strategy(value: Any) -> str | None:
    """The ``tokenizers`` strategy for transformers' ``truncation`` argument, or None."""
    if not isinstance(value, (bool, str)) or value not in TRUNCATION:
        raise InputError(f"truncation must be one of {', '.join(map(repr, TRUNCATION))}; got {value!r}")
    return TRUNCATION[value]


def check_padding(value: Any) -> None:
    if not isinstance(value, (bool, str)) or value not in PADDING:
        raise InputError(f"padding must be one of {', '.join(map(repr, PADDING))}; got {value!r}")


def chunks(count: int, batch_size: int | None) -> Iterator[slice]:
    check_count("batch_size", batch_size)
    size = batch_size or DEFAULT_BATCH_SIZE
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
    check_count("batch_size", batch_size)
    size = batch_size or DEFAULT_BATCH_SIZE
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
