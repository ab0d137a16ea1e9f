"""The ``edgeformers`` command.

Commands load lazily: ``edgeformers --help`` imports neither onnxruntime nor torch, and
the export commands import the exporter only when they run.
"""

from __future__ import annotations

import importlib
import json
from typing import Any

import click

from edgeformers.models.errors import EdgeformersError

# command name -> "module:attribute"; the module is imported only when the command runs
_COMMANDS = {
    "export": "edgeformers.exporter.cli:export_command",
    "quantize": "edgeformers.exporter.cli:quantize_command",
    "validate": "edgeformers.exporter.cli:validate_command",
    "bench": "edgeformers.runtime.cli_bench:bench_command",
    "slim": "edgeformers.runtime.slim:slim_command",
    "run": "edgeformers.runtime.cli_commands:run_command",
    "inspect": "edgeformers.runtime.cli_commands:inspect_command",
    "tasks": "edgeformers.runtime.cli_commands:tasks_command",
}
_HELP = {
    "export": "Export a checkpoint (Hub id or folder) to a validated ONNX bundle.",
    "quantize": "Add quantized variants to an existing bundle.",
    "run": "Run a bundle's pipeline on inputs: the result as JSON, generated text streamed as text.",
    "inspect": "Show a bundle's task, variants, file sizes and validation results.",
    "tasks": "List the tasks and which architecture families can do them.",
    "validate": "Check a bundle again: fp32 against PyTorch, variants against fp32.",
    "bench": "Time a bundle's variants on this machine and recommend one for it.",
    "slim": "Copy a bundle keeping only some variants (what a device ships).",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        return getattr(importlib.import_module(module_name), attribute)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Short help from a table, so listing commands imports none of them.
        with formatter.section("Commands"):
            formatter.write_dl([(name, _HELP[name]) for name in sorted(_COMMANDS)])


@click.group(cls=LazyGroup)
@click.version_option(package_name="edgeformers")
@click.option("-v", "--verbose", count=True, help="Log more (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """Turn Hugging Face checkpoints into ONNX bundles and run them without PyTorch."""
    import logging

    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if verbose < 2:
        _one_line_warnings(click.get_current_context())


def _one_line_warnings(ctx: click.Context) -> None:
    """While a command runs, print Python warnings as ``warning: <message>`` on stderr: a
    user needs the message (``device 'cuda' is unavailable … falling back to CPU``), not
    the library's file:line and source line (``-vv`` keeps Python's format). Only the
    command group installs it; the library's warnings stay ordinary warnings."""
    import warnings

    previous = warnings.showwarning

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
             file: Any = None, line: str | None = None) -> None:
        click.echo(f"warning: {message}", err=True)

    warnings.showwarning = show
    ctx.call_on_close(lambda: setattr(warnings, "showwarning", previous))


def main() -> None:
    cli()


def fail_on_errors(func: Any) -> Any:
    """Turn edgeformers' typed errors into a one-line CLI error instead of a traceback."""
    import functools

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except EdgeformersError as err:
            raise click.ClickException(f"{type(err).__name__}: {err}") from None

    return wrapper


def echo_reports(reports: dict[str, dict[str, Any]], indent: str = "") -> None:
    """One line per variant's validation report: its figures, without the inputs used."""
    for dtype, report in reports.items():
        figures = {k: v for k, v in report.items() if k not in ("texts", "reference", "inputs")}
        click.echo(f"{indent}{dtype} vs {report.get('reference', '?')}: {figures}")


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))
