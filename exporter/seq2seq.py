"""Encoder-decoder exports (text2text-generation, summarization, translation): optimum's
``encoder_model.onnx`` + ``decoder_model_merged.onnx`` placed in the bundle, the manifest's
``generation`` section of kind ``"encoder-decoder"``, validation against PyTorch, and the
quantized variants (every component quantized, the pair held to greedy-token agreement).

Validation (exporter/seq2seq_validate.py) runs the fp32 encoder against PyTorch's, the
merged decoder's first step (no cache) and a cached step against PyTorch's logits, and
greedy decoding through the runtime's own
:class:`~edgeformers.runtime.generation.seq2seq.Seq2SeqGenerator` against ``model.generate``
token for token; anything past the family's tolerance is a :class:`ValidationError`.
exporter/whisper_export.py reuses the layout, section and variant code here.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeformers.exporter.seq2seq_validate import Seq2SeqAgreement, validate_seq2seq
from edgeformers.exporter.seq2seq_validate import onnx_generator as _generator  # noqa: F401 (whisper_export uses it)
from edgeformers.models.dtypes import EXTERNAL_DATA_SUFFIX, onnx_file_name
from edgeformers.models.errors import ExportError

COMPONENTS = ("encoder_model", "decoder_model_merged")
#: optimum also writes the unmerged decoders; the merged one replaces both.
_UNMERGED = ("decoder_model", "decoder_with_past_model")
_PAST = re.compile(r"^past_key_values\.(\d+)\.(decoder|encoder)\.(key|value)$")


def is_seq2seq(export_task: str) -> bool:
    """Text encoder-decoders, built by :func:`build_seq2seq` (Whisper has its own
    validation data: exporter/whisper_export.py reuses the layout and variant code here)."""
    return export_task == "text2text-generation-with-past"


def place_graphs(raw: Path, onnx_dir: Path) -> dict[str, Path]:
    """Move the encoder and merged decoder (and their weights) from optimum's output
    into ``onnx/``; drop the unmerged decoders. Returns component -> fp32 graph."""
    graphs = {}
    for component in COMPONENTS:
        name = onnx_file_name(component, "fp32")
        if not (raw / name).is_file():
            raise ExportError(f"optimum wrote no {name} ({sorted(p.name for p in raw.iterdir())}); an encoder-decoder "
                              "bundle needs encoder_model.onnx and decoder_model_merged.onnx")
        for file in raw.glob(name + "*"):
            shutil.move(str(file), str(onnx_dir / file.name))
        graphs[component] = onnx_dir / name
    for component in _UNMERGED:
        for file in raw.glob(f"{component}.onnx*"):
            file.unlink()
    return graphs


def _io(graph: Path) -> tuple[dict[str, list[Any]], dict[str, list[Any]]]:
    import onnx

    model = onnx.load(str(graph), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}
    shape = lambda value: [d.dim_value or d.dim_param for d in value.type.tensor_type.shape.dim]  # noqa: E731
    return ({i.name: shape(i) for i in model.graph.input if i.name not in initializers},
            {o.name: shape(o) for o in model.graph.output})


def generation_section(folder: Path, config: dict[str, Any], graphs: dict[str, Path]) -> dict[str, Any]:
    """Names, cache layout and token ids of an encoder + merged decoder pair; the
    encoder's inputs are recorded by name (text, audio features or pixels alike)."""
    enc_in, enc_out = _io(graphs["encoder_model"])
    dec_in, dec_out = _io(graphs["decoder_model_merged"])
    key = lambda n: (int(_PAST.match(n).group(1)), _PAST.match(n).group(2), _PAST.match(n).group(3))  # type: ignore[union-attr]  # noqa: E731
    past = sorted((n for n in dec_in if _PAST.match(n)), key=key)
    present = [n.replace("past_key_values.", "present.", 1) for n in past]
    missing = [n for n in ("input_ids", "encoder_hidden_states", "use_cache_branch") if n not in dec_in]
    missing += [n for n in ("logits", *present) if n not in dec_out]
    if not past or missing or "last_hidden_state" not in enc_out:
        raise ExportError(f"{graphs['decoder_model_merged'].name}: not a merged decoder with past key/values as optimum "
                          f"writes it (missing {missing or ['past_key_values.*']})")
    self_past = [n for n in past if ".decoder." in n]
    cross_past = [n for n in past if ".encoder." in n]
    heads, head_size = dec_in[self_past[0]][1], dec_in[self_past[0]][3]
    cross_head_size = dec_in[cross_past[0]][3] if cross_past else head_size
    if not all(isinstance(v, int) and v for v in (heads, head_size)):
        raise ExportError(f"{self_past[0]} has no fixed head count / head size ({dec_in[self_past[0]]})")
    generation = _read(folder / "generation_config.json")
    value = lambda name: generation.get(name, config.get(name))  # noqa: E731
    eos = value("eos_token_id")
    section: dict[str, Any] = {
        "kind": "encoder-decoder",
        "encoder": {"component": "encoder_model", "inputs": {n: n for n in enc_in}, "output": "last_hidden_state"},
        "decoder": {
            "component": "decoder_model_merged",
            "inputs": {"input_ids": "input_ids", "encoder_hidden_states": "encoder_hidden_states",
                       "encoder_attention_mask": "encoder_attention_mask" if "encoder_attention_mask" in dec_in else None,
                       "use_cache_branch": "use_cache_branch"},
            "logits": "logits",
            "past_inputs": past,
            "present_outputs": present,
            "cross_past_inputs": cross_past,
        },
        "num_layers": len(self_past) // 2,
        "num_heads": _first(config, "decoder_attention_heads", "num_heads", "num_attention_heads"),
        "num_kv_heads": heads,
        "head_size": head_size,
        "max_positions": _first(config, "max_position_embeddings", "max_target_positions"),
        "vocab_size": _first(config, "vocab_size"),
        "decoder_start_token_id": value("decoder_start_token_id"),
        "bos_token_id": value("bos_token_id"),
        "eos_token_id": [eos] if isinstance(eos, int) else list(eos or []),
        "pad_token_id": value("pad_token_id"),
        "forced_bos_token_id": value("forced_bos_token_id"),
        "forced_eos_token_id": value("forced_eos_token_id"),
        "defaults": {k: v for k, v in generation.items() if k != "transformers_version"},
    }
    if cross_head_size != head_size:
        section["encoder_head_size"] = cross_head_size
    if not isinstance(section["decoder_start_token_id"], int):
        raise ExportError("the checkpoint names no decoder_start_token_id (generation_config.json or config.json); "
                          "an encoder-decoder cannot start decoding without it")
    section.update(_languages(folder))
    return section


def _languages(folder: Path) -> dict[str, Any]:
    """A tokenizer with language codes (mBART-50, M2M100, NLLB): code -> token id, and
    where the source code goes around the text (``src_lang`` standing for it)."""
    from edgeformers.exporter.validate import reference_tokenizer

    tokenizer = reference_tokenizer(folder)
    codes = getattr(tokenizer, "lang_code_to_id", None)
    if not isinstance(codes, dict) or not codes or not hasattr(tokenizer, "src_lang"):
        return {}
    first = next(iter(codes))
    tokenizer.src_lang = first
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    start = next((i for i in range(len(full) - len(plain) + 1) if full[i:i + len(plain)] == plain), None)
    if start is None:
        return {}
    mark = lambda ids: ["src_lang" if t == codes[first] else int(t) for t in ids]  # noqa: E731
    return {"language_codes": {str(k): int(v) for k, v in codes.items()},
            "source_template": {"prefix": mark(full[:start]), "suffix": mark(full[start + len(plain):])}}


def make_variants(work: Path, fp32: dict[str, Path], dtypes: list[str], family: Any, check: Seq2SeqAgreement,
                  allow_degraded: bool, options: Any, step: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Each dtype's variant of both graphs, held to the task's agreement with fp32."""
    from edgeformers.exporter.agreement import hold_to_threshold
    from edgeformers.exporter.onnx_files import uses_external_data
    from edgeformers.exporter.quantize import make_variant
    from edgeformers.runtime.manifest import Variant

    variants, reports = {}, {}
    for dtype in dtypes:
        step(f"[3/4] making the {dtype} variant of {', '.join(COMPONENTS)} and checking it against fp32")
        graphs, settings = {}, {}
        for component, source in fp32.items():
            target = source.with_name(onnx_file_name(component, dtype))
            settings[component] = make_variant(source, target, dtype, family, external_data=uses_external_data(source),
                                               options=options)
            graphs[component] = target
        reports[dtype] = hold_to_threshold(check.measure(graphs), dtype, allow_degraded)
        first = settings[COMPONENTS[0]]
        quantization = first if all(s == first for s in settings.values()) else {"components": settings}
        variants[dtype] = Variant(dtype, {c: g.relative_to(work).as_posix() for c, g in graphs.items()}, quantization)
    return variants, reports


def fp32_variant(work: Path, fp32: dict[str, Path]) -> Any:
    from edgeformers.runtime.manifest import Variant

    return Variant("fp32", {c: g.relative_to(work).as_posix() for c, g in fp32.items()})


@dataclass(frozen=True)
class TwoGraphKind:
    """What one kind of encoder + merged-decoder export (text, Whisper, image-to-text) does
    its own way; everything else about the bundle is :func:`build_two_graphs`'s.

    ``agreement(work, task, generation, fp32, processing, min_agreement)`` returns the check
    that holds each variant to greedy-token agreement with fp32."""

    section: Callable[[Path, dict[str, Any], dict[str, Path]], dict[str, Any]]
    validate: Callable[[Path, Path, dict[str, Path], dict[str, Any], float], dict[str, Any]]
    agreement: Callable[..., Any]
    copy_files: Callable[[Path, Path], None] | None = None
    extra_files: tuple[str, ...] = ()


def build_two_graphs(checkpoint: Any, work: Path, raw: Path, spec: Any, family: Any, dtypes: list[str],
                     atol: float | None, step: Any, external_data: bool, allow_degraded: bool, options: Any,
                     min_agreement: float | None, kind: TwoGraphKind) -> Any:
    """exporter/build.py's ``_build`` from optimum's output (``raw``) on, for an encoder and
    a merged decoder: the same shared files and manifest as any bundle, two graphs per variant."""
    from edgeformers.exporter import build
    from edgeformers.exporter.onnx_files import restore, uses_external_data
    from edgeformers.exporter.tied_embeddings import tie_embeddings
    from edgeformers.runtime.bundle import processing_settings, read_json
    from edgeformers.runtime.manifest import Manifest, describe_files

    onnx_dir = work / "onnx"
    onnx_dir.mkdir()
    fp32 = place_graphs(raw, onnx_dir)
    for file in raw.iterdir():
        if file.is_file() and not file.name.endswith(".onnx") and ".onnx" + EXTERNAL_DATA_SUFFIX not in file.name:
            shutil.move(str(file), str(work / file.name))
    shutil.rmtree(raw)
    for graph in fp32.values():
        restore(graph, external_data)
    # the tied embedding table stored once (exporter/tied_embeddings.py), before validation checks the graph
    tie_embeddings(fp32["decoder_model_merged"])
    if kind.copy_files is not None:
        kind.copy_files(checkpoint.path, work)
    build._ensure_fast_tokenizer(checkpoint.path, work)
    for name in (*kind.extra_files, *build._EXTRA_FILES):
        if (checkpoint.path / name).is_file() and not (work / name).exists():
            shutil.copyfile(checkpoint.path / name, work / name)
    config = read_json(work / "config.json", required=True)
    if uses_external_data(fp32["encoder_model"]):
        build._mark_external_data(work / "config.json", config)
    processing = processing_settings(work, config)
    tolerance = family.atol if atol is None else atol
    step(f"[2/4] validating fp32 encoder and decoder against PyTorch (atol {tolerance:g})")
    generation = kind.section(work, config, fp32)
    validation = {"fp32": kind.validate(checkpoint.path, work, fp32, generation, tolerance)}
    variants = {"fp32": fp32_variant(work, fp32)}
    if dtypes[1:]:
        check = kind.agreement(work, spec.name, generation, fp32, processing, min_agreement)
        made, reports = make_variants(work, fp32, dtypes[1:], family, check, allow_degraded, options, step)
        variants.update(made)
        validation.update(reports)
    step("[4/4] writing the manifest")
    inputs, outputs = build._graph_io(fp32["decoder_model_merged"])
    manifest = Manifest(task=spec.name, model_type=config["model_type"], variants=variants,
                        source=checkpoint.describe(), inputs=inputs, outputs=outputs, processing=processing,
                        generation=generation, validation=validation, tools=build._tool_versions())
    manifest.files = describe_files(work)
    manifest.write(work)
    return manifest


def _text_agreement(work: Path, task: str, generation: dict[str, Any], fp32: dict[str, Path],
                    processing: dict[str, Any], min_agreement: float | None) -> Seq2SeqAgreement:
    return Seq2SeqAgreement(work, task, generation, fp32, processing.get("max_length"), min_agreement)


#: Text encoder-decoders (BART, T5, mBART, Marian).
TEXT = TwoGraphKind(section=generation_section, validate=validate_seq2seq, agreement=_text_agreement)


def revalidate_two_graphs(bundle: Any, checkpoint: Path, atol: float, min_agreement: float | None,
                          kind: TwoGraphKind) -> dict[str, Any]:
    """``edgeformers validate`` on an encoder + merged-decoder bundle: fp32 against PyTorch
    again, every other variant's agreement against fp32 (held to ``min_agreement``, else the
    threshold it was accepted under); raises ValidationError listing failures."""
    from edgeformers.exporter.validate import held_to_recorded_thresholds

    manifest = bundle.manifest
    graphs = {dtype: {c: bundle.onnx_path(dtype, c) for c in COMPONENTS} for dtype in manifest.variants}
    reports = {"fp32": kind.validate(checkpoint, bundle.path, graphs["fp32"], manifest.generation, atol)}
    others = [dtype for dtype in manifest.variants if dtype != "fp32"]
    if others:
        check = kind.agreement(bundle.path, manifest.task, manifest.generation, graphs["fp32"], manifest.processing,
                               min_agreement)
        for dtype in others:
            reports[dtype] = check.measure(graphs[dtype])
    return held_to_recorded_thresholds(reports, manifest, min_agreement)


def kind_for(task: str, family: str) -> TwoGraphKind:
    """The export kind that made an encoder + merged-decoder bundle of ``task`` / ``family``."""
    if task == "image-to-text":
        from edgeformers.exporter.image_to_text import KIND as image_kind

        return image_kind
    if family == "whisper":
        from edgeformers.exporter.whisper_export import KIND as whisper_kind

        return whisper_kind
    return TEXT


def build_seq2seq(checkpoint: Any, work: Path, raw: Path, spec: Any, family: Any, dtypes: list[str],
                  atol: float | None, step: Any, external_data: bool, allow_degraded: bool, options: Any,
                  optimize: str | None, min_agreement: float | None) -> Any:
    """A text encoder-decoder bundle from optimum's output."""
    if optimize:
        raise ExportError(f"--optimize {optimize}: encoder-decoder exports take no graph optimization yet")
    return build_two_graphs(checkpoint, work, raw, spec, family, dtypes, atol, step, external_data, allow_degraded,
                            options, min_agreement, TEXT)


def _first(config: dict[str, Any], *names: str) -> int | None:
    for name in names:
        if isinstance(config.get(name), int) and not isinstance(config.get(name), bool):
            return int(config[name])
    return None


def _read(path: Path) -> dict[str, Any]:
    from edgeformers.runtime.bundle import read_json

    return read_json(path) if path.is_file() else {}


__all__ = ["COMPONENTS", "Seq2SeqAgreement", "TwoGraphKind", "build_seq2seq", "build_two_graphs", "kind_for", "revalidate_two_graphs", "generation_section", "is_seq2seq", "make_variants",
           "place_graphs", "validate_seq2seq"]
