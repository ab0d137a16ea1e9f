"""Opening a bundle folder: the manifest, its files, and their integrity.

Folders without a manifest (a plain ``optimum-cli export onnx`` output, or a
transformers.js-style repo) are opened too: the same manifest is built in memory from
``config.json``, the catalog and the ONNX file names.

Every file is reached through :meth:`Bundle.file`, which checks the name stays inside the
folder (``bundle_files``), compares the size with the manifest, and with ``verify`` its
sha256. Opening checks the shared files (configs, tokenizer); a variant's graphs and the
external-data files they name are checked when that variant is loaded, so a bundle whose
other variants were deleted still loads the one that is left.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgeformers.models.dtypes import parse_onnx_file_name
from edgeformers.models.errors import BundleError, ChecksumError
from edgeformers.models.families import FAMILIES
from edgeformers.models.processing import (
    check_config,
    check_sentence_bert_config,
    check_tokenizer_config,
    sentence_transformers_settings,
    text_max_length,
)
from edgeformers.models.tasks import TASKS, resolve_task
from edgeformers.runtime.bundle_files import (
    MAX_CONFIG_BYTES,
    MAX_TOKENIZER_BYTES,
    BundleFolder,
    parse_json,
    read_json_file,
    read_limited,
    sha256_regular,
)
from edgeformers.runtime.foreign_generation import infer_generation
from edgeformers.runtime.manifest import MANIFEST_NAME, Manifest, Variant
from edgeformers.runtime.onnx_scan import external_data_files

logger = logging.getLogger(__name__)

#: Files the runtime reads without a manifest entry naming them; each goes through the
#: same path check, and under ``verify`` must be listed in ``files`` to be read at all.
IMPLICIT_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
    "preprocessor_config.json",
)
#: Read only to build the manifest of a folder that has none (sentence-transformers).
SENTENCE_FILES = ("modules.json", "1_Pooling/config.json", "sentence_bert_config.json")

#: Value checks for the config files whose values the runtime uses.
_CONFIG_CHECKS: dict[str, Callable[[dict[str, Any], str], None]] = {
    "config.json": check_config,
    "tokenizer_config.json": check_tokenizer_config,
    "sentence_bert_config.json": check_sentence_bert_config,
}
_SIZE_LIMITS = {"tokenizer.json": MAX_TOKENIZER_BYTES}

# sha256 results already checked in this process, keyed by the file's identity (device,
# inode, size, mtime, ctime: ctime cannot be set by a user, so an edited file is hashed
# again even if its mtime was put back): hashing a large graph is the slow part of
# opening a bundle, so each file is hashed once.
_VERIFIED: dict[tuple[int, int, int, int, int], str] = {}
_VERIFIED_LOCK = threading.Lock()

_COMPONENTS = ("model", "encoder_model", "decoder_model_merged", "decoder_model", "decoder_with_past_model")


class Bundle:
    """An opened bundle: ``path`` as the caller gave it, the validated ``manifest``, and
    whether sha256 sums are checked (``verify``)."""

    def __init__(self, folder: BundleFolder, manifest: Manifest, has_manifest: bool, verify: bool = False) -> None:
        self.folder = folder
        self.path = folder.given
        self.manifest = manifest
        self.has_manifest = has_manifest
        self.verify = verify
        self._graphs: dict[tuple[str, str], Path] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Bundle({str(self.path)!r}, task={self.manifest.task!r}, variants={list(self.manifest.variants)})"

    @classmethod
    def open(cls, path: str | os.PathLike[str], task: str | None = None, verify: bool = False) -> Bundle:
        """Open ``path``: the manifest validated, the shared files checked (sizes always,
        sha256 too when ``verify``). The variant's own files are checked when it loads."""
        folder = BundleFolder(path)
        if folder.resolve(MANIFEST_NAME, str(folder.given)) is not None:
            bundle = cls(folder, Manifest.read(folder), has_manifest=True, verify=verify)
        else:
            bundle = cls(folder, infer_manifest(folder, task), has_manifest=False, verify=verify)
        bundle.check_shared_files()
        return bundle

    @property
    def nothing_to_verify(self) -> str | None:
        """Why sha256 sums cannot be checked here, or None when the manifest lists files."""
        if not self.has_manifest:
            return f"{self.path} has no {MANIFEST_NAME}, so nothing in it can be verified"
        if not self.manifest.files:
            return f"{self.path}/{MANIFEST_NAME} lists no files, so nothing in it can be verified"
        return None

    def check_shared_files(self) -> None:
        """Check the files every variant needs, and the config files the runtime reads."""
        if self.verify and self.nothing_to_verify:
            warnings.warn(self.nothing_to_verify + "; it is used unchecked", UserWarning, stacklevel=3)
        for name in self.manifest.shared_files():
            self.file(name)
        for name in IMPLICIT_FILES:
            if self.folder.exists(name):
                real = self.file(name)
                limit = _SIZE_LIMITS.get(name, MAX_CONFIG_BYTES)
                if os.stat(real).st_size > limit:
                    raise BundleError(f"{self.path}/{name} is {os.stat(real).st_size:,} bytes; the limit is {limit:,}")
                if name != "tokenizer.json":  # parsed by the tokenizers library when a pipeline loads
                    self.read_json(name)

    def file(self, name: str, what: str | None = None) -> Path:
        """The real path of bundle file ``name``, after the checks every read goes through:
        inside the folder and a regular file; its size as the manifest records it; with
        ``verify``, its sha256, and a file the manifest does not list is refused."""
        real = self.folder.path(name, what or str(self.path))
        entry = self.manifest.files.get(name)
        if entry is None:
            if self.verify and self.manifest.files:
                raise ChecksumError(
                    f"{self.path}: {name} is read by the runtime but has no entry in {MANIFEST_NAME}'s files, "
                    "so it cannot be verified"
                )
            return real
        info = os.stat(real)
        if info.st_size != entry.size:
            raise ChecksumError(
                f"{self.path / name}: size {info.st_size} bytes differs from the {entry.size} recorded in "
                f"{MANIFEST_NAME}; the file was modified or truncated"
            )
        if self.verify:
            _check_hash(real, info, entry.sha256, self.path / name)
        return real

    def variant(self, dtype: str) -> Variant:
        """A variant the manifest lists and whose files are all present."""
        try:
            variant = self.manifest.variants[dtype]
        except KeyError:
            raise BundleError(
                f"{self.path} has no {dtype!r} variant; it has: {', '.join(self.manifest.variants) or 'none'}"
            ) from None
        missing = self.missing_files(dtype)
        if missing:
            present = ", ".join(self.present_variants()) or "none"
            raise BundleError(
                f"{self.path}: variant {dtype!r} is listed in {MANIFEST_NAME} but its files are missing "
                f"({', '.join(missing)}); variants present: {present}"
            )
        return variant

    def missing_files(self, dtype: str) -> list[str]:
        """The listed files of a variant (graphs, their weights) that are not in the folder."""
        return [
            name for name in self.manifest.listed_files(dtype)
            if self.folder.resolve(name, f"{self.path}: variant {dtype!r}") is None
        ]

    def present_variants(self) -> list[str]:
        return [dtype for dtype in self.manifest.variants if not self.missing_files(dtype)]

    def onnx_path(self, dtype: str, component: str = "model") -> Path:
        """The checked graph file of a variant component, ready for onnxruntime: its
        external-data locations parsed from the graph and checked to stay inside the bundle,
        and every file it reads size-checked (and hashed with ``verify``)."""
        key = (dtype, component)
        with self._lock:
            if key in self._graphs:
                return self._graphs[key]
        variant = self.variant(dtype)
        if component not in variant.files:
            raise BundleError(f"{self.path}: variant {dtype!r} has no {component!r} graph")
        name = variant.files[component]
        real = self.file(name, f"{self.path}: variant {dtype!r}")
        for data_name, _ in external_data_files(self.folder, name, real, f"{self.path}/{name}"):
            self.file(data_name, f"{self.path}/{name}: external data")
        graph = self.folder.for_onnxruntime(name, real)
        with self._lock:
            self._graphs[key] = graph
        return graph

    def variant_files(self, dtype: str) -> list[str]:
        """Every file a variant reads (its graphs and their external data), all checked."""
        names: list[str] = []
        for component, graph in self.variant(dtype).files.items():
            real = self.onnx_path(dtype, component)
            names.append(graph)
            names.extend(n for n, _ in external_data_files(self.folder, graph, real, f"{self.path}/{graph}"))
        return list(dict.fromkeys(names))

    def variant_bytes(self, dtype: str) -> int:
        """Bytes on disk of a variant: its graphs and their external weights files."""
        return sum(os.stat(self.folder.path(name)).st_size for name in self.variant_files(dtype))

    def read_json(self, name: str, required: bool = False) -> dict[str, Any]:
        """A JSON object file of the bundle through :meth:`file`, size- and depth-limited
        and its values checked when the runtime uses them; ``{}`` if absent."""
        if self.folder.resolve(name, str(self.path)) is None:
            if required:
                raise BundleError(f"{self.path}: required file {name} is missing")
            return {}
        where = f"{self.path}/{name}"
        data = parse_json(read_limited(self.file(name), _SIZE_LIMITS.get(name, MAX_CONFIG_BYTES), where), where)
        if not isinstance(data, dict):
            raise BundleError(f"{where}: expected a JSON object, got {type(data).__name__}")
        check = _CONFIG_CHECKS.get(name)
        if check is not None:
            check(data, where)
        return data


def _check_hash(file: Path, info: os.stat_result, expected: str, shown: Path) -> None:
    key = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
    with _VERIFIED_LOCK:
        known = _VERIFIED.get(key)
    actual = known or sha256_regular(file, str(shown))
    if actual != expected:
        raise ChecksumError(
            f"{shown}: sha256 {actual[:12]}… differs from the {expected[:12]}… recorded in {MANIFEST_NAME}; "
            "the file was modified"
        )
    with _VERIFIED_LOCK:
        _VERIFIED[key] = actual


def read_json(path: Path, required: bool = False) -> dict[str, Any]:
    """A JSON object file outside a bundle (a checkpoint's own files): size- and
    depth-limited, special files refused. Bundle files go through :meth:`Bundle.read_json`."""
    return read_json_file(path, required=required)


def _find_variants(folder: BundleFolder) -> dict[str, Variant]:
    """ONNX files in ``onnx/`` (transformers.js layout) or at the top (optimum-cli layout),
    each name checked like a manifest entry."""
    variants: dict[str, dict[str, str]] = {}
    for sub in ("onnx", ""):
        base = folder.folder(sub) if sub else folder.root
        if base is None:
            continue
        for entry in sorted(os.listdir(base)):
            parsed = parse_onnx_file_name(entry, _COMPONENTS)
            if parsed:
                name = f"{sub}/{entry}" if sub else entry
                folder.path(name, f"{folder.given}: ONNX file")
                component, dtype = parsed
                variants.setdefault(dtype, {}).setdefault(component, name)
        if variants:
            break
    return {dtype: Variant(dtype=dtype, files=files) for dtype, files in variants.items()}


#: Generative heads saved under other class names (GPT2LMHeadModel, BartForConditionalGeneration,
#: MarianMTModel), as the exporter's head check accepts them; a catalog family's tasks decide
#: (T5/BART/Marian: text2text-generation, the first of their tasks; Whisper: speech recognition).
_GENERATIVE_CLASSES = {"CausalLM": ("LMHeadModel",), "Seq2SeqLM": ("ForConditionalGeneration", "MTModel")}


def _task_from_config(config: dict[str, Any]) -> str | None:
    """The task a checkpoint's saved class implies (``BertForTokenClassification`` ->
    token-classification), from the catalog's task heads; only tasks the model type's family
    can do count (``Wav2Vec2ForSequenceClassification`` is audio-classification, not text)."""
    family = next((f for f in FAMILIES.values() if config.get("model_type") in f.model_types), None)
    heads = [(ending, spec.name) for spec in TASKS.values() if spec.head
             for ending in (f"For{spec.head}", *spec.head_classes,
                            *(_GENERATIVE_CLASSES.get(spec.head, ()) if family else ()))]
    for architecture in config.get("architectures") or []:
        for suffix, task in heads:
            if architecture.endswith(suffix) and (family is None or task in family.tasks):
                return task
        if architecture.endswith("Model"):
            return "feature-extraction"
    return None


def infer_manifest(folder: BundleFolder | Path, task: str | None) -> Manifest:
    """The manifest a folder without ``edgeformers.json`` would have had."""
    folder = folder if isinstance(folder, BundleFolder) else BundleFolder(folder)
    config = folder.read_json("config.json", required=True)
    check_config(config, f"{folder.given}/config.json")
    task = task or _task_from_config(config)
    if task is None:
        raise BundleError(
            f"{folder.given} has no {MANIFEST_NAME} and its config.json names no architecture to guess the task "
            "from; pass the task explicitly"
        )
    variants = _find_variants(folder)
    if not variants:
        raise BundleError(f"{folder.given} holds no ONNX model (looked for onnx/model*.onnx and model*.onnx)")
    model_type = config.get("model_type")
    if not isinstance(model_type, str):
        raise BundleError(f"{folder.given / 'config.json'}: missing field 'model_type'")
    task = resolve_task(task).name
    # Generative tasks: the generation section from the graphs' names and the configs.
    generation, variants = infer_generation(folder, config, task, variants)
    manifest = Manifest(
        task=task,
        model_type=model_type,
        variants=variants,
        labels={int(k): v for k, v in (config.get("id2label") or {}).items()},
        processing=processing_settings(folder, config),
        generation=generation,
        source={"path": str(folder.given)},
    )
    # The inferred manifest passes the same schema as a written one.
    return Manifest.from_dict(manifest.to_dict(), where=f"{folder.given} (manifest inferred from its files)")


def processing_settings(folder: BundleFolder | Path, config: dict[str, Any]) -> dict[str, Any]:
    """What the runtime's pre/post-processing needs, from the checkpoint's own files."""
    folder = folder if isinstance(folder, BundleFolder) else BundleFolder(folder)
    tokenizer_config = folder.read_json("tokenizer_config.json")
    check_tokenizer_config(tokenizer_config, f"{folder.given}/tokenizer_config.json")
    sentence_bert = folder.read_json("sentence_bert_config.json")
    check_sentence_bert_config(sentence_bert, f"{folder.given}/sentence_bert_config.json")
    settings: dict[str, Any] = {
        "max_length": text_max_length(config, tokenizer_config),
        "problem_type": config.get("problem_type"),
    }
    modules = folder.read_json_any("modules.json")
    sentence = sentence_transformers_settings(
        [m for m in modules if isinstance(m, dict)] if isinstance(modules, list) else [],
        folder.read_json("1_Pooling/config.json"),
        sentence_bert,
    )
    if sentence:
        settings["sentence_embedding"] = sentence
    return settings
