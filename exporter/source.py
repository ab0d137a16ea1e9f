"""Where a checkpoint comes from: a local folder, or a Hub id (through the Hub cache)."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeformers.models.errors import ExportError

logger = logging.getLogger(__name__)

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
# Enough to export and validate: configs, tokenizer files and weights, not every file of the repo.
_HUB_FILES = ["*.json", "*.txt", "*.model", "*.safetensors", "pytorch_model*.bin", "*.py"]


@dataclass(frozen=True)
class Source:
    path: Path
    hub_id: str | None = None
    revision: str | None = None

    def describe(self) -> dict[str, Any]:
        if self.hub_id:
            return {"hub_id": self.hub_id, "revision": self.revision}
        return {"path": str(self.path)}


def resolve_source(source: str, revision: str | None = None) -> Source:
    """A checkpoint folder for ``source``; a Hub id is fetched via ``huggingface_hub``,
    which honours ``HF_HUB_OFFLINE`` and ``HF_HUB_CACHE`` like every HF tool."""
    local = Path(source).expanduser()
    if local.exists():
        if not local.is_dir():
            raise ExportError(f"SOURCE {source} is a file; expected a checkpoint folder holding config.json")
        if not (local / "config.json").is_file():
            raise ExportError(f"SOURCE {source} has no config.json; expected a transformers checkpoint folder")
        return Source(local.resolve())
    if not _HUB_ID.match(source) or source.startswith((".", "/", "~")):
        raise ExportError(f"SOURCE {source} does not exist (neither a local folder nor a Hub model id)")
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(source, revision=revision, allow_patterns=_HUB_FILES))
    except Exception as err:  # the hub client raises many kinds: offline, 404, auth, HTTP
        raise ExportError(
            f"SOURCE {source} is not a local folder, and the Hugging Face Hub could not provide it: "
            f"{type(err).__name__}: {err}"
        ) from None
    if not (folder / "config.json").is_file():
        raise ExportError(f"Hub model {source} has no config.json; expected a transformers checkpoint")
    logger.info("using %s from the Hub cache at %s", source, folder)
    return Source(folder, hub_id=source, revision=folder.name)
