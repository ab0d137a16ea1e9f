"""The bundle manifest, ``edgeformers.json``: the one owner of its schema.

The exporter writes it and the runtime reads it; both go through :class:`Manifest`, so a
field is added in one place. Reading validates every field (type, range, enum) and a
violation is a ``BundleError`` naming the field path, e.g.
``edgeformers.json: variants.q8.files.model: ...``.

Unknown keys at the top level, in a variant, in ``processing``, ``source`` and in a
validation report are tolerated and kept as they are (so a manifest written by a newer
edgeformers of the same ``format_version`` round-trips); an incompatible change bumps
``format_version``, which is refused when newer than this reader. The small closed
records (a ``files`` entry, ``processing.sentence_embedding``) refuse unknown keys.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeformers.models.dtypes import DTYPES
from edgeformers.models.errors import BundleError, EdgeformersError
from edgeformers.models.tasks import resolve_task
from edgeformers.runtime.bundle_files import BundleFolder, check_relative_name, sha256_regular

MANIFEST_NAME = "edgeformers.json"
FORMAT_MARKER = "edgeformers"
FORMAT_VERSION = 1
#: Longest token sequence a manifest may set (int32 positions; no real model comes close).
MAX_SEQUENCE_LENGTH = 2**31 - 1
PROBLEM_TYPES = ("single_label_classification", "multi_label_classification", "regression")
POOLINGS = ("mean", "cls", "max")

_SHA256 = re.compile(r"[0-9a-f]{64}")
_LABEL_ID = re.compile(r"[0-9]{1,9}")
_COMPONENT = re.compile(r"[A-Za-z0-9_.-]{1,100}")
_KNOWN_TOP = (
    "format", "format_version", "task", "model_type", "variants", "files", "source", "inputs", "outputs",
    "labels", "processing", "generation", "validation", "tools",
)


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
    extra: dict[str, Any] = field(default_factory=dict, compare=True)

    def to_dict(self) -> dict[str, Any]:
        return {**self.extra, "dtype": self.dtype, "files": dict(self.files), "quantization": self.quantization}


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
    #: Top-level keys this version does not know, kept verbatim.
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.extra,
            "format": FORMAT_MARKER,
            "task": self.task,
            "model_type": self.model_type,
            "variants": {dtype: variant.to_dict() for dtype, variant in self.variants.items()},
            "files": {name: {"size": e.size, "sha256": e.sha256} for name, e in self.files.items()},
            "source": self.source,
            "inputs": list(self.inputs),
            "outputs": list(self.outputs),
            "labels": {str(k): v for k, v in self.labels.items()},
            "processing": self.processing,
            "generation": self.generation,
            "validation": self.validation,
            "tools": self.tools,
            "format_version": self.format_version,
        }

    def write(self, folder: Path) -> Path:
        """Write atomically: a reader sees the old manifest or the new one, never half."""
        path = folder / MANIFEST_NAME
        staging = folder / f".{MANIFEST_NAME}.{os.getpid()}.partial"
        staging.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(staging, path)
        return path

    @classmethod
    def read(cls, folder: Path | BundleFolder) -> Manifest:
        """Read and validate ``folder``'s manifest (size- and depth-limited, and refused if
        it is a link out of the folder or a special file)."""
        bundle = folder if isinstance(folder, BundleFolder) else BundleFolder(folder)
        if bundle.resolve(MANIFEST_NAME, str(bundle.given)) is None:
            raise BundleError(f"{bundle.given} has no {MANIFEST_NAME}; is it an edgeformers bundle?")
        return cls.from_dict(bundle.read_json(MANIFEST_NAME), where=f"{bundle.given}/{MANIFEST_NAME}")

    @classmethod
    def from_dict(cls, data: Any, where: str = MANIFEST_NAME) -> Manifest:
        """Validate ``data`` (a parsed manifest) field by field."""
        return _Reader(where).manifest(data)

    def variant_of(self, name: str) -> str | None:
        """The dtype of the variant a ``files`` entry belongs to (a graph, or a graph's
        ``_data`` external weights), or None for a file every variant shares."""
        for dtype, variant in self.variants.items():
            for graph in variant.files.values():
                if name == graph or name.startswith(graph + "_data"):
                    return dtype
        return None

    def shared_files(self) -> list[str]:
        """``files`` entries that belong to no variant: configs, tokenizer, vocabularies."""
        return [name for name in self.files if self.variant_of(name) is None]

    def listed_files(self, dtype: str) -> list[str]:
        """A variant's graphs and the ``files`` entries of their external weights."""
        graphs = list(self.variants[dtype].files.values())
        return graphs + [n for n in self.files if n not in graphs and self.variant_of(n) == dtype]


class _Reader:
    """Validation of one manifest; every error names ``where`` and the field path."""

    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, path: str, problem: str) -> BundleError:
        return BundleError(f"{self.where}: {path}: {problem}"[:600])

    def require(self, data: dict[str, Any], name: str, path: str = "") -> Any:
        if name not in data:
            raise BundleError(f"{self.where}: {path + ': ' if path else ''}missing field {name!r}")
        return data[name]

    def dict_(self, value: Any, path: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(path, f"should be an object, got {_kind(value)}")
        return value

    def str_(self, value: Any, path: str, empty: bool = False) -> str:
        if not isinstance(value, str) or (not empty and not value):
            raise self.fail(path, f"should be a non-empty string, got {_kind(value)}")
        return value

    def int_(self, value: Any, path: str, low: int, high: int | None = None) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.fail(path, f"should be an integer, got {_kind(value)}")
        if value < low or (high is not None and value > high):
            bounds = f">= {low}" + ("" if high is None else f" and <= {high}")
            raise self.fail(path, f"should be {bounds}, got {value}")
        return value

    def bool_(self, value: Any, path: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(path, f"should be true or false, got {_kind(value)}")
        return value

    def number(self, value: Any, path: str) -> float | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            isinstance(value, float) and not math.isfinite(value)
        ):
            raise self.fail(path, f"should be a finite number or null, got {_kind(value)}")
        return value

    def enum(self, value: Any, path: str, choices: tuple[str, ...], nullable: bool = False) -> str | None:
        if value is None and nullable:
            return None
        if not isinstance(value, str) or value not in choices:
            allowed = ", ".join(choices) + (" or null" if nullable else "")
            raise self.fail(path, f"should be one of {allowed}, got {_short(value)}")
        return value

    def str_list(self, value: Any, path: str) -> list[str]:
        if not isinstance(value, list):
            raise self.fail(path, f"should be a list of strings, got {_kind(value)}")
        for i, item in enumerate(value):
            self.str_(item, f"{path}[{i}]")
        return list(value)

    def file_path(self, value: Any, path: str) -> str:
        return check_relative_name(value, f"{self.where}: {path}")

    def manifest(self, data: Any) -> Manifest:
        if not isinstance(data, dict):
            raise BundleError(f"{self.where}: expected a JSON object at the top level, got {_kind(data)}")
        marker = self.require(data, "format")
        if marker != FORMAT_MARKER:
            raise self.fail("format", f"should be {FORMAT_MARKER!r}, got {_short(marker)}; not an edgeformers manifest")
        version = self.require(data, "format_version")
        if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
            raise BundleError(
                f"{self.where}: format_version {version} was written by a newer edgeformers; "
                f"this one reads up to {FORMAT_VERSION}"
            )
        version = self.int_(version, "format_version", 1, FORMAT_VERSION)
        task = self.str_(self.require(data, "task"), "task")
        try:
            task = resolve_task(task).name
        except EdgeformersError:
            raise self.fail("task", f"names an unknown task {_short(task)}") from None
        model_type = self.str_(self.require(data, "model_type"), "model_type")
        variants = self.variants(self.require(data, "variants"))
        return Manifest(
            task=task,
            model_type=model_type,
            variants=variants,
            files=self.files(data.get("files", {})),
            source=self.source(data.get("source", {})),
            inputs=self.str_list(data.get("inputs", []), "inputs"),
            outputs=self.str_list(data.get("outputs", []), "outputs"),
            labels=self.labels(data.get("labels", {})),
            processing=self.processing(data.get("processing", {})),
            generation=self.dict_(data.get("generation", {}), "generation"),
            validation=self.validation(data.get("validation", {})),
            tools=self.tools(data.get("tools", {})),
            format_version=version,
            extra={k: v for k, v in data.items() if k not in _KNOWN_TOP},
        )

    def variants(self, value: Any) -> dict[str, Variant]:
        raw = self.dict_(value, "variants")
        if not raw:
            raise self.fail("variants", "lists no variant; a bundle needs at least one")
        variants = {}
        for dtype, entry in raw.items():
            path = f"variants.{dtype}"
            if dtype not in DTYPES:
                raise self.fail(path, f"{_short(dtype)} is not a known dtype ({', '.join(DTYPES)})")
            entry = self.dict_(entry, path)
            if "dtype" in entry and entry["dtype"] != dtype:
                raise self.fail(f"{path}.dtype", f"is {_short(entry['dtype'])} but the variant is keyed {dtype!r}")
            files = self.dict_(self.require(entry, "files", path), f"{path}.files")
            if not files:
                raise self.fail(f"{path}.files", "lists no graph")
            checked = {}
            for component, name in files.items():
                if not isinstance(component, str) or not _COMPONENT.fullmatch(component):
                    raise self.fail(f"{path}.files", f"component name {_short(component)} is not a plain name")
                checked[component] = self.file_path(name, f"{path}.files.{component}")
            quantization = entry.get("quantization")
            if quantization is not None:
                self.dict_(quantization, f"{path}.quantization")
            extra = {k: v for k, v in entry.items() if k not in ("dtype", "files", "quantization")}
            variants[dtype] = Variant(dtype=dtype, files=checked, quantization=quantization, extra=extra)
        return variants

    def files(self, value: Any) -> dict[str, FileEntry]:
        entries = {}
        for name, entry in self.dict_(value, "files").items():
            path = f"files.{name}"
            self.file_path(name, "files")
            if name == MANIFEST_NAME:
                raise self.fail(path, "the manifest cannot list itself")
            entry = self.dict_(entry, path)
            unknown = sorted(set(entry) - {"size", "sha256"})
            if unknown:
                raise self.fail(path, f"unknown keys {unknown}; an entry holds size and sha256")
            size = self.int_(self.require(entry, "size", path), f"{path}.size", 0)
            digest = self.require(entry, "sha256", path)
            if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
                raise self.fail(f"{path}.sha256", f"should be 64 lowercase hex digits, got {_short(digest)}")
            entries[name] = FileEntry(size=size, sha256=digest)
        return entries

    def source(self, value: Any) -> dict[str, Any]:
        source = self.dict_(value, "source")
        for key in ("hub_id", "revision", "path"):
            if source.get(key) is not None:
                self.str_(source[key], f"source.{key}", empty=True)
        return source

    def labels(self, value: Any) -> dict[int, str]:
        labels = {}
        for key, name in self.dict_(value, "labels").items():
            if not isinstance(key, str) or not _LABEL_ID.fullmatch(key):
                raise self.fail("labels", f"key {_short(key)} is not a class id (a non-negative integer)")
            labels[int(key)] = self.str_(name, f"labels.{key}", empty=True)
        return labels

    def processing(self, value: Any) -> dict[str, Any]:
        processing = self.dict_(value, "processing")
        if processing.get("max_length") is not None:
            self.int_(processing["max_length"], "processing.max_length", 1, MAX_SEQUENCE_LENGTH)
        self.enum(processing.get("problem_type"), "processing.problem_type", PROBLEM_TYPES, nullable=True)
        sentence = processing.get("sentence_embedding")
        if sentence is not None:
            path = "processing.sentence_embedding"
            sentence = self.dict_(sentence, path)
            unknown = sorted(set(sentence) - {"pooling", "normalize", "max_length"})
            if unknown:
                raise self.fail(path, f"unknown keys {unknown}; it holds pooling, normalize and max_length")
            self.enum(self.require(sentence, "pooling", path), f"{path}.pooling", POOLINGS)
            if "normalize" in sentence:
                self.bool_(sentence["normalize"], f"{path}.normalize")
            if "max_length" in sentence:
                self.int_(sentence["max_length"], f"{path}.max_length", 1, MAX_SEQUENCE_LENGTH)
        return processing

    def validation(self, value: Any) -> dict[str, Any]:
        reports = self.dict_(value, "validation")
        for dtype, report in reports.items():
            path = f"validation.{dtype}"
            if dtype not in DTYPES:
                raise self.fail(path, f"{_short(dtype)} is not a known dtype ({', '.join(DTYPES)})")
            report = self.dict_(report, path)
            for key in ("passed", "degraded"):
                if key in report:
                    self.bool_(report[key], f"{path}.{key}")
            for key in ("threshold", "value"):
                if key in report:
                    self.number(report[key], f"{path}.{key}")
            for key in ("metric", "reference"):
                if key in report:
                    self.str_(report[key], f"{path}.{key}")
        return reports

    def tools(self, value: Any) -> dict[str, str]:
        tools = self.dict_(value, "tools")
        for name, version in tools.items():
            self.str_(version, f"tools.{name}", empty=True)
        return tools


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    if type(value) in (int, float):
        return f"the number {value!r}"
    return names.get(type(value), type(value).__name__)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file the exporter made (runtime reads go through bundle_files)."""
    return sha256_regular(path, str(path))


def describe_files(folder: Path) -> dict[str, FileEntry]:
    """Size and sha256 of every file of a bundle but the manifest (and hidden staging
    files), keyed by POSIX path relative to ``folder``. A link out of the folder or a
    special file is refused, not followed."""
    bundle = BundleFolder(folder)
    names = []
    for top, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for file in files:
            name = (Path(top) / file).relative_to(folder).as_posix()
            if file != MANIFEST_NAME and not file.startswith("."):
                names.append(name)
    entries = {}
    for name in sorted(names):
        real = bundle.path(name, str(folder))
        entries[name] = FileEntry(size=real.stat().st_size, sha256=sha256_regular(real, f"{folder}/{name}"))
    return entries
