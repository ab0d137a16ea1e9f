"""Checkpoint -> bundle, atomically: everything is written to a temporary folder beside
OUTPUT and swapped into place only once export, validation and quantization all passed
(``output_dir`` owns the refusals, the lock and the crash-safe swap)."""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

from edgeformers.exporter import audio_inputs, vision_inputs
from edgeformers.exporter.agreement import AgreementCheck, check_min_agreement
from edgeformers.exporter.generation import generation_section, validate_decoder
from edgeformers.exporter.image_to_text import build_image_to_text, is_image_to_text
from edgeformers.exporter.onnx_files import restore, uses_external_data
from edgeformers.exporter.optimize import check_optimize, optimize_graph
from edgeformers.exporter.output_dir import (
    check_apart,
    check_replaceable,
    discarded_on_failure,
    make_work_dir,
    recover,
    resolve_target,
    swap_into_place,
    write_lock,
)
from edgeformers.exporter.quantize import VariantOptions, check_variant_options
from edgeformers.exporter.quiet import quiet_export
from edgeformers.exporter.seq2seq import build_seq2seq, is_seq2seq
from edgeformers.exporter.source import Source, resolve_source
from edgeformers.exporter.tied_embeddings import tie_embeddings
from edgeformers.exporter.validate import (
    compare_outputs,
    reference_inputs,
    reference_tokenizer,
    run_onnx,
    torch_outputs,
)
from edgeformers.exporter.variants import Progress, make_checked_variant, parse_dtypes
from edgeformers.exporter.vision_inputs import VISION_TASKS
from edgeformers.exporter.whisper_export import build_whisper, is_whisper
from edgeformers.models.dtypes import onnx_file_name
from edgeformers.models.errors import (
    EdgeformersError,
    ExportError,
    UnsupportedTaskError,
)
from edgeformers.models.families import Family, check_dtypes, check_supports
from edgeformers.models.tasks import TaskSpec, resolve_task
from edgeformers.runtime.bundle import processing_settings, read_json
from edgeformers.runtime.manifest import Manifest, Variant, describe_files

logger = logging.getLogger(__name__)

# Files of a sentence-transformers checkpoint worth carrying along (the pooling config).
_EXTRA_FILES = ("modules.json", "sentence_bert_config.json", "1_Pooling/config.json", "generation_config.json")
_TOOLS = ("edgeformers", "torch", "transformers", "optimum", "optimum-onnx", "onnx", "onnxruntime", "tokenizers")


def export(
    source: str,
    output: str | Path,
    task: str,
    dtypes: Iterable[str] = ("fp32", "q8"),
    opset: int | None = None,
    atol: float | None = None,
    force: bool = False,
    revision: str | None = None,
    progress: Progress | None = None,
    external_data: bool = True,
    allow_degraded: bool = False,
    options: VariantOptions | None = None,
    optimize: str | None = None,
    allow_pickle: bool = False,
    min_agreement: float | None = None,
) -> Manifest:
    """Export ``source`` for ``task`` into the bundle folder ``output``; returns its manifest.

    Fails with a typed error, leaving ``output`` exactly as it was, if the task is
    unknown or unsupported, the source is missing, or the fp32 graph differs from
    PyTorch beyond ``atol`` (default: the architecture family's tolerance). An existing
    non-empty ``output`` needs ``force``, and even then only an edgeformers bundle holding
    only its own files is replaced (see ``output_dir``); another process writing the same
    ``output`` makes this call fail at once.
    ``external_data=False`` keeps each graph in one file (see ``onnx_files``).
    ``options`` are the q4/int8-static settings; ``optimize`` (O1/O2/O3) fuses the fp32
    graph before variants are made from it (see ``optimize``). ``allow_pickle`` lets a
    checkpoint without safetensors load its pickle weights (see ``source``).
    ``min_agreement`` replaces the catalog's agreement threshold for the variants (recorded
    in the manifest as the user's).
    """
    step = progress or logger.info
    spec = resolve_task(task)
    wanted = parse_dtypes(dtypes)
    _check_atol(atol)
    if min_agreement is not None:
        check_min_agreement(min_agreement)
    check_variant_options(wanted, options, spec.name)
    target = resolve_target(output)
    if Path(source).expanduser().is_dir():
        check_apart(target, Path(source).expanduser())
    check_replaceable(target, force)
    with write_lock(target):
        recover(target)
        check_replaceable(target, force)  # again: recover may have put a killed run's bundle back
        step(f"resolving {source}")
        checkpoint = resolve_source(source, revision, allow_pickle=allow_pickle)
        check_apart(target, checkpoint.path)
        config = read_json(checkpoint.path / "config.json", required=True)
        model_type = config.get("model_type")
        if not isinstance(model_type, str):
            raise ExportError(f"{checkpoint.path / 'config.json'}: missing field 'model_type'")
        family = check_supports(model_type, spec.name)
        check_dtypes(family, wanted)
        check_optimize(family, optimize)
        _check_head(config, spec, checkpoint)
        work = make_work_dir(target)
        with discarded_on_failure(work, target, f"export to OUTPUT {target}"):
            manifest = _build(checkpoint, work, spec, family, wanted, opset, atol, step, external_data, allow_degraded,
                              options, optimize, min_agreement)
            swap_into_place(work, target)
    step(f"wrote {output}")
    return manifest


def _check_head(config: dict[str, Any], spec: TaskSpec, checkpoint: Source) -> None:
    """Refuse a checkpoint whose saved class lacks the task's head: optimum would otherwise
    bolt on a randomly initialised one and the bundle would answer nonsense."""
    architectures = config.get("architectures") or []
    if not spec.head or not architectures:
        return
    endings = (f"For{spec.head}", "LMHeadModel") if spec.head == "CausalLM" else (f"For{spec.head}",)  # GPT2LMHeadModel
    if spec.head == "Seq2SeqLM":  # BartForConditionalGeneration, MarianMTModel
        endings = ("ForSeq2SeqLM", "ForConditionalGeneration", "MTModel")
    endings = (*endings, *spec.head_classes)
    if not any(str(a).endswith(endings) for a in architectures):
        raise UnsupportedTaskError(
            f"checkpoint {checkpoint.hub_id or checkpoint.path} is a {', '.join(architectures)}, which has no "
            f"{spec.head} head; {spec.name!r} needs a *For{spec.head} checkpoint"
        )


def _build(
    checkpoint: Source,
    work: Path,
    spec: TaskSpec,
    family: Family,
    dtypes: list[str],
    opset: int | None,
    atol: float | None,
    step: Progress,
    external_data: bool,
    allow_degraded: bool = False,
    options: VariantOptions | None = None,
    optimize: str | None = None,
    min_agreement: float | None = None,
) -> Manifest:
    if is_image_to_text(spec.export_task):  # image encoder + merged decoder: exporter/image_to_text.py
        return build_image_to_text(checkpoint, work, spec, family, dtypes, opset, atol, step, external_data,
                                   allow_degraded, options, optimize, min_agreement)
    if is_whisper(family.name):  # encoder-decoder speech recognition: exporter/whisper_export.py
        return build_whisper(checkpoint, work, spec, family, dtypes, opset, atol, step, external_data, allow_degraded,
                             options, optimize, min_agreement)
    step(f"[1/4] exporting {spec.export_task} graph with optimum")
    raw = work / "_optimum"
    _optimum_export(checkpoint.path, raw, spec.export_task, opset)
    if is_seq2seq(spec.export_task):  # encoder_model + decoder_model_merged: exporter/seq2seq.py
        return build_seq2seq(checkpoint, work, raw, spec, family, dtypes, atol, step, external_data, allow_degraded,
                             options, optimize, min_agreement)
    onnx_dir = work / "onnx"
    onnx_dir.mkdir()
    fp32 = onnx_dir / onnx_file_name("model", "fp32")
    for file in raw.iterdir():
        if file.name == "model.onnx" or file.name.startswith("model.onnx_data"):
            shutil.move(str(file), str(onnx_dir / file.name))
        elif file.is_file():
            shutil.move(str(file), str(work / file.name))
    shutil.rmtree(raw)
    restore(fp32, external_data)
    if spec.name == "text-generation":  # a tied LM head stored once (exporter/tied_embeddings.py)
        tie_embeddings(fp32)
    if spec.name in audio_inputs.AUDIO_TASKS:  # feature extractor settings; CTC vocab.json has no tokenizer.json form
        audio_inputs.copy_audio_files(checkpoint.path, work)
    elif spec.name not in VISION_TASKS:  # image models have an image processor, no tokenizer
        _ensure_fast_tokenizer(checkpoint.path, work)
    for name in _EXTRA_FILES:
        if (checkpoint.path / name).is_file() and not (work / name).exists():
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(checkpoint.path / name, work / name)

    config = read_json(work / "config.json", required=True)
    if uses_external_data(fp32):
        _mark_external_data(work / "config.json", config)
    processing = processing_settings(work, config)
    tolerance = family.atol if atol is None else atol
    step(f"[2/4] validating fp32 against PyTorch (atol {tolerance:g})")
    graph_inputs, graph_outputs = _graph_io(fp32)
    generation: dict[str, Any] = {}
    if spec.name == "text-generation":  # decoder with past key/values: exporter/generation.py
        generation = generation_section(work, config, fp32)
        validation: dict[str, Any] = {"fp32": validate_decoder(checkpoint.path, work, fp32, tolerance)}
    else:
        inputs = (vision_inputs.reference_inputs(work, graph_inputs) if spec.name in VISION_TASKS
                  else audio_inputs.reference_inputs(work, graph_inputs) if spec.name in audio_inputs.AUDIO_TASKS
                  else reference_inputs(reference_tokenizer(work), processing.get("max_length"), graph_inputs))
        torch_results = torch_outputs(checkpoint.path, spec, inputs, graph_outputs)
        fp32_results = run_onnx(fp32, inputs)
        validation = {"fp32": compare_outputs(fp32_results, torch_results, tolerance)}
        if spec.name in VISION_TASKS:
            validation["fp32"] = vision_inputs.describe_report(validation["fp32"])
        elif spec.name in audio_inputs.AUDIO_TASKS:
            validation["fp32"] = audio_inputs.describe_report(validation["fp32"])
    optimization: dict[str, Any] = {}
    if optimize:
        step(f"[2/4] optimizing fp32 ({optimize}) and validating it against PyTorch again")
        optimization = {"optimization": optimize_graph(fp32, family, config, optimize, uses_external_data(fp32))}
        validation["fp32"] = {**compare_outputs(run_onnx(fp32, inputs), torch_results, tolerance), **optimization}

    variants = {"fp32": Variant("fp32", {"model": fp32.relative_to(work).as_posix()}, extra=optimization)}
    if dtypes[1:]:  # the variants' validation set, run through fp32 once for all of them
        check = AgreementCheck.prepare(work, spec.name, processing.get("max_length"), graph_inputs, fp32,
                                       min_agreement, generation=generation)
        for dtype in dtypes[1:]:
            step(f"[3/4] making the {dtype} variant and checking it against fp32")
            variants[dtype], validation[dtype] = make_checked_variant(work, fp32, dtype, family, check,
                                                                      allow_degraded=allow_degraded, options=options)

    step("[4/4] writing the manifest")
    manifest = Manifest(
        task=spec.name,
        model_type=config["model_type"],
        variants=variants,
        source=checkpoint.describe(),
        inputs=graph_inputs,
        outputs=graph_outputs,
        labels=_labels(config, spec),
        processing=processing,
        generation=generation,
        validation=validation,
        tools=_tool_versions(),
    )
    manifest.files = describe_files(work)
    manifest.write(work)
    return manifest


def _optimum_export(checkpoint: Path, output: Path, export_task: str, opset: int | None) -> None:
    from optimum.exporters.onnx import main_export

    try:
        with quiet_export():
            main_export(
                str(checkpoint),
                output=str(output),
                task=export_task,
                opset=opset,
                device="cpu",
                do_validation=False,  # edgeformers validates every output itself, with per-family tolerances
                library_name="transformers",
                trust_remote_code=False,  # never run a checkpoint's own code (see exporter/source.py)
            )
    except EdgeformersError:
        raise
    except Exception as err:
        raise ExportError(f"optimum could not export {checkpoint} for {export_task!r}: {type(err).__name__}: {err}") from err
    if not (output / "model.onnx").is_file() and not (output / "encoder_model.onnx").is_file():  # one graph, or two
        raise ExportError(f"optimum wrote no model.onnx for {checkpoint} ({sorted(p.name for p in output.iterdir())})")


def _ensure_fast_tokenizer(checkpoint: Path, work: Path) -> None:
    """The runtime reads only tokenizer.json: convert slow/sentencepiece tokenizers here."""
    from edgeformers.exporter.tokenizer_convert import write_checked_tokenizer

    if write_checked_tokenizer(checkpoint, work):  # slow-only checkpoint: converted, checked token for token
        return
    if (work / "tokenizer.json").is_file():
        return
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(checkpoint), use_fast=True, trust_remote_code=False)
    except Exception as err:
        raise ExportError(f"{checkpoint}: could not load or convert its tokenizer to tokenizer.json: {err}") from err
    if not getattr(tokenizer, "is_fast", False):
        raise ExportError(f"{checkpoint}: its tokenizer has no fast (tokenizer.json) form; the runtime needs one")
    tokenizer.save_pretrained(str(work))


def _mark_external_data(path: Path, config: dict[str, Any]) -> None:
    """transformers.js reads ``model.onnx_data`` only when config.json says so."""
    js_config = dict(config.get("transformers.js_config") or {})
    js_config["use_external_data_format"] = True
    config["transformers.js_config"] = js_config
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _labels(config: dict[str, Any], spec: TaskSpec) -> dict[int, str]:
    if spec.head not in ("SequenceClassification", "TokenClassification", "ImageClassification", "ObjectDetection",
                         "AudioClassification"):
        return {}
    return {int(k): str(v) for k, v in (config.get("id2label") or {}).items()}


def _graph_io(path: Path) -> tuple[list[str], list[str]]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in initializers], [o.name for o in model.graph.output]


def _tool_versions() -> dict[str, str]:
    versions = {}
    for name in _TOOLS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _check_atol(atol: float | None) -> None:
    """A NaN tolerance would pass every comparison, a negative one fail every one."""
    if atol is not None and not (math.isfinite(atol) and atol >= 0):
        raise ExportError(f"--atol {atol} must be a finite number >= 0 (the max abs difference to PyTorch)")
