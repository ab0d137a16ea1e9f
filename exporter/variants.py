"""Quantized variants of a bundle's fp32 graph, each checked against fp32 at the task level.

Used by ``export`` (inside its temporary folder) and by ``quantize`` (on an existing
bundle, where new files appear only once every requested variant is made).
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from edgeformers.exporter.agreement import AgreementCheck, check_min_agreement, hold_to_threshold
from edgeformers.exporter.onnx_files import uses_external_data
from edgeformers.exporter.output_dir import (
    discarded_on_failure,
    is_staging_leftover,
    make_work_dir,
    recover,
    resolve_target,
    swap_into_place,
    write_lock,
)
from edgeformers.exporter.quantize import VariantOptions, check_variant_options, make_variant
from edgeformers.models.dtypes import DTYPES, EXTERNAL_DATA_SUFFIX, dtype_spec, onnx_file_name
from edgeformers.models.errors import ExportError
from edgeformers.models.families import Family, check_dtypes, check_supports
from edgeformers.runtime.manifest import MANIFEST_NAME, Manifest, Variant, describe_files

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]


def parse_dtypes(dtypes: Iterable[str]) -> list[str]:
    """``["fp32,q8", "fp16"]`` -> ``["fp32", "q8", "fp16"]``: fp32 first (every variant is
    made from and checked against it), duplicates dropped, unknown names refused."""
    names = [d.strip() for item in dtypes for d in str(item).split(",") if d.strip()]
    for name in names:
        dtype_spec(name)
    return ["fp32", *[n for n in dict.fromkeys(names) if n != "fp32"]]


def make_checked_variant(
    bundle: Path,
    fp32: Path,
    dtype: str,
    family: Family,
    check: AgreementCheck,
    staging: Path | None = None,
    allow_degraded: bool = False,
    options: VariantOptions | None = None,
) -> tuple[Variant, dict[str, Any]]:
    """Write the ``dtype`` variant beside ``fp32`` (or into ``staging`` under its final
    name, for the caller to move) and hold its task-level agreement with fp32 to the
    task's threshold: below it, :class:`ValidationError` with the figures (the caller
    discards what was written), unless ``allow_degraded`` keeps it marked degraded."""
    final = fp32.with_name(onnx_file_name("model", dtype))
    target = (staging or final.parent) / final.name
    settings = make_variant(fp32, target, dtype, family, external_data=uses_external_data(fp32), options=options)
    report = hold_to_threshold(check.measure(target), dtype, allow_degraded)
    return Variant(dtype, {"model": final.relative_to(bundle).as_posix()}, settings), report


def add_variants(bundle_path: str | Path, dtypes: Iterable[str], progress: Progress | None = None,
                 allow_degraded: bool = False, options: VariantOptions | None = None,
                 min_agreement: float | None = None) -> Manifest:
    """Add variants to an existing bundle, all or nothing, even if the process is killed.

    The new bundle is assembled in a copy, a ``.BUNDLE.partial-*`` sibling (user files
    kept; it needs the bundle's size in free space), and swapped in as a whole by
    ``output_dir`` under the lock ``export`` takes: a reader sees the old bundle or the new.
    """
    from edgeformers.runtime.bundle import Bundle

    step = progress or logger.info
    wanted = parse_dtypes(dtypes)[1:]
    check_variant_options(wanted, options, None)  # before the lock and the copy: bad input costs nothing
    if min_agreement is not None:
        check_min_agreement(min_agreement)
    if not wanted:
        raise ExportError("quantize adds variants made from fp32: pass --dtype with one or more of "
                          f"{', '.join(d for d in DTYPES if d != 'fp32')}")
    target = resolve_target(bundle_path, role="BUNDLE")
    with write_lock(target, role="BUNDLE"):
        recover(target)
        if not target.is_dir():
            raise ExportError(f"BUNDLE {bundle_path} is not a folder; quantize needs an edgeformers bundle "
                              "(make one with: edgeformers export SOURCE OUTPUT --task TASK)")
        if not (target / MANIFEST_NAME).is_file():
            raise ExportError(f"BUNDLE {bundle_path} has no {MANIFEST_NAME}: quantize needs an edgeformers bundle, "
                              "not a plain ONNX folder (make one with: edgeformers export SOURCE OUTPUT --task TASK)")
        bundle = Bundle.open(target, verify=True)
        manifest = bundle.manifest
        family = check_supports(manifest.model_type, manifest.task)
        check_dtypes(family, wanted)
        two_graphs = manifest.generation.get("kind") == "encoder-decoder"  # exporter/seq2seq.py
        if not two_graphs:  # fp32's answers first, from the bundle itself: bad input costs no copy
            fp32 = bundle.onnx_path("fp32")
            check = AgreementCheck.prepare(bundle.path, manifest.task, manifest.processing.get("max_length"),
                                           manifest.inputs, fp32, min_agreement, generation=manifest.generation)
        work = make_work_dir(target)
        with discarded_on_failure(work, target, f"quantize of BUNDLE {target}"):
            _copy_tree(target, work)
            if two_graphs:
                ours = _add_two_graph_variants(work, bundle, wanted, family, allow_degraded, options, min_agreement,
                                               step)
            else:
                ours = _add_one_graph_variants(work, manifest, work / fp32.relative_to(target), wanted, family, check,
                                               allow_degraded, options, step)
            # Files the user dropped into the bundle stay unlisted, so `export --force` still refuses to delete them.
            manifest.files = {name: entry for name, entry in describe_files(work).items() if name in ours}
            manifest.write(work)
            swap_into_place(work, target)
    return manifest


def _add_one_graph_variants(work: Path, manifest: Manifest, work_fp32: Path, wanted: list[str], family: Family,
                            check: AgreementCheck, allow_degraded: bool, options: VariantOptions | None,
                            step: Progress) -> set[str]:
    """The ``wanted`` variants of a one-graph bundle, made beside fp32 in the bundle's copy
    ``work`` (staged, then moved over any they replace); the files the manifest lists afterwards."""
    staging = Path(tempfile.mkdtemp(prefix=".partial-", dir=work_fp32.parent))
    for dtype in wanted:
        step(f"making the {dtype} variant and checking it against fp32")
        variant, report = make_checked_variant(work, work_fp32, dtype, family, check, staging, allow_degraded, options)
        manifest.variants[dtype] = variant
        manifest.validation[dtype] = report
    ours = set(manifest.files)
    for made in sorted(staging.iterdir()):
        stale_data = work_fp32.parent / (made.name + EXTERNAL_DATA_SUFFIX)
        if made.suffix == ".onnx" and not (staging / stale_data.name).exists():
            stale_data.unlink(missing_ok=True)  # a re-made variant that no longer has external data
        os.replace(made, work_fp32.parent / made.name)
        ours.add((work_fp32.parent / made.name).relative_to(work).as_posix())
    staging.rmdir()
    return ours


def _add_two_graph_variants(work: Path, bundle: Any, wanted: list[str], family: Family, allow_degraded: bool,
                            options: VariantOptions | None, min_agreement: float | None, step: Progress) -> set[str]:
    """The ``wanted`` variants of an encoder + merged-decoder bundle (text seq2seq, Whisper,
    image-to-text), made in the bundle's copy ``work`` exactly as export makes them (both
    graphs, the merged decoder inside its If branches) and held to the same greedy-token
    agreement; the files the manifest lists afterwards."""
    from edgeformers.exporter.seq2seq import kind_for, make_variants

    manifest = bundle.manifest

    def in_work(dtype: str) -> dict[str, Path]:
        # every graph name goes through the bundle's checks (a file inside it, external data included)
        # before its copy in `work` is read or deleted: the manifest came from a stranger
        for component in manifest.variants[dtype].files:
            bundle.onnx_path(dtype, component)
        return {component: work / name for component, name in manifest.variants[dtype].files.items()}

    ours = set(manifest.files)
    for dtype in wanted:  # a re-made variant: its old files go first (the new one may lack external data)
        for graph in in_work(dtype).values() if dtype in manifest.variants else ():
            for stale in (graph, graph.with_name(graph.name + EXTERNAL_DATA_SUFFIX)):
                stale.unlink(missing_ok=True)
                ours.discard(stale.relative_to(work).as_posix())
    fp32 = in_work("fp32")
    check = kind_for(manifest.task, family.name).agreement(work, manifest.task, manifest.generation, fp32,
                                                           manifest.processing, min_agreement)
    made, reports = make_variants(work, fp32, wanted, family, check, allow_degraded, options, step)
    for dtype, variant in made.items():
        manifest.variants[dtype] = variant
        manifest.validation[dtype] = reports[dtype]
        for name in variant.files.values():
            ours.update(n for n in (name, name + EXTERNAL_DATA_SUFFIX) if (work / n).is_file())
    return ours


def _copy_tree(source: Path, copy: Path) -> None:
    """Copy a bundle into ``copy``, user files included, leftovers of killed runs not.

    A real copy, not hard links: onnx refuses to load external weights that have more
    than one link (its guard against hard-link attacks), which would break the copy and,
    while it exists, any tool loading the live bundle."""

    def copy_file(src: str, dst: str) -> None:
        if not stat.S_ISREG(os.lstat(src).st_mode):
            raise ExportError(f"{src} in the bundle is not a regular file; quantize copies only files")
        shutil.copy2(src, dst)

    # A link would be re-created as a link in the copy, and files deleted or rewritten through it
    # there would change whatever it points at (the live bundle itself, for an absolute link).
    for top, dirs, files in os.walk(source):
        for name in (*dirs, *files):
            if os.path.islink(os.path.join(top, name)) and not is_staging_leftover(name):
                raise ExportError(f"{os.path.join(top, name)} in the bundle is a symbolic link; quantize works on a "
                                  "bundle of plain files (copy it with the links resolved first)")

    def leftovers(folder: str, names: list[str]) -> list[str]:
        return [name for name in names if is_staging_leftover(name)]

    shutil.copytree(source, copy, symlinks=True, copy_function=copy_file, ignore=leftovers, dirs_exist_ok=True)
