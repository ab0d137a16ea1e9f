"""``edgeformers export`` and ``edgeformers quantize``; heavy imports happen inside them."""

from __future__ import annotations

from pathlib import Path

import click

from edgeformers.runtime.cli import echo_reports, fail_on_errors

#: Pickle weights (pytorch_model.bin) are read with torch.load, which can run code.
_allow_pickle = click.option(
    "--allow-pickle", is_flag=True,
    help="Load the checkpoint's pickle weights (pytorch_model.bin) when it has no safetensors; a pickle "
         "from someone you do not trust can run code on this machine.")


def _progress(message: str) -> None:
    click.echo(message, err=True)


@click.command("export")
@click.argument("source")
@click.argument("output", type=click.Path(path_type=Path))
@click.option("--task", required=True, help="Pipeline task, e.g. text-classification, feature-extraction.")
@click.option("--dtype", "dtypes", default="fp32,q8", show_default=True,
              help="Comma-separated variants to write: fp32, q8, int8, uint8, fp16.")
@click.option("--opset", type=int, default=None, help="ONNX opset (default: optimum's for the architecture).")
@click.option("--atol", type=float, default=None, help="Max abs difference to PyTorch (default: the family's).")
@click.option("--revision", default=None, help="Hub revision (branch, tag or commit) for a Hub id.")
@click.option("--force", is_flag=True, help="Replace OUTPUT if it exists.")
@click.option("--single-file", is_flag=True,
              help="Keep weights inside each .onnx file (default: beside it in .onnx_data, which loads "
                   "faster with less memory).")
@_allow_pickle
@fail_on_errors
def export_command(source: str, output: Path, task: str, dtypes: str, opset: int | None, atol: float | None,
                   revision: str | None, force: bool, single_file: bool, allow_pickle: bool) -> None:
    """Export SOURCE (a Hub id or a checkpoint folder) to the bundle folder OUTPUT."""
    from edgeformers.exporter import require_export_extra

    require_export_extra()
    from edgeformers.exporter.build import export

    manifest = export(source, output, task=task, dtypes=dtypes.split(","), opset=opset, atol=atol,
                      force=force, revision=revision, progress=_progress, external_data=not single_file,
                      allow_pickle=allow_pickle)
    echo_reports(manifest.validation)


@click.command("quantize")
@click.argument("bundle", type=click.Path(file_okay=False, path_type=Path))
@click.option("--dtype", "dtypes", default="q8", show_default=True, help="Comma-separated variants to add.")
@fail_on_errors
def quantize_command(bundle: Path, dtypes: str) -> None:
    """Add variants to BUNDLE from its fp32 graph, checked against fp32 at the task level."""
    from edgeformers.exporter import require_export_extra

    require_export_extra()
    from edgeformers.exporter.variants import add_variants

    manifest = add_variants(bundle, dtypes.split(","), progress=_progress)
    added = [d.strip() for d in dtypes.split(",") if d.strip()]
    echo_reports({d: r for d, r in manifest.validation.items() if d in added})


@click.command("validate")
@click.argument("bundle", type=click.Path(file_okay=False, path_type=Path))
@click.option("--source", default=None, help="Checkpoint to compare with (default: the manifest's source).")
@click.option("--atol", type=float, default=None, help="Max abs difference to PyTorch (default: the family's).")
@_allow_pickle
@fail_on_errors
def validate_command(bundle: Path, source: str | None, atol: float | None, allow_pickle: bool) -> None:
    """Check BUNDLE again: fp32 against PyTorch, the other variants against fp32."""
    from edgeformers.exporter import require_export_extra

    require_export_extra()
    from edgeformers.exporter.validate import validate_bundle

    echo_reports(validate_bundle(bundle, source=source, atol=atol, allow_pickle=allow_pickle))
