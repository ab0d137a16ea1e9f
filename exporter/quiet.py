"""Third-party noise silenced while optimum exports a graph.

A first-time user of ``edgeformers export`` should see edgeformers' own progress, not
deprecation notices addressed to optimum's and transformers' maintainers. Each filter
names one exact message (or torch's tracer category) and applies only inside
:func:`quiet_export`; anything else still shows, and nothing is silenced globally.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

#: logger name -> exact log messages dropped from it during an export.
LOG_NOISE: dict[str, frozenset[str]] = {
    # optimum passes torch_dtype to from_pretrained; transformers 4.56+ renamed it.
    "transformers.configuration_utils": frozenset({"`torch_dtype` is deprecated! Use `dtype` instead!"}),
    "transformers.modeling_utils": frozenset({"`torch_dtype` is deprecated! Use `dtype` instead!"}),
    # A hint to install accelerate, which edgeformers does not need.
    "optimum.exporters.onnx.base": frozenset(
        {"Weight deduplication check in the ONNX export requires accelerate. Please install accelerate to run it."}
    ),
}

#: (category, regex matching the start of the message) ignored during an export.
WARNING_NOISE: tuple[tuple[type[Warning], str], ...] = (
    # optimum-onnx 0.1.0 uses torch's TorchScript exporter, which torch 2.9+ deprecates.
    (DeprecationWarning, r"You are using the legacy TorchScript-based ONNX export"),
    (DeprecationWarning, r"The feature will be removed\. Please remove usage of this function"),
    (DeprecationWarning, r"`torch\.jit\.script` is deprecated"),
)


class _DropMessages(logging.Filter):
    def __init__(self, messages: frozenset[str]) -> None:
        super().__init__()
        self.messages = messages

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() not in self.messages


@contextmanager
def quiet_export() -> Iterator[None]:
    """Silence the known third-party messages of an optimum export, for its duration only."""
    added: list[tuple[logging.Logger, logging.Filter]] = []
    with warnings.catch_warnings():
        # torch's tracer narrates every data-dependent branch; validation checks the result.
        warnings.simplefilter("ignore", category=_tracer_warning())
        for category, message in WARNING_NOISE:
            warnings.filterwarnings("ignore", message=message, category=category)
        for name, messages in LOG_NOISE.items():
            logger, drop = logging.getLogger(name), _DropMessages(messages)
            logger.addFilter(drop)
            added.append((logger, drop))
        try:
            yield
        finally:
            for logger, drop in added:
                logger.removeFilter(drop)


def _tracer_warning() -> type[Warning]:
    import torch

    return getattr(torch.jit, "TracerWarning", Warning)
