"""Writing a bundle folder without ever costing the user a file.

``export`` and ``quantize`` build the new bundle in a temporary sibling of OUTPUT,
``.OUT.partial-XXXXXXXX``, and swap it into place at the end. This module owns what
makes that safe:

- :func:`resolve_target` and :func:`check_replaceable` refuse, before any work starts,
  every OUTPUT that is not new, empty, or an edgeformers bundle holding only its own files
  (and the current folder, the home folder, ``/``, symlinks, the source checkpoint);
- :func:`write_lock` holds an advisory lock (``.OUT.lock`` beside OUTPUT) for the whole
  write, so a second export or quantize to the same OUTPUT fails fast instead of
  interleaving with the first;
- :func:`recover` (run under the lock) puts back an OUTPUT that a killed run left only as
  ``.OUT.old-*`` and removes the stale ``.partial-*``/``.old-*`` folders of killed runs;
- :func:`swap_into_place` exchanges the new folder with the old one in one atomic
  ``renameat2(RENAME_EXCHANGE)`` on Linux, so OUTPUT is the complete old bundle or the
  complete new one at every instant; elsewhere two renames, with :func:`recover` covering
  the instant between them.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import logging
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from edgeformers.models.errors import EdgeformersError, ExportError
from edgeformers.runtime.manifest import MANIFEST_NAME, Manifest

logger = logging.getLogger(__name__)

# What edgeformers itself leaves inside a bundle when a run is killed: Manifest.write's
# staging file, and the variant staging folder older versions of quantize made in onnx/.
_MANIFEST_STAGING = re.compile(r"\.edgeformers\.json\.\d+\.partial")
_VARIANT_STAGING = re.compile(r"\.partial-[a-z0-9_]{8}")
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def resolve_target(path: str | os.PathLike[str], role: str = "OUTPUT") -> Path:
    """The absolute path edgeformers will write, after refusing the folders no bundle may
    replace: the current folder or one holding it, the home folder or one holding it,
    ``/``, and symbolic links (swapping one would replace the link, not its target)."""
    text = os.fspath(path)
    if not text.strip():
        raise ExportError(f"{role} is empty; name a folder for the bundle, e.g. bundles/my-model")
    raw = Path(text)
    if raw.is_symlink():
        raise ExportError(f"{role} {text} is a symbolic link; name the folder itself ({raw.resolve()})")
    absolute = Path(os.path.abspath(raw))
    if absolute.parent == absolute:
        raise ExportError(f"{role} {text} is the file system root; name a folder for the bundle")
    target = absolute.parent.resolve() / absolute.name
    cwd = Path.cwd().resolve()
    if target == cwd or target in cwd.parents:
        raise ExportError(
            f"{role} {text} is the current folder or holds it; edgeformers replaces {role} as a whole, which "
            "would leave your shell in a deleted folder: run it from outside, or name another folder"
        )
    home = _home()
    if home is not None and (target == home or target in home.parents):
        raise ExportError(f"{role} {text} is your home folder or holds it; name a folder for the bundle")
    return target


def check_apart(target: Path, source: Path, role: str = "OUTPUT") -> None:
    """Refuse an OUTPUT that is the source checkpoint, holds it, or lies inside it: the
    export reads the checkpoint while it writes, and a replace would delete it."""
    source = source.resolve()
    if target == source:
        raise ExportError(f"{role} {target} is the source checkpoint itself; write the bundle to another folder")
    if target in source.parents:
        raise ExportError(f"{role} {target} holds the source checkpoint {source}; write the bundle to another folder")
    if source in target.parents:
        raise ExportError(f"{role} {target} is inside the source checkpoint {source}; write the bundle outside it")


def check_replaceable(target: Path, force: bool, role: str = "OUTPUT") -> None:
    """Refuse to start when writing ``target`` could destroy something edgeformers did not
    make. A missing or empty folder is always fine; anything else needs ``force``, and even
    then only an edgeformers bundle holding nothing but its own files is replaced."""
    if not os.path.lexists(target):
        return
    if target.is_symlink() or not target.is_dir():
        raise ExportError(f"{role} {target} is a file, not a folder; edgeformers never replaces a file")
    try:
        with os.scandir(target) as entries:
            empty = next(entries, None) is None
    except OSError as err:
        raise ExportError(f"{role} {target} cannot be read: {err.strerror}") from None
    if empty:
        return
    if not force:
        raise ExportError(
            f"{role} {target} already exists; pass --force to replace it (--force replaces only an edgeformers bundle)"
        )
    reason = foreign_content(target)
    if reason:
        raise ExportError(
            f"{role} {target} is not an edgeformers bundle ({reason}); --force replaces only a bundle that "
            "edgeformers wrote, so nothing was changed: choose another folder, or move those files away yourself"
        )


def foreign_content(folder: Path) -> str | None:
    """Why ``folder`` is not purely an edgeformers bundle, or None when it is: its manifest
    must parse, and every file in it must be the manifest, a file the manifest lists, or
    an edgeformers staging leftover. Symlinks and special files are never ours."""
    manifest_path = folder / MANIFEST_NAME
    if manifest_path.is_symlink() or not manifest_path.is_file():
        return f"it has no {MANIFEST_NAME}"
    try:
        listed = set(Manifest.read(folder).files)
    except (EdgeformersError, OSError, ValueError, TypeError, RecursionError) as err:
        return f"its {MANIFEST_NAME} does not read as an edgeformers manifest: {err}"
    listed.add(MANIFEST_NAME)
    try:
        return _first_foreign(folder, "", listed)
    except OSError as err:
        return f"{err.filename or folder} cannot be read: {err.strerror}"
    except RecursionError:
        return "its folders nest deeper than any bundle's"


def is_staging_leftover(name: str) -> bool:
    """Whether a file or folder name inside a bundle is what a killed edgeformers run left."""
    return bool(_MANIFEST_STAGING.fullmatch(name) or _VARIANT_STAGING.fullmatch(name))


def _first_foreign(folder: Path, prefix: str, listed: set[str]) -> str | None:
    with os.scandir(folder) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            name = prefix + entry.name
            if entry.is_symlink():
                return f"{name} is a symbolic link, which edgeformers never writes"
            if entry.is_dir():
                if _VARIANT_STAGING.fullmatch(entry.name):
                    continue
                found = _first_foreign(Path(entry.path), name + "/", listed)
                if found:
                    return found
            elif not entry.is_file():
                return f"{name} is not a regular file"
            elif name not in listed and not (prefix == "" and _MANIFEST_STAGING.fullmatch(entry.name)):
                return f"{name} is not one of its files"
    return None


@contextlib.contextmanager
def write_lock(target: Path, role: str = "OUTPUT") -> Iterator[None]:
    """Hold the advisory lock ``.NAME.lock`` beside ``target`` for the ``with`` block.

    A second edgeformers process writing the same folder fails at once with an
    :class:`ExportError` rather than waiting for an export that may take many minutes.
    The lock dies with its process (``flock``), so a killed run never leaves a stale
    lock; the lock file is removed on release. On Windows ``msvcrt.locking`` is used;
    where neither exists the lock is skipped with a debug log line.
    """
    _make_parent(target, role)
    path = target.with_name(f".{target.name}.lock")
    for _ in range(20):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise ExportError(f"cannot create the lock file {path} for {role} {target}: {err.strerror}") from None
        if not _try_lock(fd):
            holder = _read_pid(fd)
            os.close(fd)
            raise ExportError(
                f"another edgeformers process{holder} is writing {role} {target} (it holds {path}); "
                "wait for it to finish, or write to another folder"
            )
        try:
            # The previous holder may have removed the file between our open and our lock:
            # then we locked an orphan and must try again on the file that is there now.
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    else:
        raise ExportError(f"could not take the lock {path} for {role} {target}: it keeps being replaced")
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        if sys.platform != "win32":
            with contextlib.suppress(OSError):
                os.unlink(path)  # while still locked, so no one else can be holding it
        os.close(fd)


def _try_lock(fd: int) -> bool:
    try:
        import fcntl
    except ImportError:
        fcntl = None  # type: ignore[assignment]
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        import msvcrt

        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        return True
    except ImportError:
        logger.debug("no file locking on this platform; concurrent writes to one OUTPUT are not prevented")
        return True
    except OSError as err:
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES, errno.EDEADLK):
            return False
        raise


def _read_pid(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except (OSError, AttributeError):
        return ""
    return f" (pid {text})" if text.isdigit() else ""


def leftovers(target: Path) -> list[Path]:
    """The ``.NAME.partial-*`` / ``.NAME.old-*`` folders beside ``target`` that killed
    runs left; only exact matches of edgeformers' own naming, never other dot-folders."""
    pattern = re.compile(rf"\.{re.escape(target.name)}\.(partial|old)-[a-z0-9_]{{8}}")
    try:
        entries = list(os.scandir(target.parent))
    except FileNotFoundError:
        return []
    return sorted(
        Path(e.path) for e in entries if pattern.fullmatch(e.name) and e.is_dir(follow_symlinks=False)
    )


def recover(target: Path) -> None:
    """Undo what a killed run left beside ``target``; call it holding :func:`write_lock`,
    which proves no live run owns these folders.

    An OUTPUT that is missing while a ``.NAME.old-*`` folder exists was caught between the
    two renames of the fallback swap: the old bundle is put back. Every other leftover is
    removed. Each action is one warning log line.
    """
    stale = leftovers(target)
    if not os.path.lexists(target):
        olds = [p for p in stale if ".old-" in p.name]
        if olds:
            newest = max(olds, key=lambda p: p.stat().st_ctime)
            os.rename(newest, target)
            stale.remove(newest)
            logger.warning("restored %s from %s, left by an interrupted edgeformers run", target, newest.name)
    for folder in stale:
        shutil.rmtree(folder, ignore_errors=True)
        if folder.exists():
            logger.warning("could not remove %s, left by an interrupted edgeformers run", folder)
        else:
            logger.warning("removed %s, left by an interrupted edgeformers run", folder)


def make_work_dir(target: Path) -> Path:
    """An empty ``.NAME.partial-XXXXXXXX`` folder beside ``target`` (same file system, so
    the final swap is a rename), with the permissions ``mkdir`` would give."""
    try:
        work = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    except OSError as err:
        raise disk_full_error(err, target, target.parent) or ExportError(
            f"cannot create a temporary folder beside {target}: {err.strerror}"
        ) from None
    umask = os.umask(0)
    os.umask(umask)
    work.chmod(0o777 & ~umask)
    return work


def swap_into_place(work: Path, target: Path) -> None:
    """Make the finished folder ``work`` become ``target``; an existing ``target`` is
    replaced as a whole, never merged, and removed only once the new one is in place."""
    if not os.path.lexists(target):
        os.rename(work, target)
        return
    if exchange(work, target):
        _remove_old(work)  # after the exchange, ``work`` holds the old bundle
        return
    old = target.with_name(f".{target.name}.old-{work.name.rsplit('-', 1)[-1]}")
    os.rename(target, old)
    try:
        os.rename(work, target)
    except BaseException:
        os.rename(old, target)
        raise
    _remove_old(old)


def _remove_old(folder: Path) -> None:
    try:
        shutil.rmtree(folder)
    except OSError as err:
        logger.warning("could not remove the replaced bundle %s (%s); the next export to it removes it", folder, err)


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
# errno values meaning "this kernel or file system cannot exchange": fall back to renames.
_NO_EXCHANGE = {errno.ENOSYS, errno.EINVAL, errno.EXDEV, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EPERM}


def exchange(first: Path, second: Path) -> bool:
    """Atomically swap two existing paths (Linux ``renameat2(RENAME_EXCHANGE)``); False
    when this platform, kernel or file system cannot, so the caller falls back."""
    func = _renameat2()
    if func is None:
        return False
    if func(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in _NO_EXCHANGE:
        logger.debug("renameat2(RENAME_EXCHANGE) unavailable here (%s); swapping with two renames", os.strerror(code))
        return False
    raise OSError(code, os.strerror(code), str(first), None, str(second))


@functools.lru_cache(maxsize=1)
def _renameat2() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        func = ctypes.CDLL(None, use_errno=True).renameat2  # glibc >= 2.28, musl >= 1.2.5
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    func.restype = ctypes.c_int
    return func


@contextlib.contextmanager
def discarded_on_failure(work: Path, target: Path, action: str) -> Iterator[None]:
    """Remove the work folder ``work`` if the block fails, so ``target`` stays as it was;
    a full disk or another OS error becomes one typed error saying so."""
    try:
        yield
    except BaseException as err:
        shutil.rmtree(work, ignore_errors=True)
        full = disk_full_error(err, target, work)
        if full is not None:
            raise full from err
        if isinstance(err, OSError):
            raise ExportError(f"{action} failed, which is left as it was: {err}") from err
        raise


def disk_full_error(err: BaseException, target: Path, where: Path) -> ExportError | None:
    """A clear error for a write that ran out of space (ENOSPC or quota) anywhere in the
    exception chain, e.g. inside onnx or optimum; None for any other failure."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _DISK_FULL:
            written = current.filename or where
            return ExportError(
                f"no space left on device while writing {written}; the temporary folder was removed "
                f"and {target} is as it was. Free some space and run it again"
            )
        current = current.__cause__ or current.__context__
    return None


def _make_parent(target: Path, role: str) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ExportError(f"cannot create the folder {target.parent} for {role}: {err.strerror}") from None


def _home() -> Path | None:
    try:
        return Path.home().resolve()
    except (RuntimeError, KeyError, OSError):
        return None
