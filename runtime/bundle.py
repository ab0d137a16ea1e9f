"""Opening a bundle folder: the manifest, its files, and their integrity.

Folders without a manifest (a plain ``optimum-cli export onnx`` output, or a
transformers.js-style repo) are opened too: the same manifest is built in memory from
``config.json``, the catalog and the ONNX file names.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeformers.models.dtypes import EXTERNAL_DATA_SUFFIX, parse_onnx_file_name
from edgeformers.models.errors import BundleError, ChecksumError
from edgeformers.models.processing import (
    sentence_transformers_settings,
    text_max_length,
)
from edgeformers.models.tasks import resolve_task
from edgeformers.runtime.manifest import MANIFEST_NAME, Manifest, Variant, sha256_file

logger = logging.getLogger(__name__)

# sha256 results already checked in this process, keyed by (path, size, mtime): hashing a
# large graph is the slow part of opening a bundle, so each file is hashed once.
_VERIFIED: dict[tuple[str, int, int], str] = {}
_VERIFIED_LOCK = threading.Lock()

_COMPONENTS = ("model", "encoder_model", "decoder_model_merged", "decoder_model", "decoder_with_past_model")


@dataclass
class Bundle:
    path: Path
    manifest: Manifest
    has_manifest: bool

    @classmethod
    def open(cls, path: str | os.PathLike[str], task: str | None = None, verify: bool = False) -> Bundle:
        """Open ``path``; sizes are always checked, sha256 too when ``verify`` is true."""
        folder = Path(path)
        if not folder.is_dir():
            raise BundleError(f"bundle folder {folder} does not exist")
        if (folder / MANIFEST_NAME).is_file():
            bundle = cls(folder, Manifest.read(folder), has_manifest=True)
        else:
            bundle = cls(folder, infer_manifest(folder, task), has_manifest=False)
        bundle.check_files(hash_files=verify)
        return bundle

    def variant(self, dtype: str) -> Variant:
        try:
            return self.manifest.variants[dtype]
        except KeyError:
            raise BundleError(
                f"{self.path} has no {dtype!r} variant; it has: {', '.join(self.manifest.variants) or 'none'}"
            ) from None

    def onnx_path(self, dtype: str, component: str = "model") -> Path:
        variant = self.variant(dtype)
        if component not in variant.files:
            raise BundleError(f"{self.path}: variant {dtype!r} has no {component!r} graph")
        return self.path / variant.files[component]

    def variant_bytes(self, dtype: str) -> int:
        """Bytes on disk of a variant: its graphs and their external weights files."""
        total = 0
        for graph in self.variant(dtype).files.values():
            for name in (graph, graph + EXTERNAL_DATA_SUFFIX):
                if (self.path / name).is_file():
                    total += (self.path / name).stat().st_size
        return total

    def read_json(self, name: str, required: bool = False) -> dict[str, Any]:
        return read_json(self.path / name, required=required)

    def check_files(self, hash_files: bool = False) -> None:
        """Refuse a bundle whose files are missing or differ from the manifest."""
        for name, entry in self.manifest.files.items():
            file = self.path / name
            try:
                stat = file.stat()
            except FileNotFoundError:
                raise BundleError(f"{self.path}: file {name} listed in {MANIFEST_NAME} is missing") from None
            if stat.st_size != entry.size:
                raise ChecksumError(
                    f"{file}: size {stat.st_size} bytes differs from the {entry.size} recorded in "
                    f"{MANIFEST_NAME}; the file was modified or truncated"
                )
            if hash_files:
                _check_hash(file, stat, entry.sha256)
        for variant in self.manifest.variants.values():
            for graph in variant.files.values():
                if not (self.path / graph).is_file():
                    raise BundleError(f"{self.path}: ONNX file {graph} of variant {variant.dtype!r} is missing")


def _check_hash(file: Path, stat: os.stat_result, expected: str) -> None:
    key = (str(file.resolve()), stat.st_size, stat.st_mtime_ns)
    with _VERIFIED_LOCK:
        known = _VERIFIED.get(key)
    actual = known or sha256_file(file)
    if actual != expected:
        raise ChecksumError(
            f"{file}: sha256 {actual[:12]}… differs from the {expected[:12]}… recorded in {MANIFEST_NAME}; "
            "the file was modified"
        )
    with _VERIFIED_LOCK:
        _VERIFIED[key] = actual


def read_json(path: Path, required: bool = False) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if required:
            raise BundleError(f"{path.parent}: required file {path.name} is missing") from None
        return {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BundleError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise BundleError(f"{path}: expected a JSON object")
    return data


def _find_variants(folder: Path) -> dict[str, Variant]:
    """ONNX files in ``onnx/`` (transformers.js layout) or at the top (optimum-cli layout)."""
    variants: dict[str, dict[str, str]] = {}
    for sub in ("onnx", ""):
        base = folder / sub if sub else folder
        if not base.is_dir():
            continue
        for file in sorted(base.glob("*.onnx")):
            parsed = parse_onnx_file_name(file.name, _COMPONENTS)
            if parsed:
                component, dtype = parsed
                variants.setdefault(dtype, {}).setdefault(component, file.relative_to(folder).as_posix())
        if variants:
            break
    return {dtype: Variant(dtype=dtype, files=files) for dtype, files in variants.items()}


def _task_from_config(config: dict[str, Any]) -> str | None:
    for architecture in config.get("architectures") or []:
        for suffix, task in (
            ("ForSequenceClassification", "text-classification"),
            ("ForTokenClassification", "token-classification"),
            ("ForQuestionAnswering", "question-answering"),
            ("ForMaskedLM", "fill-mask"),
            ("Model", "feature-extraction"),
        ):
            if architecture.endswith(suffix):
                return task
    return None


def infer_manifest(folder: Path, task: str | None) -> Manifest:
    """The manifest a folder without ``edgeformers.json`` would have had."""
    config = read_json(folder / "config.json", required=True)
    task = task or _task_from_config(config)
    if task is None:
        raise BundleError(
            f"{folder} has no {MANIFEST_NAME} and its config.json names no architecture to guess the task "
            "from; pass the task explicitly"
        )
    variants = _find_variants(folder)
    if not variants:
        raise BundleError(f"{folder} holds no ONNX model (looked for onnx/model*.onnx and model*.onnx)")
    model_type = config.get("model_type")
    if not isinstance(model_type, str):
        raise BundleError(f"{folder / 'config.json'}: missing field 'model_type'")
    return Manifest(
        task=resolve_task(task).name,
        model_type=model_type,
        variants=variants,
        labels={int(k): v for k, v in (config.get("id2label") or {}).items()},
        processing=processing_settings(folder, config),
        source={"path": str(folder)},
    )


def processing_settings(folder: Path, config: dict[str, Any]) -> dict[str, Any]:
    """What the runtime's pre/post-processing needs, from the checkpoint's own files."""
    tokenizer_config = read_json(folder / "tokenizer_config.json")
    settings: dict[str, Any] = {
        "max_length": text_max_length(config, tokenizer_config),
        "problem_type": config.get("problem_type"),
    }
    sentence = sentence_transformers_settings(
        _read_list(folder / "modules.json"),
        read_json(folder / "1_Pooling" / "config.json"),
        read_json(folder / "sentence_bert_config.json"),
    )
    if sentence:
        settings["sentence_embedding"] = sentence
    return settings


def _read_list(path: Path) -> list[dict[str, Any]]:
    """modules.json is a JSON list, unlike every other config file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [m for m in data if isinstance(m, dict)] if isinstance(data, list) else []
