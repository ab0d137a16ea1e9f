"""Property tests for the bundle loader's parsers: a valid manifest mutated at random
(any field given any JSON value, fields deleted, unknown keys added, values nested
deep), random path names and random JSON bytes are each either accepted or refused with
a ``BundleError`` — never another exception. An accepted manifest round-trips.

``EDGEFORMERS_HYPOTHESIS_EXAMPLES`` sets the examples per property (CI: 300).
"""

from __future__ import annotations

import copy
import json
import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeformers.models.errors import BundleError
from edgeformers.runtime.bundle_files import MAX_JSON_DEPTH, check_relative_name, parse_json
from edgeformers.runtime.manifest import Manifest

EXAMPLES = int(os.environ.get("EDGEFORMERS_HYPOTHESIS_EXAMPLES", "300"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SHA = "0123456789abcdef" * 4
#: A manifest as the exporter writes it (fp32 + q8, external data, labels, sentence settings).
VALID: dict[str, Any] = {
    "format": "edgeformers",
    "format_version": 1,
    "task": "text-classification",
    "model_type": "bert",
    "variants": {
        "fp32": {"dtype": "fp32", "files": {"model": "onnx/model.onnx"}, "quantization": None},
        "q8": {"dtype": "q8", "files": {"model": "onnx/model_quantized.onnx"},
               "quantization": {"method": "dynamic", "per_channel": True, "op_types": ["MatMul"]}},
    },
    "files": {
        "config.json": {"size": 887, "sha256": SHA},
        "onnx/model.onnx": {"size": 43766, "sha256": SHA},
        "onnx/model.onnx_data": {"size": 149248, "sha256": SHA},
        "onnx/model_quantized.onnx": {"size": 40000, "sha256": SHA},
        "tokenizer.json": {"size": 13714, "sha256": SHA},
    },
    "source": {"hub_id": "org/model", "revision": None},
    "inputs": ["input_ids", "attention_mask", "token_type_ids"],
    "outputs": ["logits"],
    "labels": {"0": "NEGATIVE", "1": "POSITIVE"},
    "processing": {
        "max_length": 128,
        "problem_type": "single_label_classification",
        "sentence_embedding": {"pooling": "mean", "normalize": True, "max_length": 256},
    },
    "generation": {},
    "validation": {
        "fp32": {"reference": "pytorch", "inputs": 6, "max_abs_diff": {"logits": 1e-6}, "passed": True},
        "q8": {"reference": "fp32", "metric": "label_agreement", "value": 0.95, "threshold": 0.9,
               "passed": True, "degraded": False},
    },
    "tools": {"edgeformers": "0.1.0", "onnxruntime": "1.32.0"},
}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path in a JSON document, the root included."""
    paths = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            paths.extend(_paths(value, (*prefix, key)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            paths.extend(_paths(value, (*prefix, index)))
    return paths


def _at(node: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        node = node[key]
    return node


@st.composite
def mutated_manifests(draw: st.DrawFn) -> Any:
    data = copy.deepcopy(VALID)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        paths = _paths(data)
        path = draw(st.sampled_from(paths))
        operation = draw(st.sampled_from(("replace", "delete", "add key", "nest", "rename key")))
        if not path:
            if operation == "replace":
                data = draw(json_values)
            continue
        parent, key = _at(data, path[:-1]), path[-1]
        if operation == "replace":
            parent[key] = draw(json_values)
        elif operation == "delete":
            del parent[key]
        elif operation == "add key" and isinstance(parent[key], dict):
            parent[key][draw(st.text(max_size=12))] = draw(json_values)
        elif operation == "nest":
            depth = draw(st.integers(min_value=1, max_value=MAX_JSON_DEPTH + 5))
            value = parent[key]
            for _ in range(depth):
                value = draw(st.sampled_from(([value], {"x": value})))
            parent[key] = value
        elif operation == "rename key" and isinstance(parent, dict):
            parent[draw(st.text(max_size=12))] = parent.pop(key)
    return data


def test_the_base_manifest_is_valid() -> None:
    manifest = Manifest.from_dict(copy.deepcopy(VALID))
    assert set(manifest.variants) == {"fp32", "q8"}
    assert manifest.shared_files() == ["config.json", "tokenizer.json"]
    assert manifest.listed_files("fp32") == ["onnx/model.onnx", "onnx/model.onnx_data"]


@SETTINGS
@given(mutated_manifests())
def test_mutated_manifest_is_accepted_or_refused_with_bundle_error(data: Any) -> None:
    try:
        manifest = Manifest.from_dict(data)
    except BundleError as err:
        assert str(err).startswith("edgeformers.json")  # names the file, then the field
        return
    written = json.dumps(manifest.to_dict(), sort_keys=True)  # NaN != NaN: compare the JSON text
    again = Manifest.from_dict(json.loads(written))
    assert json.dumps(again.to_dict(), sort_keys=True) == written  # what is accepted round-trips


@SETTINGS
@given(st.text(max_size=40) | st.sampled_from(["..", "a/../b", "/etc/passwd", "C:/x", "a\\b", "a//b", "./a", "a\0"]))
def test_path_names_are_canonical_relative_or_refused(name: str) -> None:
    try:
        accepted = check_relative_name(name, "test")
    except BundleError:
        return
    parts = accepted.split("/")
    assert accepted == name and not accepted.startswith("/")
    assert "\\" not in accepted and "\0" not in accepted
    assert all(part not in ("", ".", "..") for part in parts)


@SETTINGS
@given(st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
def test_json_bytes_parse_or_are_refused_with_bundle_error(data: bytes) -> None:
    try:
        parse_json(data, "x.json")
    except BundleError as err:
        assert str(err).startswith("x.json")
