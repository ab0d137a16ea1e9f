"""``edgeformers export`` and ``edgeformers quantize``; heavy imports happen inside them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from edgeformers.runtime.cli import echo_reports, fail_on_errors

_ALLOW_DEGRADED_HELP = ("Keep a variant whose agreement with fp32 is below its task's threshold, marked "
                        "degraded in the manifest (default: refuse it and write nothing).")


#: Pickle weights (pytorch_model.bin) are read with torch.load, which can run code.
_allow_pickle = click.option(
    "--allow-pickle", is_flag=True,
    help="Load the checkpoint's pickle weights (pytorch_model.bin) when it has no safetensors; a pickle "
         "from someone you do not trust can run code on this machine.")


#: A user's own agreement bar, in place of the catalog's per-task threshold.
_min_agreement = click.option(
    "--min-agreement", type=float, default=None,
    help="Hold the variants to this agreement with fp32 (0-1, the task's metric) instead of the catalog's "
         "threshold; recorded in the manifest.")


def _progress(message: str) -> None:
    click.echo(message, err=True)


def _variant_options(command: Any) -> Any:
    """The q4 and int8-static settings, shared by ``export`` and ``quantize``."""
    for option in reversed((
        click.option("--block-size", type=int, default=32, show_default=True,
                     help="q4/q4f16: weights per quantization block (a power of two >= 16)."),
        click.option("--symmetric/--asymmetric", default=True, show_default=True,
                     help="q4/q4f16: symmetric blocks (scale only) or asymmetric (scale and zero point)."),
        click.option("--calibration", type=click.Path(path_type=Path), default=None,
                     help="int8-static: a text file, one example per line, to calibrate activation ranges "
                          "(default: a varied built-in set; data like the model's own is better)."),
        click.option("--calibration-method", type=click.Choice(["minmax", "entropy", "percentile"]),
                     default="minmax", show_default=True, help="int8-static: how ranges are read off the calibration data."),
    )):
        command = option(command)
    return command


def _options(block_size: int, symmetric: bool, calibration: Path | None, calibration_method: str) -> Any:
    from edgeformers.exporter.quantize import VariantOptions

    return VariantOptions(block_size, symmetric, calibration, calibration_method)


@click.command("export")
@click.argument("source")
@click.argument("output", type=click.Path(path_type=Path))
@click.option("--task", required=True, help="Pipeline task, e.g. text-classification, feature-extraction.")
@click.option("--dtype", "dtypes", default="fp32,q8", show_default=True,
              help="Comma-separated variants to write: fp32, q8, int8, uint8, fp16, q4, q4f16, int8-static.")
@click.option("--opset", type=int, default=None, help="ONNX opset (default: optimum's for the architecture).")
@click.option("--atol", type=float, default=None, help="Max abs difference to PyTorch (default: the family's).")
@click.option("--revision", default=None, help="Hub revision (branch, tag or commit) for a Hub id.")
@click.option("--force", is_flag=True, help="Replace OUTPUT if it exists.")
@click.option("--single-file", is_flag=True,
              help="Keep weights inside each .onnx file (default: beside it in .onnx_data, which loads "
                   "faster with less memory).")
@click.option("--allow-degraded", is_flag=True, help=_ALLOW_DEGRADED_HELP)
@click.option("--optimize", type=click.Choice(["O1", "O2", "O3"]), default=None,
              help="Fuse the fp32 graph before variants are made: O1 basic, O2 + transformer fusions, "
                   "O3 + GELU approximation; validated against PyTorch again.")
@_allow_pickle
@_min_agreement
@_variant_options
@fail_on_errors
def export_command(source: str, output: Path, task: str, dtypes: str, opset: int | None, atol: float | None,
                   revision: str | None, force: bool, single_file: bool, allow_degraded: bool,
                   optimize: str | None, allow_pickle: bool, min_agreement: float | None,
                   **variant_options: Any) -> None:
    """Export SOURCE (a Hub id or a checkpoint folder) to the bundle folder OUTPUT."""
    from edgeformers.exporter import require_export_extra

    require_export_extra()
    from edgeformers.exporter.build import export

    manifest = export(source, output, task=task, dtypes=dtypes.split(","), opset=opset, atol=atol,
                      force=force, revision=revision, progress=_progress, external_data=not single_file,
                      allow_degraded=allow_degraded, options=_options(**variant_options), optimize=optimize,
                      allow_pickle=allow_pickle, min_agreement=min_agreement)
    echo_reports(manifest.validation)


@click.command("quantize")
@click.argument("bundle", type=click.Path(file_okay=False, path_type=Path))
@click.option("--dtype", "dtypes", default="q8", show_default=True, help="Comma-separated variants to add.")
@click.option("--allow-degraded", is_flag=True, help=_ALLOW_DEGRADED_HELP)
@_min_agreement
@_variant_options
@fail_on_errors
def quantize_command(bundle: Path, dtypes: str, allow_degraded: bool, min_agreement: float | None,
                     **variant_options: Any) -> None:
    """Add variants to BUNDLE from its fp32 graph, checked against fp32 at the task level."""
    from edgeformers.exporter import require_export_extra

    require_export_extra()
    from edgeformers.exporter.variants import add_variants

    manifest = add_variants(bundle, dtypes.split(","), progress=_progress, allow_degraded=allow_degraded,
                            options=_options(**variant_options), min_agreement=min_agreement)
    added = [d.strip() for d in dtypes.split(",") if d.strip()]
    echo_reports({d: r for d, r in manifest.validation.items() if d in added})


@click.command("validate")
@click.argument("bundle", type=click.Path(file_okay=False, path_type=Path))
@click.option("--source", default=None, help="Checkpoint to compare with (default: the manifest's source).")
@click.option("--atol", type=float, default=None, help="Max abs difference to PyTorch (default: the family's).")
@_allow_pickle
@_min_agreement
@fail_on_errors
def validate_command(bundle: Path, source: str | None, atol: float | None, allow_pickle: bool,
                     min_agreement: float | None) -> None:
    """Check BUNDLE again: fp32 against PyTorch, the other variants against fp32 by their
    task's agreement metric; fails if any is below its threshold (degraded ones included)."""
    from edgeformers.exporter import require_export_extra

    require_export_extra()
    from edgeformers.exporter.validate import validate_bundle

    echo_reports(validate_bundle(bundle, source=source, atol=atol, allow_pickle=allow_pickle,
                                 min_agreement=min_agreement))
