"""onnxruntime's usage telemetry, turned off unless the user turns it on.

Official onnxruntime builds (Windows, and Linux since about 1.29) record a ``ProcessInfo``
event when onnxruntime creates its environment, which happens on ``import onnxruntime``;
on Linux they write a device id and an event store under
``$XDG_CACHE_HOME/Microsoft/DeveloperTools/.onnxruntime`` and, about ten seconds later,
look up ``mobile.events.data.microsoft.com`` in DNS to upload it (onnxruntime 1.32, seen
with strace; SECURITY.md has the details). An app that runs a model on a user's device
should not announce itself, so:

- ``ORT_DISABLE_TELEMETRY=1`` is put in the environment when edgeformers.runtime is
  imported, unless the user set that variable already (``0`` keeps telemetry on). It is
  the only switch that also stops the import-time event, so it must precede the first
  ``import onnxruntime``;
- :func:`disable_events` calls ``onnxruntime.disable_telemetry_events()`` before the first
  session, which stops later events even when the app imported onnxruntime first.
"""

from __future__ import annotations

import os
import threading
from types import ModuleType

ENV_VAR = "ORT_DISABLE_TELEMETRY"

_lock = threading.Lock()
_disabled = False


def default_off() -> None:
    """Turn onnxruntime's telemetry off for this process unless the user chose otherwise."""
    os.environ.setdefault(ENV_VAR, "1")


def disable_events(onnxruntime: ModuleType) -> None:
    """Call ``onnxruntime.disable_telemetry_events()`` once per process, unless the user
    asked for telemetry with ``ORT_DISABLE_TELEMETRY=0``."""
    global _disabled
    with _lock:
        if _disabled or os.environ.get(ENV_VAR, "1").strip().lower() in ("0", "false", "no", "off"):
            return
        off = getattr(onnxruntime, "disable_telemetry_events", None)  # absent in very old builds
        if off is not None:
            off()
        _disabled = True
