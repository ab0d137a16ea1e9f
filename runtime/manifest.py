"""The bundle manifest, ``edgeformers.json``: the one owner of its schema.

The exporter writes it and the runtime reads it; both go through :class:`Manifest`, so a
field is added in one place. Reading validates every field and names the bad one.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgeformers.models.dtypes import DTYPES
from edgeformers.models.errors import BundleError
from edgeformers.models.tasks import resolve_task

MANIFEST_NAME = "edgeformers.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class FileEntry:
    size: int
    sha256: str


@dataclass(frozen=True)
class Variant:
    """One weight variant: ``files`` maps a graph component ("model", "encoder_model" …)
    to its path inside the bundle."""

    dtype: str
    files: dict[str, str]
    quantization: dict[str, Any] | None = None


@dataclass
class Manifest:
    task: str
    model_type: str
    variants: dict[str, Variant]
    files: dict[str, FileEntry] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    labels: dict[int, str] = field(default_factory=dict)
    processing: dict[str, Any] = field(default_factory=dict)
    generation: dict[str, Any] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)
    tools: dict[str, str] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["labels"] = {str(k): v for k, v in self.labels.items()}
        return {"format": "edgeformers", **data}

    def write(self, folder: Path) -> Path:
        """Write atomically: a reader sees the old manifest or the new one, never half."""
        path = folder / MANIFEST_NAME
        staging = folder / f".{MANIFEST_NAME}.{os.getpid()}.partial"
        staging.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(staging, path)
        return path

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        path = folder / MANIFEST_NAME
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise BundleError(f"{folder} has no {MANIFEST_NAME}; is it an edgeformers bundle?") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise BundleError(f"{path} is not valid JSON: {err}") from None
        return cls.from_dict(data, where=str(path))

    @classmethod
    def from_dict(cls, data: Any, where: str = MANIFEST_NAME) -> Manifest:
        if not isinstance(data, dict):
            raise BundleError(f"{where}: expected a JSON object at the top level")
        version = _field(data, "format_version", int, where)
        if version > FORMAT_VERSION:
            raise BundleError(
                f"{where}: format_version {version} was written by a newer edgeformers; "
                f"this one reads up to {FORMAT_VERSION}"
            )
        task = _field(data, "task", str, where)
        try:
            resolve_task(task)
        except Exception:
            raise BundleError(f"{where}: field 'task' names an unknown task {task!r}") from None
        variants = {}
        for dtype, raw in _field(data, "variants", dict, where).items():
            if dtype not in DTYPES:
                raise BundleError(f"{where}: variants.{dtype} is not a known dtype ({', '.join(DTYPES)})")
            files = _field(raw, "files", dict, f"{where}: variants.{dtype}")
            variants[dtype] = Variant(dtype=dtype, files=dict(files), quantization=raw.get("quantization"))
        files = {}
        for name, raw in data.get("files", {}).items():
            size = _field(raw, "size", int, f"{where}: files.{name}")
            digest = _field(raw, "sha256", str, f"{where}: files.{name}")
            files[name] = FileEntry(size=size, sha256=digest)
        labels_raw = data.get("labels") or {}
        try:
            labels = {int(k): str(v) for k, v in labels_raw.items()}
        except (AttributeError, ValueError):
            raise BundleError(f"{where}: field 'labels' must map integer ids to names") from None
        return cls(
            task=task,
            model_type=_field(data, "model_type", str, where),
            variants=variants,
            files=files,
            source=data.get("source") or {},
            inputs=list(data.get("inputs") or []),
            outputs=list(data.get("outputs") or []),
            labels=labels,
            processing=data.get("processing") or {},
            generation=data.get("generation") or {},
            validation=data.get("validation") or {},
            tools=data.get("tools") or {},
            format_version=version,
        )


def _field(data: Any, name: str, kind: type, where: str) -> Any:
    if not isinstance(data, dict) or name not in data:
        raise BundleError(f"{where}: missing field {name!r}")
    value = data[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BundleError(f"{where}: field {name!r} should be {kind.__name__}, got {type(value).__name__}")
    return value


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def describe_files(folder: Path) -> dict[str, FileEntry]:
    """Size and sha256 of every file of a bundle but the manifest (and hidden staging
    files), keyed by POSIX path relative to ``folder``."""
    names = sorted(
        path.relative_to(folder).as_posix()
        for path in folder.rglob("*")
        if path.is_file() and path.name != MANIFEST_NAME and not path.name.startswith(".")
    )
    return {name: FileEntry(size=os.path.getsize(folder / name), sha256=sha256_file(folder / name)) for name in names}
