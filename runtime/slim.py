"""``edgeformers slim``: a copy of a bundle holding only the variants a device ships.

It belongs to the base install: it copies files and rewrites the manifest, nothing more.
Every copied file is checked against the sha256 the source manifest recorded while it is
copied, so the new bundle's checksums are the recorded ones, not whatever the disk holds.

Files are copied, not hard-linked: a hard link would share the inode with the source, so
an in-place edit of either bundle (a re-quantize, an editor, a sync tool) would silently
change the other, and both manifests would then describe a file that no longer matches.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import shutil
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path

import click

from edgeformers.models.dtypes import DTYPES
from edgeformers.models.errors import BundleError, ChecksumError, InputError
from edgeformers.runtime.bundle import Bundle
from edgeformers.runtime.cli import fail_on_errors
from edgeformers.runtime.manifest import MANIFEST_NAME, Manifest

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
# ".OUTPUT.slim-<pid>-<random>": the pid lets a later slim tell a dead run's leftovers
# from a live run's work in progress.
_STAGING_MARK = ".slim-"


def parse_dtypes(value: str, present: list[str]) -> list[str]:
    """``"q8,fp16"`` -> ``["q8", "fp16"]``, each a variant the bundle really holds."""
    names = [name.strip() for name in value.split(",") if name.strip()]
    if not names:
        raise InputError(f"--dtype is empty; this bundle holds: {', '.join(present) or 'no variant'}")
    for name in names:
        if name not in DTYPES:
            raise InputError(
                f"--dtype {name!r} is not a dtype; this bundle holds: {', '.join(present) or 'no variant'}"
            )
        if name not in present:
            raise BundleError(
                f"--dtype {name}: the bundle has no {name!r} variant on disk; it holds: "
                f"{', '.join(present) or 'no variant'}"
            )
    return list(dict.fromkeys(names))


def slim_bundle(
    bundle: str | os.PathLike[str],
    output: str | os.PathLike[str],
    dtypes: Iterable[str] | str,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Write ``output``: the shared files of ``bundle`` plus only ``dtypes``' files, with
    the manifest restricted to them. ``output`` must not exist; on any failure nothing is
    left behind. Returns the new bundle's path."""
    opened = Bundle.open(bundle)  # the manifest validated, every path checked inside the folder
    if not opened.has_manifest:
        raise BundleError(
            f"{opened.path} has no {MANIFEST_NAME}; slim needs an edgeformers bundle (its checksums are what "
            "the copy is checked against): export it with edgeformers export first"
        )
    present = opened.present_variants()
    keep = parse_dtypes(dtypes if isinstance(dtypes, str) else ",".join(dtypes), present)
    target = Path(output)
    if os.path.lexists(target):
        raise BundleError(f"OUTPUT {target} already exists; slim writes a new bundle and never replaces a folder")
    parent = Path(os.path.realpath(target.parent))
    if parent == opened.folder.root or opened.folder.root in parent.parents:
        raise BundleError(f"OUTPUT {target} is inside BUNDLE {opened.path}; slim writes the new bundle beside it")
    names = _files_to_copy(opened, keep)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_dead_staging(target)
    work = target.parent / f".{target.name}{_STAGING_MARK}{os.getpid()}-{secrets.token_hex(4)}"
    work.mkdir()  # not mkdtemp: its 0700 mode would end up on the bundle
    try:
        for name in names:
            if progress:
                progress(f"copying {name}")
            _copy_checked(opened, work, name)
        _slimmed_manifest(opened, keep, names).write(work)
        if os.path.lexists(target):  # appeared while we copied
            raise BundleError(f"OUTPUT {target} appeared while slim was writing; it was left as it is")
        os.rename(work, target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    logger.info("slimmed %s to %s (%s)", opened.path, target, ", ".join(keep))
    return target


def _files_to_copy(opened: Bundle, keep: list[str]) -> list[str]:
    """The shared files plus every file the kept variants read (graphs, and the external
    data their graphs name), each of which must be recorded with a checksum: slim copies
    only what it can check."""
    manifest = opened.manifest
    names = list(manifest.shared_files())
    for dtype in keep:
        names += manifest.listed_files(dtype) + opened.variant_files(dtype)
    for name in names:
        if name not in manifest.files:
            raise BundleError(
                f"{opened.path}/{MANIFEST_NAME}: {name} has no size/sha256 entry in 'files'; "
                "slim copies only files it can check"
            )
    return sorted(set(names))


def _copy_checked(opened: Bundle, work: Path, name: str) -> None:
    """Copy one file, hashing what is read; a mismatch with the manifest fails the slim."""
    expected = opened.manifest.files[name].sha256
    source = opened.file(name)  # inside the bundle, a regular file, the recorded size
    destination = work / name
    destination.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with source.open("rb") as reader, destination.open("xb") as writer:
        while block := reader.read(_CHUNK):
            digest.update(block)
            writer.write(block)
    if digest.hexdigest() != expected:
        raise ChecksumError(
            f"{opened.path / name}: sha256 {digest.hexdigest()[:12]}… differs from the {expected[:12]}… recorded "
            f"in {MANIFEST_NAME}; the source bundle was modified, nothing was written"
        )
    shutil.copymode(source, destination)


def _slimmed_manifest(opened: Bundle, keep: list[str], names: list[str]) -> Manifest:
    """The source manifest restricted to ``keep``; the provenance says where it came from."""
    manifest = opened.manifest
    dropped = [dtype for dtype in manifest.variants if dtype not in keep]
    origin = dict(manifest.source)
    origin["slimmed_from"] = {"bundle": str(opened.folder.root), "kept": keep, "dropped": dropped}
    return replace(
        manifest,
        variants={dtype: manifest.variants[dtype] for dtype in keep},
        files={name: manifest.files[name] for name in names},
        validation={dtype: report for dtype, report in manifest.validation.items() if dtype in keep},
        source=origin,
    )


def _remove_dead_staging(target: Path) -> None:
    """Remove ``.OUTPUT.slim-<pid>-*`` folders left by slims that were killed."""
    prefix = f".{target.name}{_STAGING_MARK}"
    for leftover in target.parent.glob(f"{prefix}*"):
        pid_text = leftover.name[len(prefix):].split("-", 1)[0]
        if not pid_text.isdigit() or not leftover.is_dir() or leftover.is_symlink() or _alive(int(pid_text)):
            continue
        logger.warning("removing %s, left by an interrupted slim", leftover)
        shutil.rmtree(leftover, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@click.command("slim")
@click.argument("bundle", type=click.Path(file_okay=False, path_type=Path))
@click.argument("output", type=click.Path(path_type=Path))
@click.option("--dtype", "dtypes", required=True, help="Comma-separated variants to keep, e.g. q8 or q8,fp16.")
@fail_on_errors
def slim_command(bundle: Path, output: Path, dtypes: str) -> None:
    """Write OUTPUT: BUNDLE with only the --dtype variants and the shared files, checksums kept.

    OUTPUT must not exist. Every file is checked against BUNDLE's recorded sha256 while it
    is copied; an interrupted or failed slim leaves no OUTPUT behind."""
    written = slim_bundle(bundle, output, dtypes, progress=lambda message: click.echo(message, err=True))
    manifest = Manifest.read(written)
    size = sum(entry.size for entry in manifest.files.values())
    click.echo(f"wrote {written}: {', '.join(manifest.variants)} ({len(manifest.files)} files, {size / 1e6:.1f} MB)")
