"""Where a checkpoint comes from: a local folder, or a Hub id (through the Hub cache).

A checkpoint is data from a stranger, and exporting or validating it must not run any of
its code. Two things in a Hugging Face repository can: Python files that a config names
in ``auto_map`` (custom modelling or tokenizer code, loaded with ``trust_remote_code``),
and pickle weights (``pytorch_model.bin``, read with ``torch.load``). So only configs,
tokenizer files and safetensors weights are fetched; a checkpoint with ``auto_map`` is
refused; pickle weights are used only when the user asks (``--allow-pickle``); and every
transformers/optimum call in the exporter passes ``trust_remote_code=False``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeformers.models.errors import ExportError

logger = logging.getLogger(__name__)

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
# Enough to export and validate: configs, tokenizer files and safetensors weights. No *.py
# (custom code) and no pickle weights unless asked for.
_HUB_FILES = ("*.json", "*.txt", "*.model", "*.safetensors")
_HUB_PICKLE_FILES = ("pytorch_model*.bin",)
# What transformers' from_pretrained looks for, in its order: safetensors first.
SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")
# Files whose ``auto_map`` would make transformers import the checkpoint's own Python code.
CODE_MAPS = ("config.json", "tokenizer_config.json", "preprocessor_config.json")


@dataclass(frozen=True)
class Source:
    path: Path
    hub_id: str | None = None
    revision: str | None = None

    def describe(self) -> dict[str, Any]:
        if self.hub_id:
            return {"hub_id": self.hub_id, "revision": self.revision}
        return {"path": str(self.path)}


def resolve_source(source: str, revision: str | None = None, allow_pickle: bool = False) -> Source:
    """A checkpoint folder for ``source``, checked to hold no custom code and safetensors
    weights (or pickle weights with ``allow_pickle``). A Hub id is fetched via
    ``huggingface_hub``, which honours ``HF_HUB_OFFLINE`` and ``HF_HUB_CACHE`` like every
    HF tool; only the files the export reads are downloaded."""
    local = Path(source).expanduser()
    if local.exists():
        if not local.is_dir():
            raise ExportError(f"SOURCE {source} is a file; expected a checkpoint folder holding config.json")
        if not (local / "config.json").is_file():
            raise ExportError(f"SOURCE {source} has no config.json; expected a transformers checkpoint folder")
        checkpoint = Source(local.resolve())
    else:
        checkpoint = _from_hub(source, revision, allow_pickle)
    refuse_custom_code(checkpoint.path, source)
    _check_weights(checkpoint, source, allow_pickle)
    return checkpoint


def _from_hub(source: str, revision: str | None, allow_pickle: bool) -> Source:
    if not _HUB_ID.match(source) or source.startswith((".", "/", "~")):
        raise ExportError(f"SOURCE {source} does not exist (neither a local folder nor a Hub model id)")
    from huggingface_hub import snapshot_download

    patterns = [*_HUB_FILES, *(_HUB_PICKLE_FILES if allow_pickle else ())]
    try:
        folder = Path(snapshot_download(source, revision=revision, allow_patterns=patterns))
    except Exception as err:  # the hub client raises many kinds: offline, 404, auth, HTTP
        raise ExportError(
            f"SOURCE {source} is not a local folder, and the Hugging Face Hub could not provide it: "
            f"{type(err).__name__}: {err}"
        ) from None
    if not (folder / "config.json").is_file():
        raise ExportError(f"Hub model {source} has no config.json; expected a transformers checkpoint")
    logger.info("using %s from the Hub cache at %s", source, folder)
    return Source(folder, hub_id=source, revision=folder.name)


def refuse_custom_code(folder: Path, origin: str | Path) -> None:
    """Refuse a folder whose configs name their own Python classes (``auto_map``): exporting
    it would mean running that code, and the standard classes would not reproduce it."""
    from edgeformers.runtime.bundle import read_json

    for name in CODE_MAPS:
        auto_map = read_json(folder / name).get("auto_map")
        if auto_map:
            classes = ", ".join(sorted(auto_map)) if isinstance(auto_map, dict) else str(auto_map)
            raise ExportError(
                f"{origin}: {name} has 'auto_map' ({classes}), so the checkpoint needs its own Python code; "
                "edgeformers never runs code from a checkpoint (no trust_remote_code) and exports only "
                "architectures that transformers itself implements"
            )


def _check_weights(checkpoint: Source, origin: str, allow_pickle: bool) -> None:
    """transformers loads safetensors when present; otherwise it would torch.load a pickle,
    which can run arbitrary code, so that takes the user's explicit consent."""
    folder = checkpoint.path
    if any((folder / name).is_file() for name in SAFE_WEIGHTS):
        return
    pickles = [name for name in PICKLE_WEIGHTS if (folder / name).is_file()]
    if pickles and allow_pickle:
        logger.warning("%s: loading pickle weights %s (--allow-pickle)", origin, pickles[0])
        return
    expected = " or ".join(SAFE_WEIGHTS)
    if pickles:
        raise ExportError(
            f"{origin}: has no safetensors weights ({expected}), only pickle weights ({pickles[0]}); "
            "loading a pickle can run code, so edgeformers refuses it unless you pass --allow-pickle "
            "(or convert the checkpoint to safetensors)"
        )
    if checkpoint.hub_id and not allow_pickle:
        raise ExportError(
            f"{origin}: the Hub repository has no safetensors weights ({expected}); pickle weights "
            "(pytorch_model.bin) are not downloaded because loading them can run code: pass --allow-pickle "
            "to use them"
        )
    raise ExportError(f"{origin}: has no model weights; expected {' or '.join(SAFE_WEIGHTS + PICKLE_WEIGHTS)}")
