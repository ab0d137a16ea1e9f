"""The one gateway to a bundle's files: names checked, symlinks resolved inside, JSON bounded.

Bundles come from strangers. Every name the runtime takes from a bundle (manifest
entries, file names found in a foreign folder, ONNX external-data locations, the config
files it reads implicitly) goes through :meth:`BundleFolder.path` before anything is
stat'ed, hashed or opened. The resolver walks the name one component at a time and
refuses as soon as a component (or a symlink's target) would leave the bundle folder, so
nothing outside the folder is ever stat'ed, opened or described in an error message.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from collections import deque
from pathlib import Path
from typing import Any

from edgeformers.models.errors import BundleError

#: Largest manifest or config file read (bytes): real ones are a few KB.
MAX_CONFIG_BYTES = 16 * 1024 * 1024
#: Largest tokenizer.json read (bytes): big multilingual vocabularies reach ~30 MB.
MAX_TOKENIZER_BYTES = 256 * 1024 * 1024
#: Deepest JSON nesting accepted: real configs and tokenizers stay under 20 levels.
MAX_JSON_DEPTH = 64
#: Symlinks followed while resolving one name (Linux's own limit is 40).
MAX_SYMLINK_HOPS = 40

_DRIVE = re.compile(r"^[A-Za-z]:")


def check_relative_name(name: Any, what: str) -> str:
    """``name`` if it is a canonical relative POSIX path: a non-empty string, not
    absolute, no drive, backslash, NUL, empty, ``.`` or ``..`` component. ``what`` says
    where the name came from, for the error."""
    if not isinstance(name, str) or not name:
        raise BundleError(f"{what}: expected a relative file path, got {type(name).__name__} {name!r}"[:300])
    problem = None
    if "\0" in name:
        problem = "contains a NUL character"
    elif "\\" in name:
        problem = "contains a backslash (paths in a bundle use '/')"
    elif name.startswith("/") or _DRIVE.match(name):
        problem = "is absolute"
    elif any(part in ("", ".", "..") for part in name.split("/")):
        problem = "has an empty, '.' or '..' component"
    if problem:
        raise BundleError(f"{what}: path {name!r} {problem}; bundle paths are relative and stay inside the bundle"[:400])
    return name


class BundleFolder:
    """A bundle folder and the checks every read from it goes through."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        given = Path(folder)
        if not given.is_dir():
            raise BundleError(f"bundle folder {given} does not exist or is not a folder")
        self.given = given
        #: The folder itself resolved first (the caller chose it, so its own links count).
        self.root = Path(os.path.realpath(given))
        #: Where the resolver walks, and the path from there to the bundle: the bundle itself,
        #: or, for a Hugging Face cache snapshot, its repo folder (see ``_cache_repo``).
        self._walk_root, self._prefix = self.root, ()
        repo = _cache_repo(self.root)
        if repo is not None:
            self._walk_root, self._prefix = repo, self.root.relative_to(repo).parts

    def __repr__(self) -> str:
        return f"BundleFolder({str(self.given)!r})"

    def resolve(self, name: str, what: str, base: str = "") -> Path | None:
        """The real path of ``name`` (relative to ``base``, a folder inside the bundle), or
        None if it does not exist. Refuses a name that is not canonical, or whose
        resolution would leave the bundle, before touching anything outside."""
        check_relative_name(name, what)
        root = str(self._walk_root)
        pending = deque((base.split("/") if base else []) + name.split("/"))
        current: list[str] = list(self._prefix)
        hops = 0
        while pending:
            part = pending.popleft()
            if part in ("", "."):
                continue
            if part == "..":
                if not current:
                    raise self._outside(name, what)
                current.pop()
                continue
            candidate = os.path.join(root, *current, part)
            try:
                info = os.lstat(candidate)
            except FileNotFoundError:
                return None
            except OSError as err:  # ENOTDIR, ENAMETOOLONG, EACCES: all inside the bundle
                raise BundleError(f"{what}: {name!r} cannot be read: {err.strerror}") from None
            if stat.S_ISLNK(info.st_mode):
                hops += 1
                if hops > MAX_SYMLINK_HOPS:
                    raise BundleError(f"{what}: {name!r} is a symlink loop (more than {MAX_SYMLINK_HOPS} links)")
                target = os.readlink(candidate)
                if os.path.isabs(target):
                    # An absolute link is followed only into this very folder.
                    if not (target == root or target.startswith(root.rstrip("/") + "/")):
                        raise self._outside(name, what)
                    current, target = [], target[len(root):]
                pending.extendleft(reversed(target.split("/")))
                continue
            if not stat.S_ISDIR(info.st_mode) and pending:
                raise BundleError(f"{what}: {name!r} passes through a file that is not a folder")
            current.append(part)
        inside = tuple(current[:len(self._prefix)]) == self._prefix
        if inside or (self._prefix and current[:1] == ["blobs"] and len(current) == 2):
            return Path(root, *current)
        raise self._outside(name, what)

    def for_onnxruntime(self, name: str, real: Path) -> Path:
        """The path onnxruntime opens the checked graph ``name`` (real path ``real``) by:
        the real path, except in a Hub cache snapshot, where the graph is a link into
        ``blobs/`` and must be opened through its name in the snapshot, so that onnxruntime
        finds its external weights (links too, checked the same way) beside it."""
        return Path(self.root, *name.split("/")) if self._prefix else real

    def _outside(self, name: str, what: str) -> BundleError:
        # Says nothing about the target: not where it points, not whether it exists.
        return BundleError(
            f"{what}: {name!r} points outside the bundle folder {self.given}; every file of a bundle must be "
            "inside it (or, in a Hugging Face cache snapshot, in its own repo's blobs/)"
        )

    def path(self, name: str, what: str | None = None, base: str = "") -> Path:
        """The real path of a regular file of the bundle; missing files, folders and special
        files (FIFOs, devices, sockets) are refused without opening them."""
        what = what or str(self.given)
        real = self.resolve(name, what, base)
        if real is None:
            raise BundleError(f"{what}: file {name!r} is missing from the bundle")
        mode = os.stat(real).st_mode
        if not stat.S_ISREG(mode):
            raise BundleError(f"{what}: {name!r} is {_kind(mode)}, not a regular file")
        return real

    def folder(self, name: str, what: str | None = None) -> Path | None:
        """The real path of a sub-folder of the bundle, or None if there is none."""
        real = self.resolve(name, what or str(self.given))
        return real if real is not None and real.is_dir() else None

    def exists(self, name: str, what: str | None = None) -> bool:
        """Whether ``name`` is a regular file of the bundle (refusing names that leave it
        or that are special files, whether or not they exist)."""
        what = what or str(self.given)
        real = self.resolve(name, what)
        if real is None:
            return False
        mode = os.stat(real).st_mode
        if not stat.S_ISREG(mode):
            raise BundleError(f"{what}: {name!r} is {_kind(mode)}, not a regular file")
        return True

    def read_bytes(self, name: str, limit: int, what: str | None = None) -> bytes:
        return read_limited(self.path(name, what), limit, f"{self.given}/{name}")

    def read_json(self, name: str, required: bool = False, limit: int = MAX_CONFIG_BYTES) -> dict[str, Any]:
        """A JSON object file of the bundle, or ``{}`` when it is absent and not required."""
        where = f"{self.given}/{name}"
        real = self.resolve(name, where)
        if real is None:
            if required:
                raise BundleError(f"{self.given}: required file {name} is missing")
            return {}
        data = parse_json(self.read_bytes(name, limit, where), where)
        if not isinstance(data, dict):
            raise BundleError(f"{where}: expected a JSON object, got {type(data).__name__}")
        return data

    def read_json_any(self, name: str, limit: int = MAX_CONFIG_BYTES) -> Any:
        """A JSON file of the bundle of any shape (modules.json is a list), None if absent."""
        where = f"{self.given}/{name}"
        if self.resolve(name, where) is None:
            return None
        return parse_json(self.read_bytes(name, limit, where), where)


def _cache_repo(folder: Path) -> Path | None:
    """The repo folder (``models--org--name``) when ``folder`` is, or is inside, a Hugging
    Face cache snapshot (``models--org--name/snapshots/<revision>``), else None.

    A snapshot's files are symlinks into the repo's ``blobs/`` (``../../blobs/<hash>``),
    outside the snapshot folder. The trust boundary there is the repo folder: links may
    reach its ``blobs/`` (one level, plain files) and nothing else outside the snapshot.
    """
    for candidate in (folder, *folder.parents):
        snapshots = candidate.parent
        repo = snapshots.parent
        if snapshots.name == "snapshots" and repo.name.startswith("models--") and (repo / "blobs").is_dir():
            return repo
    return None


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a special file"


def open_regular(path: Path, where: str) -> int:
    """A read-only descriptor on a regular file: opened non-blocking and without following
    a final symlink, then checked with fstat, so a file swapped for a FIFO or a link after
    the path check cannot block or lead outside."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as err:
        raise BundleError(f"{where} cannot be opened: {err.strerror}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise BundleError(f"{where} is {_kind(mode)}, not a regular file")
    return fd


def read_limited(path: Path, limit: int, where: str) -> bytes:
    """The bytes of a regular file, refused when larger than ``limit``."""
    fd = open_regular(path, where)
    try:
        size = os.fstat(fd).st_size
        if size > limit:
            raise BundleError(f"{where} is {size:,} bytes; the limit for this file is {limit:,}")
        chunks, total = [], 0
        while chunk := os.read(fd, min(1 << 20, limit + 1 - total)):
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise BundleError(f"{where} grew past the limit of {limit:,} bytes while being read")
        return b"".join(chunks)
    finally:
        os.close(fd)


def sha256_regular(path: Path, where: str) -> str:
    """sha256 of a regular file, opened the same guarded way as every other read."""
    digest = hashlib.sha256()
    fd = open_regular(path, where)
    try:
        while block := os.read(fd, 1 << 20):
            digest.update(block)
    finally:
        os.close(fd)
    return digest.hexdigest()


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        duplicate = next(key for key, _ in pairs if key in seen or seen.add(key))  # type: ignore[func-returns-value]
        raise ValueError(f"duplicate key {duplicate!r}")
    return result


def parse_json(data: bytes, where: str) -> Any:
    """Parse JSON bytes: UTF-8, no duplicate keys, nesting at most :data:`MAX_JSON_DEPTH`.
    Every failure is a BundleError naming ``where``."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise BundleError(f"{where} is not valid JSON: not UTF-8 ({err.reason} at byte {err.start})") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicates)
    except RecursionError:
        raise BundleError(f"{where} is not valid JSON: nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as err:  # JSONDecodeError and duplicate keys
        raise BundleError(f"{where} is not valid JSON: {err}"[:500]) from None
    if json_depth(value) > MAX_JSON_DEPTH:
        raise BundleError(f"{where} is not valid JSON: nested deeper than {MAX_JSON_DEPTH} levels")
    return value


def json_depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value (scalars 0), without recursion."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if depth > MAX_JSON_DEPTH:
            return depth
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


def read_json_file(path: Path, required: bool = False, limit: int = MAX_CONFIG_BYTES) -> dict[str, Any]:
    """A JSON object file outside any bundle (a checkpoint's config.json, which may be a
    Hugging Face cache symlink): size- and depth-limited, special files refused."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if required:
            raise BundleError(f"{path.parent}: required file {path.name} is missing") from None
        return {}
    except OSError as err:
        raise BundleError(f"{path} cannot be read: {err.strerror}") from None
    if not stat.S_ISREG(mode):
        raise BundleError(f"{path} is {_kind(mode)}, not a regular file")
    data = parse_json(read_limited(Path(os.path.realpath(path)), limit, str(path)), str(path))
    if not isinstance(data, dict):
        raise BundleError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data
