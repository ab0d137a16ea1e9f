"""The runtime's CLI commands: ``run``, ``inspect``, ``tasks`` (base install only)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from edgeformers.models.errors import InputError, ModelOutputError
from edgeformers.runtime.cli import echo_json, echo_reports, fail_on_errors


def _parse_options(options: tuple[str, ...]) -> dict[str, Any]:
    """``-o top_k=2 -o candidate_labels='["a","b"]'``: values read as JSON when they parse."""
    parsed: dict[str, Any] = {}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or not key:
            raise InputError(f"option {option!r} should look like KEY=VALUE")
        try:
            parsed[key.replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            parsed[key.replace("-", "_")] = value
    return parsed


@click.command("run")
@click.argument("bundle", type=click.Path(file_okay=False, path_type=Path))
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@click.option("--task", default=None, help="Task to run (default: the bundle's own).")
@click.option("--dtype", default=None, help="Variant to load: fp32, q8, fp16 … (default: fp32 if present).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or coreml.")
@click.option("--strict", is_flag=True, help="Fail instead of falling back to CPU.")
@click.option("--verify", is_flag=True, help="Check the sha256 of every file the variant reads first.")
@click.option("-o", "--option", "options", multiple=True, metavar="KEY=VALUE",
              help="A pipeline argument, e.g. -o top_k=2 (value parsed as JSON when it parses).")
@click.option("--max-new-tokens", type=int, default=None, help="Generating tasks: tokens to generate at most.")
@click.option("--sample/--greedy", "do_sample", default=None,
              help="Generating tasks: sample, or pick the likeliest token (default: the bundle's generation config).")
@click.option("--temperature", type=float, default=None, help="Generating tasks: sampling temperature.")
@click.option("--top-k", type=int, default=None, help="Generating tasks: sample among the k likeliest tokens.")
@click.option("--top-p", type=float, default=None, help="Generating tasks: nucleus sampling probability mass.")
@click.option("--seed", type=int, default=None, help="Generating tasks: seed that makes sampling repeatable.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the whole result as JSON (generating tasks stream plain text by default).")
@fail_on_errors
def run_command(bundle: Path, inputs: tuple[str, ...], task: str | None, dtype: str | None, device: str,
                strict: bool, verify: bool, options: tuple[str, ...], as_json: bool, **generation: Any) -> None:
    """Run BUNDLE on each INPUT; '-' reads one input per line from stdin. An INPUT that is
    a JSON object is passed as a dict, e.g. '{"question": "...", "context": "..."}'. A
    generating bundle (text-generation, summarization, translation, text2text-generation)
    streams each INPUT's output text to the terminal as it is generated (Ctrl-C stops
    it); --json prints the pipeline's result instead."""
    from edgeformers.runtime.api import pipeline

    items: list[Any] = []
    for item in inputs:
        if item == "-":
            items.extend(_input(line.rstrip("\n")) for line in sys.stdin if line.strip())
        else:
            items.append(_input(item))
    kwargs = _parse_options(options)
    kwargs.update({name: value for name, value in generation.items() if value is not None})
    pipe = pipeline(task, bundle, device=device, dtype=dtype, strict=strict, verify=verify)
    if hasattr(pipe, "stream") and not as_json:
        for item in items:
            _stream_to_terminal(pipe, item, kwargs)
        return
    result = pipe(items[0] if len(items) == 1 else items, **kwargs)
    _echo_result(_plain(result))


def _stream_to_terminal(pipe: Any, prompt: Any, kwargs: dict[str, Any]) -> None:
    """Print the continuation of ``prompt`` piece by piece, flushed as it comes. Ctrl-C
    cancels the stream, says so on one stderr line and exits with 130 (128 + SIGINT)."""
    stream = pipe.stream(prompt, **kwargs)
    try:
        for piece in stream:
            click.echo(piece, nl=False)
            sys.stdout.flush()
    except KeyboardInterrupt:
        stream.cancel()
        click.echo("")
        click.echo(f"interrupted after {len(stream.token_ids)} tokens", err=True)
        sys.exit(130)
    click.echo("")


def _echo_result(result: Any) -> None:
    """The result as strict JSON: a NaN or infinity (which the session checks already
    refuse) would be invalid JSON, so it is an error line, never printed."""
    try:
        text = json.dumps(result, indent=2, ensure_ascii=False, allow_nan=False)
    except ValueError as err:
        raise ModelOutputError(f"the result holds a value JSON cannot carry ({err}); nothing was printed") from None
    click.echo(text)


def _input(text: str) -> Any:
    """A JSON object argument is a structured input ({"question", "context"} for QA,
    {"text", "text_pair"} for pairs), a JSON list of objects is chat messages
    ('[{"role": "user", "content": "Hi"}]' for text-generation); anything else is text."""
    if text.lstrip().startswith(("{", "[")):
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            return text
        if isinstance(value, dict) or (isinstance(value, list) and value and all(isinstance(v, dict) for v in value)):
            return value
    return text


def _plain(value: Any) -> Any:
    """numpy arrays (return_tensors=True) as lists, so any result prints as JSON."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


@click.command("inspect")
@click.argument("bundle", type=click.Path(file_okay=False, path_type=Path))
@click.option("--verify", is_flag=True, help="Check every file's sha256 too.")
@click.option("--json", "as_json", is_flag=True, help="Print the whole manifest as JSON.")
@fail_on_errors
def inspect_command(bundle: Path, verify: bool, as_json: bool) -> None:
    """Show BUNDLE's task, variants, file sizes and validation results."""
    import warnings

    from edgeformers.runtime.bundle import Bundle

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "nothing to verify" is its own line below
        opened = Bundle.open(bundle, verify=verify)
    manifest = opened.manifest
    if as_json:
        echo_json(manifest.to_dict())
        return
    click.echo(f"bundle:   {opened.path}" + ("" if opened.has_manifest else "  (no manifest; inferred)"))
    click.echo(f"task:     {manifest.task}")
    click.echo(f"model:    {manifest.model_type}")
    click.echo(f"source:   {json.dumps(manifest.source)}")
    if manifest.labels:
        click.echo(f"labels:   {json.dumps({str(k): v for k, v in manifest.labels.items()}, ensure_ascii=False)}")
    click.echo("variants:")
    present = opened.present_variants()
    for dtype, variant in manifest.variants.items():
        files = ", ".join(variant.files.values())
        if dtype in present:
            # Checks the graphs and their external data (sha256 too with --verify).
            click.echo(f"  {dtype:<6} {files:<40} {opened.variant_bytes(dtype) / 1e6:8.1f} MB (with weights)"
                       + _degraded_note(manifest.validation.get(dtype)))
        else:
            missing = ", ".join(opened.missing_files(dtype))
            click.echo(f"  {dtype:<6} {files:<40} listed but absent (missing: {missing})")
    if manifest.validation:
        click.echo("validation:")
        echo_reports(manifest.validation, indent="  ")
    if verify:
        if opened.nothing_to_verify:
            click.echo(f"checksums: nothing to verify: {opened.nothing_to_verify}")
        else:
            checked = manifest.shared_files() + [n for d in present for n in manifest.listed_files(d)]
            absent = len(manifest.files) - len(set(checked) & set(manifest.files))
            click.echo(f"checksums: all {len(set(checked) & set(manifest.files))} files present match"
                       + (f" ({absent} files of absent variants not checked)" if absent else ""))


def _degraded_note(report: Any) -> str:
    """`` DEGRADED (metric value < threshold)`` for a variant kept with --allow-degraded."""
    if not isinstance(report, dict) or not report.get("degraded"):
        return ""
    value = report.get("value")
    shown = f"{value:.4f}" if isinstance(value, (int, float)) else value
    return f"  DEGRADED ({report.get('metric')} {shown} < threshold {report.get('threshold')})"


@click.command("tasks")
def tasks_command() -> None:
    """List the tasks, their aliases, and the architecture families that can do them."""
    from edgeformers.models.families import FAMILIES
    from edgeformers.models.tasks import TASKS
    from edgeformers.runtime.pipelines import PIPELINES

    for spec in TASKS.values():
        aliases = f" (alias: {', '.join(spec.aliases)})" if spec.aliases else ""
        runtime = "" if spec.name in PIPELINES else "  [export only: no runtime pipeline yet]"
        click.echo(f"{spec.name}{aliases}{runtime}")
        click.echo(f"    {spec.description}")
        families = [name for name, family in FAMILIES.items() if spec.name in family.tasks]
        click.echo(f"    families: {', '.join(families)}")
