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

from edgeformers.models.dtypes import DTYPES, EXTERNAL_DATA_SUFFIX
from edgeformers.models.errors import BundleError, ChecksumError, InputError
from edgeformers.runtime.cli import fail_on_errors
from edgeformers.runtime.manifest import MANIFEST_NAME, Manifest

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
# ".OUTPUT.slim-<pid>-<random>": the pid lets a later slim tell a dead run's leftovers
# from a live run's work in progress.
_STAGING_MARK = ".slim-"


def variant_file_names(manifest: Manifest, dtype: str) -> set[str]:
    """The bundle paths a variant owns: its graphs and their external-data files."""
    names: set[str] = set()
    for graph in manifest.variants[dtype].files.values():
        names.add(graph)
        names.add(graph + EXTERNAL_DATA_SUFFIX)
    return names


def present_variants(folder: Path, manifest: Manifest) -> list[str]:
    """Variants whose every graph is on disk (a bundle may have others removed by hand)."""
    return [
        dtype for dtype, variant in manifest.variants.items()
        if all((folder / graph).is_file() for graph in variant.files.values())
    ]


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
    source = Path(bundle)
    target = Path(output)
    if not (source / MANIFEST_NAME).is_file():
        raise BundleError(
            f"{source} has no {MANIFEST_NAME}; slim needs an edgeformers bundle (its checksums are what "
            "the copy is checked against): export it with edgeformers export first"
        )
    manifest = Manifest.read(source)
    present = present_variants(source, manifest)
    keep = parse_dtypes(dtypes if isinstance(dtypes, str) else ",".join(dtypes), present)
    if os.path.lexists(target):
        raise BundleError(f"OUTPUT {target} already exists; slim writes a new bundle and never replaces a folder")
    names = _files_to_copy(source, manifest, keep)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_dead_staging(target)
    work = target.parent / f".{target.name}{_STAGING_MARK}{os.getpid()}-{secrets.token_hex(4)}"
    work.mkdir()  # not mkdtemp: its 0700 mode would end up on the bundle
    try:
        for name in names:
            if progress:
                progress(f"copying {name}")
            _copy_checked(source, work, name, manifest.files[name].sha256)
        _slimmed_manifest(source, manifest, keep, names).write(work)
        if os.path.lexists(target):  # appeared while we copied
            raise BundleError(f"OUTPUT {target} appeared while slim was writing; it was left as it is")
        os.rename(work, target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    logger.info("slimmed %s to %s (%s)", source, target, ", ".join(keep))
    return target


def _files_to_copy(source: Path, manifest: Manifest, keep: list[str]) -> list[str]:
    """Shared files (owned by no variant) plus the kept variants' files, all of which must
    be recorded with a checksum, since slim copies only what it can check."""
    owned = {dtype: variant_file_names(manifest, dtype) for dtype in manifest.variants}
    every_owned = set().union(*owned.values()) if owned else set()
    kept_owned = set().union(*(owned[d] for d in keep))
    names = [name for name in manifest.files if name not in every_owned or name in kept_owned]
    for dtype in keep:
        for graph in manifest.variants[dtype].files.values():
            if graph not in manifest.files:
                raise BundleError(
                    f"{source / MANIFEST_NAME}: variant {dtype!r} file {graph} has no size/sha256 entry in 'files'; "
                    "slim copies only files it can check"
                )
    for name in names:
        _inside(source, name)
        if not (source / name).is_file():
            raise BundleError(f"{source}: file {name} listed in {MANIFEST_NAME} is missing")
    return sorted(names)


def _inside(folder: Path, name: str) -> Path:
    """A manifest path that stays inside the bundle (no absolute path, no ``..``)."""
    path = Path(name)
    if path.is_absolute() or ".." in path.parts or "\\" in name or not name:
        raise BundleError(f"{folder / MANIFEST_NAME}: files entry {name!r} is not a relative path inside the bundle")
    resolved = (folder / name).resolve()
    if not resolved.is_relative_to(folder.resolve()):
        raise BundleError(f"{folder / MANIFEST_NAME}: files entry {name!r} leads outside the bundle")
    return resolved


def _copy_checked(source: Path, work: Path, name: str, expected: str) -> None:
    """Copy one file, hashing what is read; a mismatch with the manifest fails the slim."""
    destination = work / name
    destination.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with (source / name).open("rb") as reader, destination.open("xb") as writer:
        while block := reader.read(_CHUNK):
            digest.update(block)
            writer.write(block)
    if digest.hexdigest() != expected:
        raise ChecksumError(
            f"{source / name}: sha256 {digest.hexdigest()[:12]}… differs from the {expected[:12]}… recorded in "
            f"{MANIFEST_NAME}; the source bundle was modified, nothing was written"
        )
    shutil.copymode(source / name, destination)


def _slimmed_manifest(source: Path, manifest: Manifest, keep: list[str], names: list[str]) -> Manifest:
    """The source manifest restricted to ``keep``; the provenance says where it came from."""
    dropped = [dtype for dtype in manifest.variants if dtype not in keep]
    origin = dict(manifest.source)
    origin["slimmed_from"] = {"bundle": str(source.resolve()), "kept": keep, "dropped": dropped}
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
