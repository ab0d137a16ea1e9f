"""Which external-data files an ONNX graph would make onnxruntime open, read by edgeformers.

onnxruntime resolves a tensor's ``external_data`` ``location`` against the graph's folder,
and how strictly it checks that path has changed between versions. So edgeformers parses
the graph itself before onnxruntime sees it: a minimal protobuf wire-format walker that
descends only into the messages that can hold tensors (the main graph, If/Loop/Scan
subgraphs in node attributes, functions, training graphs) and skips every other field by
its length, raw weights included, without copying them. The ``onnx`` package is not
needed; a 90 MB single-file graph scans in milliseconds because its weights are skipped.

The same walker reads a graph's input and output names, element types and dims
(:func:`graph_io`), which a folder without a manifest is understood from.
"""

from __future__ import annotations

import mmap
import os
import posixpath
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeformers.models.errors import BundleError
from edgeformers.runtime.bundle_files import BundleFolder, open_regular

# Message kinds, and for each the length-delimited fields to descend into (field -> kind),
# from onnx.proto (ModelProto, GraphProto, NodeProto, AttributeProto, FunctionProto,
# TrainingInfoProto, SparseTensorProto, TensorProto, StringStringEntryProto).
_MODEL, _GRAPH, _NODE, _ATTRIBUTE, _FUNCTION, _TRAINING, _SPARSE, _TENSOR, _ENTRY = range(9)
_CHILDREN: dict[int, dict[int, int]] = {
    _MODEL: {7: _GRAPH, 20: _TRAINING, 25: _FUNCTION},
    _GRAPH: {1: _NODE, 5: _TENSOR, 15: _SPARSE},
    _NODE: {5: _ATTRIBUTE},
    _ATTRIBUTE: {5: _TENSOR, 6: _GRAPH, 10: _TENSOR, 11: _GRAPH, 22: _SPARSE, 23: _SPARSE},
    _FUNCTION: {7: _NODE, 11: _ATTRIBUTE},
    _TRAINING: {1: _GRAPH, 2: _GRAPH},
    _SPARSE: {1: _TENSOR, 2: _TENSOR},
    _TENSOR: {13: _ENTRY},
    _ENTRY: {},
}
_MODEL_GRAPH_FIELD = 7
#: protobuf's own default recursion limit; onnxruntime refuses deeper models anyway.
MAX_NESTING = 100

#: onnxruntime reads a location with this tag as a memory address, not a file.
_MEMORY_ADDRESS_TAG = "_ORT_MEM_ADDR_"

_CACHE: dict[tuple[int, int, int, int, int], tuple[str, ...]] = {}
_CACHE_LOCK = threading.Lock()


class _Malformed(Exception):
    pass


def _varint(buf: mmap.mmap | bytes, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise _Malformed("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise _Malformed("varint longer than 10 bytes")


def scan_locations(buf: mmap.mmap | bytes) -> tuple[str, ...]:
    """Every external-data ``location`` in a serialized ModelProto, each once. Raises
    ``_Malformed`` if the bytes are not a protobuf ModelProto with a graph."""
    locations: dict[str, None] = {}
    stack = [(_MODEL, 0, len(buf), 0)]
    has_graph = False
    while stack:
        kind, pos, end, depth = stack.pop()
        if depth > MAX_NESTING:
            raise _Malformed(f"messages nested deeper than {MAX_NESTING} levels")
        children = _CHILDREN[kind]
        keys: list[bytes] = []
        values: list[bytes] = []
        while pos < end:
            key, pos = _varint(buf, pos, end)
            field, wire = key >> 3, key & 7
            if field == 0:
                raise _Malformed("field number 0")
            if wire == 0:
                _, pos = _varint(buf, pos, end)
            elif wire == 1:
                pos += 8
            elif wire == 5:
                pos += 4
            elif wire == 2:
                length, pos = _varint(buf, pos, end)
                start, pos = pos, pos + length
                if pos > end:
                    break  # reported below as truncated
                if kind == _ENTRY:
                    if field == 1:
                        keys.append(bytes(buf[start:pos]))
                    elif field == 2:
                        values.append(bytes(buf[start:pos]))
                elif field in children:
                    if kind == _MODEL and field == _MODEL_GRAPH_FIELD:
                        has_graph = True
                    stack.append((children[field], start, pos, depth + 1))
            else:
                raise _Malformed(f"unsupported wire type {wire}")
        if pos != end:
            raise _Malformed("truncated message")
        # The last occurrence of a field wins in protobuf; checking every value of an entry
        # keyed "location" at any point is a superset of what onnxruntime reads.
        if kind == _ENTRY and b"location" in keys:
            for value in values:
                try:
                    locations.setdefault(value.decode("utf-8"), None)
                except UnicodeDecodeError:
                    raise _Malformed("an external-data location is not UTF-8") from None
    if not has_graph:
        raise _Malformed("no graph in the model")
    return tuple(locations)


def external_data_locations(path: Path, where: str) -> tuple[str, ...]:
    """The external-data locations of the graph file ``path`` (a regular file already
    checked to be inside its bundle), cached per file identity (:func:`_scan_cached`)."""
    return _scan_cached(path, where, _CACHE, scan_locations)


def _scan_cached(path: Path, where: str, cache: dict[Any, Any], scan: Callable[[Any], Any]) -> Any:
    """``scan`` over the memory-mapped graph file ``path``, cached in ``cache`` per file
    identity: device, inode, size, mtime and ctime (which a user cannot set), so an edited
    file is scanned again."""
    fd = open_regular(path, where)
    try:
        info = os.fstat(fd)
        key = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
        with _CACHE_LOCK:
            cached = cache.get(key)
        if cached is not None:
            return cached
        try:
            if info.st_size == 0:
                raise _Malformed("the file is empty")
            with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as buf:
                result = scan(buf)
        except _Malformed as err:
            raise BundleError(f"{where} is not a readable ONNX graph: {err}") from None
        except (OSError, ValueError) as err:
            raise BundleError(f"{where} cannot be read: {err}") from None
    finally:
        os.close(fd)
    with _CACHE_LOCK:
        cache[key] = result
    return result


def check_location(location: str, where: str) -> None:
    """Refuse a location onnxruntime would not treat as a plain file name."""
    if _MEMORY_ADDRESS_TAG in location:
        raise BundleError(f"{where}: external-data location {location!r} is onnxruntime's memory-address tag")


def external_data_files(folder: BundleFolder, graph_name: str, graph: Path, what: str) -> list[tuple[str, Path]]:
    """``(name inside the bundle, real path)`` of each external-data file the graph
    ``graph_name`` (real path ``graph``) reads, every location checked with the same rule
    as any other bundle path, relative to the graph's folder as onnxruntime reads it."""
    base = posixpath.dirname(graph_name)
    files = []
    for location in external_data_locations(graph, what):
        check_location(location, what)
        real = folder.path(location, f"{what}: external data", base=base)
        files.append((posixpath.join(base, location), real))
    return files


# --- graph inputs and outputs ------------------------------------------------------------
# A folder without a manifest is understood from its graphs' own input/output names and KV
# shapes (runtime/foreign_generation.py). The same walker reads them: the main graph's
# ``input`` (11), ``output`` (12) and initializer names (5, 15), every other field (weights
# included) skipped by its length. ValueInfoProto: name 1, type 2; TypeProto: tensor_type 1;
# TypeProto.Tensor: elem_type 1, shape 2; TensorShapeProto: dim 1; Dimension: dim_value 1,
# dim_param 2; TensorProto: name 8; SparseTensorProto: values 1.
_GRAPH_INPUT, _GRAPH_OUTPUT, _GRAPH_INITIALIZER, _GRAPH_SPARSE_INITIALIZER = 11, 12, 5, 15

_IO_CACHE: dict[tuple[int, int, int, int, int], GraphIO] = {}

#: A dimension: a fixed size, a symbolic name (``"batch_size"``), or None (unknown).
Dim = int | str | None


@dataclass(frozen=True)
class TensorInfo:
    """One graph input or output: its name, ONNX element type (``TensorProto.DataType``:
    1 float, 7 int64, 9 bool, 10 float16; 0 when not a tensor) and dims (None: no shape)."""

    name: str
    elem_type: int
    dims: tuple[Dim, ...] | None


@dataclass(frozen=True)
class GraphIO:
    """The main graph's inputs (initializers that older exports also list as inputs left
    out) and outputs, in graph order."""

    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]

    def input(self, name: str) -> TensorInfo | None:
        return next((i for i in self.inputs if i.name == name), None)

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.outputs]


def _fields(buf: mmap.mmap | bytes, pos: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """``(field, wire type, value or start, end)`` of each field of the message at
    ``buf[pos:end]``: a varint's value, or a length-delimited field's span (``start``, ``end``)."""
    while pos < end:
        key, pos = _varint(buf, pos, end)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise _Malformed("field number 0")
        if wire == 0:
            value, pos = _varint(buf, pos, end)
            yield field, wire, value, pos
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            length, pos = _varint(buf, pos, end)
            start, pos = pos, pos + length
            if pos > end:
                raise _Malformed("truncated message")
            yield field, wire, start, pos
        else:
            raise _Malformed(f"unsupported wire type {wire}")
    if pos != end:
        raise _Malformed("truncated message")


def _text(buf: mmap.mmap | bytes, start: int, end: int) -> str:
    try:
        return bytes(buf[start:end]).decode("utf-8")
    except UnicodeDecodeError:
        raise _Malformed("a name is not UTF-8") from None


def _int64(value: int) -> int:
    """A protobuf int64 varint as the signed number it encodes."""
    return value - (1 << 64) if value >= 1 << 63 else value


def _sub(buf: mmap.mmap | bytes, pos: int, end: int, field: int) -> tuple[int, int] | None:
    """The span of the last length-delimited ``field`` of a message (protobuf: last wins)."""
    span = None
    for number, wire, start, stop in _fields(buf, pos, end):
        if number == field and wire == 2:
            span = (start, stop)
    return span


def _value_info(buf: mmap.mmap | bytes, pos: int, end: int) -> TensorInfo:
    name, elem_type, dims = "", 0, None
    for field, wire, start, stop in _fields(buf, pos, end):
        if field == 1 and wire == 2:
            name = _text(buf, start, stop)
        elif field == 2 and wire == 2:
            elem_type, dims = 0, None
            tensor = _sub(buf, start, stop, 1)
            for number, kind, a, b in _fields(buf, *tensor) if tensor else ():
                if number == 1 and kind == 0:
                    elem_type = a
                elif number == 2 and kind == 2:
                    dims = tuple(_dim(buf, s, e) for n, k, s, e in _fields(buf, a, b) if n == 1 and k == 2)
    return TensorInfo(name, elem_type, dims)


def _dim(buf: mmap.mmap | bytes, pos: int, end: int) -> Dim:
    dim: Dim = None
    for field, wire, start, stop in _fields(buf, pos, end):
        if field == 1 and wire == 0:
            dim = _int64(start)
        elif field == 2 and wire == 2:
            dim = _text(buf, start, stop)
    return dim


def scan_graph_io(buf: mmap.mmap | bytes) -> GraphIO:
    """The main graph's inputs and outputs in a serialized ModelProto. Raises
    ``_Malformed`` if the bytes are not a ModelProto with a graph."""
    graph = _sub(buf, 0, len(buf), _MODEL_GRAPH_FIELD)
    if graph is None:
        raise _Malformed("no graph in the model")
    inputs: list[TensorInfo] = []
    outputs: list[TensorInfo] = []
    initializers: set[str] = set()
    for field, wire, start, stop in _fields(buf, *graph):
        if wire != 2:
            continue
        if field == _GRAPH_INPUT:
            inputs.append(_value_info(buf, start, stop))
        elif field == _GRAPH_OUTPUT:
            outputs.append(_value_info(buf, start, stop))
        elif field in (_GRAPH_INITIALIZER, _GRAPH_SPARSE_INITIALIZER):
            tensor = (start, stop) if field == _GRAPH_INITIALIZER else _sub(buf, start, stop, 1)
            if tensor is not None:
                initializers.update(_text(buf, s, e) for n, k, s, e in _fields(buf, *tensor) if n == 8 and k == 2)
    return GraphIO(tuple(i for i in inputs if i.name not in initializers), tuple(outputs))


def graph_io(path: Path, where: str) -> GraphIO:
    """The inputs and outputs of the graph file ``path`` (a regular file already checked
    to be inside its bundle), read without onnx and without loading weights; cached per
    file identity (:func:`_scan_cached`)."""
    return _scan_cached(path, where, _IO_CACHE, scan_graph_io)