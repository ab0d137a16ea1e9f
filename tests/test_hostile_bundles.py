"""Hostile bundles: a generated corpus of malformed or malicious bundles, each made from one
small valid export, and each refused with a ``BundleError`` by ``pipeline()``,
``Bundle.open(verify=True)`` and ``edgeformers inspect --verify`` — never another
exception, never a hang, never a file opened outside the bundle (an audit hook watches
every ``open`` and directory listing; a decoy secret sits next to each bundle), and no
error message that reveals the decoy's size or hash.

``.venv/bin/python -m tests.test_hostile_bundles`` prints the table of cases per
category and outcome.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeformers.models.errors import BundleError
from tests.fixtures.floors import floor_for

ACTIONS = ("pipeline", "open", "inspect")
TIMEOUT_S = 30
DECOY = "secret.txt"
DECOY_BYTES = b"s3cret!" * 1111  # 7777 bytes: a size no bundle file has
DECOY_SIZE_TEXTS = ("7777", "7,777")
DECOY_SHA = hashlib.sha256(DECOY_BYTES).hexdigest()
#: "onnxruntime": refused only by onnxruntime's own checks, after edgeformers let it through.
OUTCOMES = ("refused", "accepted", "onnxruntime", "crash", "hang", "read outside", "leak")

Make = Callable[[Path, Path], None]


@dataclass(frozen=True)
class Case:
    category: str
    name: str
    make: Make  # (bundle folder, case folder holding the decoy and outside/)
    dtype: str | None = None
    actions: tuple[str, ...] = ACTIONS
    expect: str = "refused"  # controls: "accepted"


# ---------------------------------------------------------------- mutation helpers


def _manifest(bundle: Path) -> dict[str, Any]:
    return json.loads((bundle / "edgeformers.json").read_text())


def _write_manifest(bundle: Path, data: Any) -> None:
    (bundle / "edgeformers.json").write_text(json.dumps(data))


def _keys(field: str | tuple[str, ...]) -> list[str]:
    return list(field) if isinstance(field, tuple) else field.split(".")


def _set(field: str | tuple[str, ...], value: Any) -> Make:
    """Set a manifest field by dotted path ("variants.fp32.files.model") or key tuple."""

    def make(bundle: Path, _: Path) -> None:
        data = _manifest(bundle)
        *parents, last = _keys(field)
        node = data
        for key in parents:
            node = node[key]
        node[last] = value
        _write_manifest(bundle, data)

    return make


def _delete(dotted: str) -> Make:
    def make(bundle: Path, _: Path) -> None:
        data = _manifest(bundle)
        *parents, last = dotted.split(".")
        node = data
        for key in parents:
            node = node[key]
        del node[last]
        _write_manifest(bundle, data)

    return make


def _refresh(bundle: Path, name: str) -> None:
    """Record a file's real size and sha256 in the manifest, as a forger would."""
    data = _manifest(bundle)
    content = (bundle / name).read_bytes()
    data["files"][name] = {"size": len(content), "sha256": hashlib.sha256(content).hexdigest()}
    _write_manifest(bundle, data)


def _content(name: str, content: bytes, refresh: bool = True) -> Make:
    def make(bundle: Path, _: Path) -> None:
        (bundle / name).write_bytes(content)
        if refresh and (bundle / "edgeformers.json").exists():
            _refresh(bundle, name)

    return make


def _json_edit(name: str, change: Callable[[dict[str, Any]], None], refresh: bool = True) -> Make:
    def make(bundle: Path, _: Path) -> None:
        data = json.loads((bundle / name).read_text())
        change(data)
        (bundle / name).write_text(json.dumps(data))
        if refresh and (bundle / "edgeformers.json").exists():
            _refresh(bundle, name)

    return make


def _link(name: str, target: str | Callable[[Path, Path], str]) -> Make:
    """Replace ``name`` with a symlink; ``target`` may depend on the case folder."""

    def make(bundle: Path, case: Path) -> None:
        path = bundle / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        path.symlink_to(target(bundle, case) if callable(target) else target)

    return make


def _fifo(name: str) -> Make:
    def make(bundle: Path, _: Path) -> None:
        (bundle / name).unlink(missing_ok=True)
        os.mkfifo(bundle / name)

    return make


def _socket(name: str) -> Make:
    def make(bundle: Path, _: Path) -> None:
        (bundle / name).unlink(missing_ok=True)
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(bundle / name))
        server.close()

    return make


def _folder(name: str) -> Make:
    def make(bundle: Path, _: Path) -> None:
        (bundle / name).unlink()
        (bundle / name).mkdir()
        (bundle / name / "x").write_text("{}")

    return make


def _foreign(make: Make | None = None) -> Make:
    """The same bundle without its manifest (a plain optimum/transformers.js folder)."""

    def wrapped(bundle: Path, case: Path) -> None:
        (bundle / "edgeformers.json").unlink()
        if make is not None:
            make(bundle, case)

    return wrapped


def _all(*makes: Make) -> Make:
    def make(bundle: Path, case: Path) -> None:
        for step in makes:
            step(bundle, case)

    return make


def _deep(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


# ------------------------------------------------------------------ ONNX mutations


def _ext_tensor(name: str, location: str) -> Any:
    import onnx

    tensor = onnx.TensorProto(name=name, data_type=onnx.TensorProto.FLOAT, dims=[4])
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "16")):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


def _graph_edit(name: str, change: Callable[[Any, str], None], location: str, refresh: bool = True) -> Make:
    """Edit graph ``name`` with the onnx package (tests may use it; the runtime may not)."""

    def make(bundle: Path, case: Path) -> None:
        import onnx

        model = onnx.load(str(bundle / name), load_external_data=False)
        change(model, location)
        (bundle / name).write_bytes(model.SerializeToString())
        if refresh and (bundle / "edgeformers.json").exists():
            _refresh(bundle, name)

    return make


def _initializer_location(model: Any, location: str) -> None:
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
                return
    raise AssertionError("the graph has no external initializer")


def _subgraph(kind: str) -> Callable[[Any, str], None]:
    """Put a tensor with an external-data ``location`` where a walker could miss it."""

    def change(model: Any, location: str) -> None:
        import onnx
        from onnx import helper

        out = helper.make_tensor_value_info("h_out", onnx.TensorProto.FLOAT, [4])

        def const_graph(graph_name: str, tensor: Any) -> Any:
            node = helper.make_node("Constant", [], ["h_out"], value=tensor)
            return helper.make_graph([node], graph_name, [], [out])

        hostile = _ext_tensor("h_t", location)
        plain = helper.make_tensor("h_p", onnx.TensorProto.FLOAT, [4], [0.0] * 4)
        cond = helper.make_node("Constant", [], ["h_cond"], value=helper.make_tensor("c", 9, [], [True]))
        if kind == "if-then":
            node = helper.make_node("If", ["h_cond"], ["h_if"], then_branch=const_graph("t", hostile),
                                    else_branch=const_graph("e", plain))
        elif kind == "if-else":
            node = helper.make_node("If", ["h_cond"], ["h_if"], then_branch=const_graph("t", plain),
                                    else_branch=const_graph("e", hostile))
        elif kind == "nested-if":
            inner = helper.make_node("If", ["h_cond"], ["h_out"], then_branch=const_graph("it", hostile),
                                     else_branch=const_graph("ie", plain))
            outer = helper.make_graph([inner], "o", [], [out])
            node = helper.make_node("If", ["h_cond"], ["h_if"], then_branch=outer, else_branch=const_graph("e", plain))
        elif kind == "loop-body-initializer":
            body = helper.make_graph(
                [helper.make_node("Identity", ["h_t"], ["h_out"])], "body",
                [helper.make_tensor_value_info("i", onnx.TensorProto.INT64, []),
                 helper.make_tensor_value_info("c", onnx.TensorProto.BOOL, [])],
                [helper.make_tensor_value_info("c_out", onnx.TensorProto.BOOL, []), out], [hostile],
            )
            node = helper.make_node("Loop", ["", "h_cond"], ["h_if"], body=body)
        elif kind == "scan-body":
            node = helper.make_node("Scan", ["h_cond"], ["h_if"], body=const_graph("s", hostile), num_scan_inputs=1)
        elif kind == "attribute-tensors":
            node = helper.make_node("Custom", [], ["h_if"], domain="hostile", payload=[plain, hostile])
        elif kind == "constant-node":
            node = helper.make_node("Constant", [], ["h_if"], value=hostile)
        elif kind == "sparse-initializer":
            indices = helper.make_tensor("h_i", onnx.TensorProto.INT64, [1], [0])
            model.graph.sparse_initializer.append(helper.make_sparse_tensor(hostile, indices, [8]))
            return
        elif kind == "function":
            function = helper.make_function(
                "hostile", "F", [], ["h_out"], [helper.make_node("Constant", [], ["h_out"], value=hostile)],
                [helper.make_opsetid("", 17)],
            )
            model.functions.append(function)
            return
        elif kind == "training-info":
            info = onnx.TrainingInfoProto()
            info.initialization.CopyFrom(helper.make_graph([], "init", [], [], [hostile]))
            model.training_info.append(info)
            return
        else:
            raise AssertionError(kind)
        model.graph.node.extend([cond, node])

    return change


# ----------------------------------------------------------------------- the corpus


def _outside(rel: str) -> Callable[[Path, Path], str]:
    return lambda bundle, case: str(case / "outside" / rel)


def build_cases() -> list[Case]:
    cases: list[Case] = []

    def add(category: str, name: str, make: Make, **kwargs: Any) -> None:
        cases.append(Case(category, name, make, **kwargs))

    # 1. Paths in the manifest that leave the bundle, or are not canonical.
    bad_paths = {
        "parent": "../outside/onnx/model.onnx",
        "deep-parent": "onnx/../../outside/onnx/model.onnx",
        "absolute-outside": "/CASE/outside/onnx/model.onnx",
        "absolute-inside": "/CASE/bundle/onnx/model.onnx",
        "etc-passwd": "/etc/passwd",
        "backslash": "onnx\\model.onnx",
        "backslash-parent": "..\\outside\\onnx\\model.onnx",
        "drive": "C:/onnx/model.onnx",
        "nul": "onnx/model.onnx\0.txt",
        "empty": "",
        "dot-prefix": "./onnx/model.onnx",
        "double-slash": "onnx//model.onnx",
        "dot": ".",
        "folder": "onnx",
        "not-a-string": 7,
        "list": ["onnx/model.onnx"],
        "dev-zero": "/dev/zero",
    }
    for dtype, field in (("fp32", "variants.fp32.files.model"), ("q8", "variants.q8.files.model")):
        for label, value in bad_paths.items():

            def make(bundle: Path, case: Path, field: str = field, value: Any = value) -> None:
                if isinstance(value, str):
                    value = value.replace("/CASE", str(case))
                _set(field, value)(bundle, case)

            add("manifest paths", f"{field}={label}", make, dtype=dtype)
    for label, value in (("parent", "../secret.txt"), ("absolute", "/CASE/secret.txt"), ("etc", "/etc/passwd"),
                         ("dev-zero", "/dev/zero"), ("deep", "onnx/../../secret.txt"), ("backslash", "..\\secret.txt")):

        def make(bundle: Path, case: Path, value: str = value) -> None:
            data = _manifest(bundle)
            data["files"][value.replace("/CASE", str(case))] = {"size": 7777, "sha256": DECOY_SHA}
            _write_manifest(bundle, data)

        add("manifest paths", f"files[{label}]", make)

    # 2. Symlinks out of the bundle (to identical copies, so sizes and hashes would match).
    linked = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
              "edgeformers.json", "onnx/model.onnx", "onnx/model.onnx_data", "onnx/model_quantized.onnx",
              "onnx/model_quantized.onnx_data")
    for name in linked:
        dtype = "q8" if "quantized" in name else None
        up = "../" * (name.count("/") + 2)
        add("symlinks out", f"{name} -> absolute copy", _link(name, _outside(name)), dtype=dtype)
        add("symlinks out", f"{name} -> relative copy", _link(name, f"{up}outside/{name}"), dtype=dtype)
    add("symlinks out", "onnx/ -> outside folder", _link("onnx", _outside("onnx")))
    add("symlinks out", "onnx/ -> ../outside/onnx", _link("onnx", "../outside/onnx"))
    add("symlinks out", "tokenizer_config.json -> decoy", _link("tokenizer_config.json", "../secret.txt"))
    add("symlinks out", "config.json -> dangling outside", _link("config.json", "../no-such-file.json"))
    add("symlinks out", "tokenizer.json -> /etc/passwd", _link("tokenizer.json", "/etc/passwd"))
    add("symlinks out", "config.json -> /proc/self/environ", _link("config.json", "/proc/self/environ"))
    add("symlinks out", "inside link then out", _all(_link("onnx/x.json", "../../outside/config.json"),
                                                      _link("config.json", "onnx/x.json")))
    add("symlinks out", "out and back in", _link("config.json", "../bundle/config.json.orig"))
    for name in ("config.json", "onnx/model.onnx", "tokenizer.json"):
        add("symlink loops", f"{name} -> itself", _link(name, Path(name).name))
    add("symlink loops", "a -> b -> a", _all(_link("config.json", "loop.json"), _link("loop.json", "config.json")))
    add("symlink loops", "onnx/ -> onnx", _link("onnx", "onnx"))
    for name in ("tokenizer_config.json", "config.json", "tokenizer.json", "edgeformers.json", "onnx/model.onnx",
                 "special_tokens_map.json"):
        add("devices", f"{name} -> /dev/zero", _link(name, "/dev/zero"))
    add("devices", "files entry /dev/zero (verify)", _set("files", {"/dev/zero": {"size": 0, "sha256": "0" * 64}}))
    try:
        os.mknod("/tmp/.edgeformers-mknod-probe", 0o600 | 0o020000, os.makedev(1, 5))
        os.unlink("/tmp/.edgeformers-mknod-probe")
        can_mknod = True
    except OSError:
        can_mknod = False
    if can_mknod:  # a device node inside the bundle itself (needs CAP_MKNOD)
        for name in ("config.json", "tokenizer.json"):

            def make(bundle: Path, case: Path, name: str = name) -> None:
                (bundle / name).unlink()
                os.mknod(bundle / name, 0o600 | 0o020000, os.makedev(1, 5))

            add("devices", f"{name} is a char device", make)

    # 3. Special files inside the bundle: FIFOs (must never block), sockets, folders.
    for name in ("tokenizer_config.json", "config.json", "tokenizer.json", "edgeformers.json",
                 "special_tokens_map.json", "onnx/model.onnx", "onnx/model.onnx_data", "vocab.txt"):
        add("special files", f"{name} is a FIFO", _fifo(name))
    add("special files", "config.json is a socket", _socket("config.json"))
    add("special files", "config.json is a folder", _folder("config.json"))
    add("special files", "onnx/model.onnx is a folder", _folder("onnx/model.onnx"))
    add("special files", "foreign: tokenizer.json FIFO", _foreign(_fifo("tokenizer.json")))
    add("special files", "foreign: 1_Pooling/config.json FIFO",
        _foreign(lambda b, c: ((b / "1_Pooling").mkdir(), os.mkfifo(b / "1_Pooling" / "config.json"))))

    # 4. JSON files: size, depth, encoding, shape.
    huge_object = b'{"pad": "' + b" " * (17 * 1024 * 1024) + b'"}'
    for name in ("config.json", "tokenizer_config.json", "special_tokens_map.json", "edgeformers.json"):
        refresh = name != "edgeformers.json"
        add("json", f"{name} deeply nested", _content(name, _deep(100_000), refresh))
        add("json", f"{name} nested 65 levels", _content(name, _deep(65), refresh))
        add("json", f"{name} over 16 MB", _content(name, huge_object, refresh))
        add("json", f"{name} not UTF-8", _content(name, b'{"a": "\xff\xfe"}', refresh))
        add("json", f"{name} UTF-16", _content(name, '{"a": 1}'.encode("utf-16"), refresh))
        add("json", f"{name} truncated", _content(name, b'{"a": ', refresh))
        add("json", f"{name} a list", _content(name, b"[1, 2]", refresh))
        add("json", f"{name} empty", _content(name, b"", refresh))
    # tokenizer.json's content is read by the tokenizers library when a pipeline loads;
    # opening and inspecting check its path, kind, size and hash only.
    only_pipeline = {"actions": ("pipeline",)}
    add("json", "tokenizer.json deeply nested", _content("tokenizer.json", _deep(100_000)), **only_pipeline)
    add("json", "tokenizer.json garbage", _content("tokenizer.json", b'{"model": {"type": "Nope"}}'), **only_pipeline)
    add("json", "tokenizer.json not UTF-8", _content("tokenizer.json", b"\xff" * 64), **only_pipeline)
    add("json", "tokenizer.json over 256 MB", _content("tokenizer.json", b" " * (257 * 1024 * 1024)))
    add("json", "manifest duplicate keys", _content(
        "edgeformers.json", b'{"format": "edgeformers", "task": "text-classification", "task": "fill-mask"}', False))

    def nan_manifest(bundle: Path, _: Path) -> None:
        data = _manifest(bundle)
        data["processing"]["max_length"] = float("nan")
        (bundle / "edgeformers.json").write_text(json.dumps(data))  # json writes NaN

    add("json", "manifest NaN max_length", nan_manifest)

    # 5. Manifest schema: wrong types, ranges and enums in every field.
    schema = [
        ("format", "other"), ("format", None), ("format_version", "1"), ("format_version", 0),
        ("format_version", -1), ("format_version", 2), ("format_version", True), ("format_version", 1.5),
        ("task", 5), ("task", "summarise"), ("task", ""), ("model_type", 1), ("model_type", ""),
        ("model_type", None), ("variants", []), ("variants", {}), ("variants", {"fp99": {"files": {"model": "x"}}}),
        ("variants.fp32", []), ("variants.fp32.dtype", "q8"), ("variants.fp32.files", []),
        ("variants.fp32.files", {}), ("variants.fp32.files", {"model": 5}), ("variants.fp32.files", {"": "x"}),
        ("variants.fp32.quantization", "dynamic"), ("files", []), ("files", "all"),
        (("files", "config.json"), 5), (("files", "config.json"), {"size": -1, "sha256": "0" * 64}),
        (("files", "config.json"), {"size": "1", "sha256": "0" * 64}), (("files", "config.json"), {"size": True, "sha256": "0" * 64}),
        (("files", "config.json"), {"size": 10**30, "sha256": "0" * 64}), (("files", "config.json"), {"size": 1, "sha256": "ABC"}),
        (("files", "config.json"), {"size": 1, "sha256": "A" * 64}), (("files", "config.json"), {"size": 1}),
        (("files", "config.json"), {"size": 1, "sha256": "0" * 64, "mode": "x"}), ("source", []),
        ("source", {"path": 5}), ("source", {"hub_id": ["x"]}), ("inputs", "input_ids"), ("inputs", [1]),
        ("outputs", {}), ("outputs", [None]), ("labels", []), ("labels", {"x": "y"}), ("labels", {"-1": "a"}),
        ("labels", {"0": 5}), ("labels", {"1e3": "a"}), ("processing", []), ("processing.max_length", -5),
        ("processing.max_length", 0), ("processing.max_length", "5"), ("processing.max_length", 1.5),
        ("processing.max_length", True), ("processing.max_length", 2**40), ("processing.problem_type", "x"),
        ("processing.problem_type", 5), ("processing.sentence_embedding", "mean"),
        ("processing.sentence_embedding", {"pooling": "sum"}),
        ("processing.sentence_embedding", {"pooling": "mean", "normalize": "yes"}),
        ("processing.sentence_embedding", {"pooling": "mean", "max_length": 0}),
        ("processing.sentence_embedding", {"pooling": "mean", "extra": 1}), ("generation", []),
        ("validation", []), ("validation", {"fp99": {}}), ("validation.q8", []), ("validation.q8.passed", "yes"),
        ("validation.q8.degraded", 1), ("validation.q8.threshold", "0.9"), ("tools", []), ("tools", {"x": 5}),
    ]
    for field, value in schema:
        label = ".".join(_keys(field))
        add("manifest schema", f"{label}={value!r}"[:90], _set(field, value))
    for field in ("format", "format_version", "task", "model_type", "variants", "variants.fp32.files"):
        add("manifest schema", f"missing {field}", _delete(field))
    add("manifest schema", "top level a list", _content("edgeformers.json", b"[]", False))
    add("manifest schema", "top level a string", _content("edgeformers.json", b'"edgeformers"', False))

    # 6. config.json / tokenizer files values the runtime uses.
    config_values = [
        ("config.json", "id2label", {"x": "y"}), ("config.json", "id2label", ["a"]), ("config.json", "id2label", {"0": 5}),
        ("config.json", "id2label", {"-1": "a"}), ("config.json", "architectures", "BertForSequenceClassification"),
        ("config.json", "architectures", [5]), ("config.json", "pad_token_id", -1), ("config.json", "pad_token_id", "0"),
        ("config.json", "pad_token_id", True), ("config.json", "model_type", 5), ("config.json", "vocab_size", 0),
        ("config.json", "max_position_embeddings", -1), ("config.json", "problem_type", "ranking"),
        ("tokenizer_config.json", "model_max_length", -5), ("tokenizer_config.json", "model_max_length", "512"),
        ("tokenizer_config.json", "model_max_length", True), ("tokenizer_config.json", "padding_side", "up"),
    ]
    for name, key, value in config_values:
        add("config values", f"{name}: {key}={value!r}", _json_edit(name, lambda d, k=key, v=value: d.__setitem__(k, v)))
    for name, key, value in config_values[:7]:
        add("config values", f"foreign {name}: {key}={value!r}",
            _foreign(_json_edit(name, lambda d, k=key, v=value: d.__setitem__(k, v), refresh=False)))
    add("config values", "foreign sentence_bert_config max_seq_length=-5",
        _foreign(_content("sentence_bert_config.json", b'{"max_seq_length": -5}', False)))
    add("config values", "foreign 1_Pooling/config.json a list",
        _foreign(lambda b, c: ((b / "1_Pooling").mkdir(), (b / "1_Pooling" / "config.json").write_text("[1]"))))
    add("config values", "foreign modules.json deeply nested",
        _foreign(_content("modules.json", b"[" * 100_000 + b"]" * 100_000, False)))
    add("config values", "foreign config.json missing", _foreign(lambda b, c: (b / "config.json").unlink()))
    add("config values", "foreign config.json no model_type",
        _foreign(_json_edit("config.json", lambda d: d.pop("model_type"), refresh=False)))

    # 7. ONNX graphs: external data out of the bundle, anywhere in the graph; broken graphs.
    locations = {
        "parent-decoy": "../../secret.txt",
        "absolute-decoy": "/CASE/secret.txt",
        "outside-copy": "../../outside/onnx/model.onnx_data",
        "etc-passwd": "/etc/passwd",
        "memory-address": "*/_ORT_MEM_ADDR_/*",
        "backslash": "..\\..\\secret.txt",
        "symlink-out": "evil_data",
    }
    for label, location in locations.items():
        for graph, dtype in (("onnx/model.onnx", "fp32"), ("onnx/model_quantized.onnx", "q8")):

            def make(bundle: Path, case: Path, graph: str = graph, location: str = location) -> None:
                if location == "evil_data":
                    (bundle / "onnx" / "evil_data").symlink_to(case / "outside" / "onnx" / "model.onnx_data")
                _graph_edit(graph, lambda m, loc: _initializer_location(m, loc), location.replace("/CASE", str(case)))(
                    bundle, case)

            add("onnx external data", f"{graph} initializer -> {label}", make, dtype=dtype)
    for kind in ("if-then", "if-else", "nested-if", "loop-body-initializer", "scan-body", "attribute-tensors",
                 "constant-node", "sparse-initializer", "function", "training-info"):
        add("onnx external data", f"{kind} -> decoy", _graph_edit("onnx/model.onnx", _subgraph(kind), "../../secret.txt"))
    add("onnx external data", "foreign: initializer -> decoy",
        _foreign(_graph_edit("onnx/model.onnx", lambda m, loc: _initializer_location(m, loc), "../../secret.txt")))
    add("onnx external data", "foreign: if-then -> decoy",
        _foreign(_graph_edit("onnx/model.onnx", _subgraph("if-then"), "../../secret.txt")))
    broken = {
        "truncated": lambda data: data[: len(data) // 2],
        "garbage": lambda data: bytes(range(256)) * 8,
        "empty": lambda data: b"",
        "wire-type-group": lambda data: b"\x0b" + data,
        "huge-length": lambda data: b"\x3a\xff\xff\xff\xff\x0f" + data[:100],
        "text": lambda data: b"this is not a graph\n",
    }
    for label, corrupt in broken.items():
        for graph, dtype in (("onnx/model.onnx", "fp32"), ("onnx/model_quantized.onnx", "q8")):

            def make(bundle: Path, case: Path, graph: str = graph, corrupt: Any = corrupt) -> None:
                _content(graph, corrupt((bundle / graph).read_bytes()))(bundle, case)

            add("onnx broken", f"{graph} {label}", make, dtype=dtype)
    add("onnx broken", "foreign: model.onnx truncated",
        _foreign(lambda b, c: (b / "onnx/model.onnx").write_bytes((b / "onnx/model.onnx").read_bytes()[:999])))

    # 8. Missing, tampered or unverifiable files.
    add("missing/tampered", "shared vocab.txt missing", lambda b, c: (b / "vocab.txt").unlink())
    add("missing/tampered", "config.json missing", lambda b, c: (b / "config.json").unlink())
    add("missing/tampered", "files lists a ghost", _set(("files", "ghost.bin"), {"size": 1, "sha256": "0" * 64}))
    # inspect lists an absent variant as such (not an error): these are load failures.
    add("missing/tampered", "fp32 weights missing", lambda b, c: (b / "onnx/model.onnx_data").unlink(), dtype="fp32",
        actions=("pipeline", "open"))
    add("missing/tampered", "every graph missing",
        lambda b, c: [p.unlink() for p in (b / "onnx").iterdir()], actions=("pipeline",))
    add("missing/tampered", "q8 asked, q8 deleted",
        lambda b, c: [p.unlink() for p in (b / "onnx").glob("model_quantized*")], dtype="q8",
        actions=("pipeline", "open"))
    add("missing/tampered", "graph grew a byte",
        lambda b, c: (b / "onnx/model.onnx").write_bytes((b / "onnx/model.onnx").read_bytes() + b"\0"))

    def flip(name: str) -> Make:
        def make(bundle: Path, _: Path) -> None:
            data = bytearray((bundle / name).read_bytes())
            data[len(data) // 2] ^= 0xFF
            (bundle / name).write_bytes(bytes(data))

        return make

    for name, dtype in (("onnx/model.onnx_data", "fp32"), ("onnx/model_quantized.onnx_data", "q8"),
                        ("tokenizer.json", None), ("vocab.txt", None)):
        add("missing/tampered", f"{name} same size, changed (verify)", flip(name), dtype=dtype, actions=("open", "inspect"))
    add("missing/tampered", "unlisted generation_config.json (verify)",
        _content("generation_config.json", b"{}", refresh=False), actions=("open", "inspect"))
    add("missing/tampered", "unlisted tokenizer.json (verify)",
        lambda b, c: _write_manifest(b, {**_manifest(b), "files": {
            k: v for k, v in _manifest(b)["files"].items() if k != "tokenizer.json"}}), actions=("open", "inspect"))

    # Controls: legitimate bundles that must still load.
    add("controls", "symlink inside to inside", _link("config.json", "config.json.orig"), expect="accepted")
    add("controls", "fp32 deleted by hand, q8 loads",
        lambda b, c: [p.unlink() for p in (b / "onnx").glob("model.onnx*")], expect="accepted")
    add("controls", "q8 deleted by hand, fp32 loads",
        lambda b, c: [p.unlink() for p in (b / "onnx").glob("model_quantized*")], expect="accepted")
    add("controls", "foreign folder", _foreign(), expect="accepted", actions=("pipeline",))
    return cases


# ------------------------------------------------------------------------ running


class _Hang(BaseException):
    pass


_WATCH: dict[str, Any] = {"case": None, "bundle": None, "hits": []}


def _audit(event: str, args: tuple[Any, ...]) -> None:
    case = _WATCH["case"]
    if case is None or event not in ("open", "os.listdir", "os.scandir"):
        return
    target = args[0] if args else None
    if target is None or isinstance(target, int):
        return
    try:
        path = os.path.abspath(os.fsdecode(target))
    except (TypeError, ValueError):
        return
    bundle = _WATCH["bundle"]
    if (path == case or path.startswith(case + os.sep)) and not (path == bundle or path.startswith(bundle + os.sep)):
        _WATCH["hits"].append(path)


_HOOKED = False


def _install_hook() -> None:
    global _HOOKED
    if not _HOOKED:
        sys.addaudithook(_audit)  # cannot be removed; idle unless a case is running
        _HOOKED = True


def _prepare(base: Path, root: Path, index: int, case: Case) -> tuple[Path, Path]:
    folder = root / f"{index:03d}"
    bundle = Path(shutil.copytree(base, folder / "bundle"))
    shutil.copytree(base, folder / "outside")
    (folder / DECOY).write_bytes(DECOY_BYTES)
    shutil.copyfile(bundle / "config.json", bundle / "config.json.orig")
    data = _manifest(bundle)
    if "config.json.orig" not in data["files"]:
        _refresh(bundle, "config.json.orig")
    case.make(bundle, folder)
    return folder, bundle


def _act(action: str, bundle: Path, dtype: str | None) -> str:
    """Run one entry point; return "accepted" or raise what it raised."""
    from click.testing import CliRunner

    from edgeformers.runtime import pipeline
    from edgeformers.runtime.bundle import Bundle
    from edgeformers.runtime.cli import cli

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if action == "pipeline":
            pipe = pipeline(None, bundle, dtype=dtype, device="cpu")
            pipe("a test sentence")
        elif action == "open":
            opened = Bundle.open(bundle, verify=True)
            for name in [dtype] if dtype else opened.present_variants():
                opened.variant_files(name)
        else:
            result = CliRunner().invoke(cli, ["inspect", str(bundle), "--verify"])
            if result.exit_code == 0:
                return "accepted"
            last = result.output.strip().splitlines()[-1] if result.output.strip() else ""
            if isinstance(result.exception, SystemExit) and last.startswith(
                ("Error: BundleError:", "Error: ChecksumError:")
            ):
                raise BundleError(last)
            if isinstance(result.exception, SystemExit):
                raise RuntimeError(f"inspect failed without a BundleError: {result.output}")
            raise result.exception  # type: ignore[misc]
    return "accepted"


def _alarm(signum: int, frame: Any) -> None:
    raise _Hang()


def run_case(base: Path, root: Path, index: int, case: Case) -> tuple[str, list[str]]:
    """The worst outcome of the case's actions and what each action said."""
    _install_hook()
    folder, bundle = _prepare(base, root, index, case)
    outcomes, notes = [], []
    for action in case.actions:
        _WATCH.update(case=os.path.realpath(folder), bundle=os.path.realpath(bundle), hits=[])
        previous = signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, TIMEOUT_S)
        start = time.monotonic()
        try:
            outcome, note = _act(action, bundle, case.dtype), ""
        except _Hang:
            outcome, note = "hang", f"no answer in {TIMEOUT_S} s"
        except BundleError as err:
            outcome, note = "refused", str(err)
            if any(text in note for text in DECOY_SIZE_TEXTS) or DECOY_SHA[:12] in note:
                outcome = "leak"
            elif "onnxruntime could not load" in note:
                outcome = "onnxruntime"  # edgeformers' own checks let it through
        except BaseException as err:  # noqa: BLE001 - an untyped crash is what we count
            outcome, note = "crash", f"{type(err).__name__}: {err}"[:300]
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
            _WATCH["case"] = None
        if time.monotonic() - start > TIMEOUT_S:
            outcome = "hang"
        if _WATCH["hits"]:
            outcome, note = "read outside", f"opened {sorted(set(_WATCH['hits']))[:3]}"
        outcomes.append(outcome)
        notes.append(f"{action}: {outcome}: {note}"[:400])
    worst = max(outcomes, key=OUTCOMES.index)
    if case.expect == "accepted" and all(o == "accepted" for o in outcomes):
        worst = "accepted"
    return worst, notes


def run_corpus(base: Path, root: Path) -> tuple[dict[str, Counter[str]], list[str]]:
    """Counts per category and outcome, and a line per case that did not do as expected."""
    table: dict[str, Counter[str]] = {}
    unexpected = []
    for index, case in enumerate(build_cases()):
        outcome, notes = run_case(base, root, index, case)
        table.setdefault(case.category, Counter())[outcome] += 1
        if outcome != case.expect:
            unexpected.append(f"[{case.category}] {case.name}: {outcome}\n    " + "\n    ".join(notes))
    return table, unexpected


def format_table(table: dict[str, Counter[str]]) -> str:
    header = f"{'category':<22}{'cases':>6}" + "".join(f"{o:>14}" for o in OUTCOMES)
    lines = [header, "-" * len(header)]
    total: Counter[str] = Counter()
    for category, counts in table.items():
        total.update(counts)
        lines.append(f"{category:<22}{sum(counts.values()):>6}" + "".join(f"{counts[o]:>14}" for o in OUTCOMES))
    lines.append(f"{'all':<22}{sum(total.values()):>6}" + "".join(f"{total[o]:>14}" for o in OUTCOMES))
    return "\n".join(lines)


# -------------------------------------------------------------------------- tests


def test_corpus_is_large_and_covers_every_category() -> None:
    cases = build_cases()
    hostile = [c for c in cases if c.expect == "refused"]
    assert len(hostile) >= 150
    assert len({c.name for c in cases}) == len(cases)  # each case says what it is


def test_audit_hook_sees_a_read_outside(tmp_path) -> None:
    """The detector is not vacuous: an open of the decoy during a case is recorded."""
    _install_hook()
    (tmp_path / "bundle").mkdir()
    (tmp_path / DECOY).write_bytes(DECOY_BYTES)
    _WATCH.update(case=os.path.realpath(tmp_path), bundle=os.path.realpath(tmp_path / "bundle"), hits=[])
    try:
        (tmp_path / DECOY).read_bytes()
        (tmp_path / "bundle" / "inside.txt").write_text("fine")
    finally:
        hits, _WATCH["case"] = list(_WATCH["hits"]), None
    assert hits == [os.path.realpath(tmp_path / DECOY)]


def test_scanner_finds_locations_wherever_a_graph_can_hold_a_tensor() -> None:
    """edgeformers' own walker, not onnxruntime, sees every external-data location: in
    initializers, If/Loop/Scan subgraphs, attribute tensors, sparse initializers,
    functions and training graphs."""
    import onnx
    from onnx import helper

    from edgeformers.runtime.onnx_scan import scan_locations

    kinds = ("if-then", "if-else", "nested-if", "loop-body-initializer", "scan-body", "attribute-tensors",
             "constant-node", "sparse-initializer", "function", "training-info")
    for kind in kinds:
        x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [4])
        graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x],
                                  [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [4])],
                                  [_ext_tensor("w", "weights.bin")])
        model = helper.make_model(graph)
        _subgraph(kind)(model, f"{kind}/hidden.bin")
        assert set(scan_locations(model.SerializeToString())) == {"weights.bin", f"{kind}/hidden.bin"}, kind


def test_hostile_bundles_are_refused_cleanly(bundle_factory, tmp_path) -> None:
    _, base = bundle_factory("bert", "sequence-classification", "text-classification")
    table, unexpected = run_corpus(base, tmp_path)
    assert not unexpected, f"{len(unexpected)} cases misbehaved:\n" + "\n".join(unexpected)
    controls = table.pop("controls")
    assert controls == Counter(accepted=controls.total())
    assert all(set(counts) == {"refused"} for counts in table.values()), table


def main() -> None:
    """Export the tiny BERT classifier, run the corpus, print the table."""
    import tempfile

    from click.testing import CliRunner

    from edgeformers.runtime.cli import cli
    from tests.fixtures.checkpoints import build_checkpoint

    os.environ["HF_HUB_OFFLINE"] = "1"
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        checkpoint = build_checkpoint("bert", "sequence-classification", root / "checkpoint")
        base = root / "bundle"
        result = CliRunner().invoke(
            cli, ["export", str(checkpoint), str(base), "--task", "text-classification", "--dtype", "fp32,q8",
                  "--min-agreement", str(floor_for("text-classification"))]
        )
        if result.exit_code != 0:
            raise SystemExit(f"export failed:\n{result.output}")
        (root / "cases").mkdir()
        table, unexpected = run_corpus(base, root / "cases")
        print(format_table(table))
        for line in unexpected:
            print(line)


if __name__ == "__main__":
    main()
