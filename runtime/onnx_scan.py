"""Which external-data files an ONNX graph would make onnxruntime open, read by edgeformers.

onnxruntime resolves a tensor's ``external_data`` ``location`` against the graph's folder,
and how strictly it checks that path has changed between versions. So edgeformers parses
the graph itself before onnxruntime sees it: a minimal protobuf wire-format walker that
descends only into the messages that can hold tensors (the main graph, If/Loop/Scan
subgraphs in node attributes, functions, training graphs) and skips every other field by
its length, raw weights included, without copying them. The ``onnx`` package is not
needed; a 90 MB single-file graph scans in milliseconds because its weights are skipped.
"""

from __future__ import annotations

import mmap
import os
import posixpath
import threading
from pathlib import Path

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
    checked to be inside its bundle). Cached per file identity: device, inode, size,
    mtime and ctime (which a user cannot set), so an edited file is scanned again."""
    fd = open_regular(path, where)
    try:
        info = os.fstat(fd)
        key = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
        with _CACHE_LOCK:
            cached = _CACHE.get(key)
        if cached is not None:
            return cached
        try:
            if info.st_size == 0:
                raise _Malformed("the file is empty")
            with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as buf:
                locations = scan_locations(buf)
        except _Malformed as err:
            raise BundleError(f"{where} is not a readable ONNX graph: {err}") from None
        except (OSError, ValueError) as err:
            raise BundleError(f"{where} cannot be read: {err}") from None
    finally:
        os.close(fd)
    with _CACHE_LOCK:
        _CACHE[key] = locations
    return locations


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
