"""The manifest's ``generation`` section for a folder that has no manifest.

A plain ``optimum-cli export onnx --task text-generation-with-past`` output, a
transformers.js-style repo (``onnx/model.onnx`` or ``onnx/decoder_model_merged.onnx``)
and an encoder-decoder folder (``encoder_model.onnx`` + ``decoder_model_merged.onnx``)
carry everything the decoding loop needs, spread over config.json,
generation_config.json and the graphs' own input/output names and KV shapes. This module
gathers it into the section the exporter writes (exporter/generation.py for kind
``"decoder-only"``, exporter/seq2seq.py for ``"encoder-decoder"``), so the runtime's
generation code runs a foreign folder exactly as it runs an edgeformers bundle.

Graphs are read with the pure-Python protobuf walker (runtime/onnx_scan.py), through the
folder's path checks, and never loaded: opening stays cheap. A folder the runtime cannot
decode with (no KV-cache inputs, an input it does not feed, no decoder start token) gets
a ``BundleError`` saying what is missing and how to export it.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from edgeformers.models.errors import BundleError
from edgeformers.models.processing import special_token
from edgeformers.runtime.bundle_files import BundleFolder
from edgeformers.runtime.manifest import Variant
from edgeformers.runtime.onnx_scan import GraphIO, graph_io

logger = logging.getLogger(__name__)

DECODER_ONLY_TASKS = frozenset({"text-generation"})
#: Tasks that run an encoder + merged decoder pair (ASR only when the folder has an
#: encoder graph: a CTC model is one ``model.onnx`` and needs no generation section).
ENCODER_DECODER_TASKS = frozenset({"text2text-generation", "summarization", "translation", "image-to-text"})
_MAYBE_ENCODER_DECODER = frozenset({"automatic-speech-recognition"})

_DECODER_PAST = re.compile(r"^past_key_values\.(\d+)\.(key|value)$")
_SEQ2SEQ_PAST = re.compile(r"^past_key_values\.(\d+)\.(?:(decoder|encoder)\.)?(key|value)$")
#: The graph optimum writes once the unmerged pair is fused (``decoder_model_merged``).
_MERGED = "decoder_model_merged"
_UNMERGED = ("decoder_model", "decoder_with_past_model")
_DECODER_EXPORT = "export it with `optimum-cli export onnx --task text-generation-with-past`"
#: optimum's export task for the encoder-decoder tasks that are not text2text.
_EXPORT_TASKS = {"automatic-speech-recognition": "automatic-speech-recognition-with-past",
                 "image-to-text": "image-to-text-with-past"}


def _seq2seq_export(task: str) -> str:
    export = _EXPORT_TASKS.get(task, "text2text-generation-with-past")
    return f"export it with `optimum-cli export onnx --task {export}`"


def infer_generation(folder: BundleFolder, config: dict[str, Any], task: str,
                     variants: dict[str, Variant]) -> tuple[dict[str, Any], dict[str, Variant]]:
    """(the generation section, the variants the runtime can run) for a folder without a
    manifest; ``({}, variants)`` unchanged for a task that does not generate.

    A decoder-only folder that holds ``decoder_model_merged`` (transformers.js's older
    layout) and no ``model`` runs that graph as its ``model`` component. The section is read
    from one graph (fp32's when present); a variant whose graphs take other inputs (a repo
    mixing ``model.onnx`` with ``decoder_model_merged_quantized.onnx``) is left out, since
    one section names the inputs of all."""
    if task in DECODER_ONLY_TASKS:
        variants = _decoder_only_variants(folder, variants)
        reference = _reference(folder, variants, "model")
        return decoder_only_section(folder, config, reference), _same_inputs(folder, variants, {"model": reference})
    has_encoder = any("encoder_model" in v.files for v in variants.values())
    if task in ENCODER_DECODER_TASKS or (task in _MAYBE_ENCODER_DECODER and has_encoder):
        variants = _encoder_decoder_variants(folder, variants, task)
        graphs = {c: _reference(folder, variants, c) for c in ("encoder_model", _MERGED)}
        return encoder_decoder_section(folder, config, graphs, task), _same_inputs(folder, variants, graphs)
    return {}, variants


def _same_inputs(folder: BundleFolder, variants: dict[str, Variant],
                 reference: dict[str, tuple[str, GraphIO]]) -> dict[str, Variant]:
    """The variants whose graphs take the reference graphs' inputs (names only: an fp16
    graph's float16 past is fine, the stepper follows the graph's type)."""
    kept = {}
    for dtype, variant in variants.items():
        differ = [name for component, (_, io) in reference.items()
                  if set(_io(folder, name := variant.files[component]).input_names) != set(io.input_names)]
        if differ:
            logger.warning("%s: variant %s left out: %s take(s) other inputs than %s", folder.given, dtype,
                           ", ".join(differ), ", ".join(name for name, _ in reference.values()))
        else:
            kept[dtype] = variant
    return kept


def _decoder_only_variants(folder: BundleFolder, variants: dict[str, Variant]) -> dict[str, Variant]:
    usable = {}
    for dtype, variant in variants.items():
        graph = variant.files.get("model") or variant.files.get(_MERGED)
        if graph is not None:
            usable[dtype] = Variant(dtype=dtype, files={"model": graph})
    if not usable:
        found = sorted(name for v in variants.values() for name in v.files.values())
        raise BundleError(
            f"{folder.given}: text-generation runs one decoder graph with its KV cache (model.onnx or "
            f"decoder_model_merged.onnx); the folder has {', '.join(found)}: {_DECODER_EXPORT}"
        )
    return usable


def _encoder_decoder_variants(folder: BundleFolder, variants: dict[str, Variant], task: str) -> dict[str, Variant]:
    usable = {dtype: Variant(dtype=dtype, files={c: v.files[c] for c in ("encoder_model", _MERGED)})
              for dtype, v in variants.items() if "encoder_model" in v.files and _MERGED in v.files}
    if not usable:
        found = sorted(name for v in variants.values() for name in v.files.values())
        hint = (" (optimum fuses decoder_model and decoder_with_past_model into it unless told not to)"
                if any(c in v.files for v in variants.values() for c in _UNMERGED) else "")
        raise BundleError(
            f"{folder.given}: {task} runs an encoder-decoder pair, encoder_model.onnx and "
            f"decoder_model_merged.onnx{hint}; the folder has {', '.join(found)}: {_seq2seq_export(task)}"
        )
    return usable


def _reference(folder: BundleFolder, variants: dict[str, Variant], component: str) -> tuple[str, GraphIO]:
    """(file name, inputs/outputs) of the graph the section is read from: fp32's when the
    folder has it, else the first variant's (:func:`_same_inputs` then keeps the variants
    whose graphs take the same inputs)."""
    variant = variants.get("fp32") or next(iter(variants.values()))
    name = variant.files[component]
    return name, _io(folder, name)


def _io(folder: BundleFolder, name: str) -> GraphIO:
    return graph_io(folder.path(name, f"{folder.given}: ONNX file"), f"{folder.given}/{name}")


def _past_names(io: GraphIO, pattern: re.Pattern[str]) -> tuple[list[str], list[str]]:
    """The graph's past inputs in layer order, and the present outputs that feed them."""
    def order(name: str) -> tuple[Any, ...]:  # layer, then decoder/encoder, then key/value (as the exporter)
        layer, *rest = pattern.match(name).groups()  # type: ignore[union-attr]
        return (int(layer), *("" if part is None else part for part in rest))

    past = sorted((n for n in io.input_names if pattern.match(n)), key=order)
    return past, [n.replace("past_key_values.", "present.", 1) for n in past]


def _kv_shape(io: GraphIO, name: str, where: str) -> tuple[int, int]:
    info = io.input(name)
    dims = info.dims if info is not None else None
    if not dims or len(dims) != 4 or not all(isinstance(d, int) and d > 0 for d in (dims[1], dims[3])):
        raise BundleError(f"{where}: {name} should be [batch, kv_heads, past_length, head_size] with fixed "
                          f"kv_heads and head_size, got {list(dims) if dims else 'no shape'}")
    return int(dims[1]), int(dims[3])  # type: ignore[arg-type]


def _check_fed(io: GraphIO, fed: set[str], where: str) -> None:
    """Refuse a graph input the runtime would not feed, before onnxruntime fails on it."""
    extra = [n for n in io.input_names if n not in fed]
    if extra:
        raise BundleError(f"{where}: the graph takes inputs the runtime does not feed ({', '.join(extra)}); "
                          "it runs graphs with the inputs optimum writes")


def _missing(io: GraphIO, inputs: tuple[str, ...], outputs: tuple[str, ...] | list[str]) -> list[str]:
    return [n for n in inputs if io.input(n) is None] + [n for n in outputs if n not in io.output_names]


def _settings(folder: BundleFolder, config: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """(generation_config.json without its version stamp, a lookup: generation_config, then
    config.json, then config.json's ``decoder`` (vision encoder-decoders nest it)).

    Without a generation_config.json (older checkpoints kept num_beams, max_length … in
    config.json), the generation keys of config.json stand for it, as transformers'
    ``GenerationConfig.from_model_config`` makes them."""
    decoder = config.get("decoder") if isinstance(config.get("decoder"), dict) else {}
    if folder.exists("generation_config.json"):
        generation = folder.read_json("generation_config.json")
    else:
        from edgeformers.runtime.generation.arguments import SETTING_NAMES
        from edgeformers.runtime.pipelines.text2text_settings import GLOBAL_DEFAULTS

        keys = {*SETTING_NAMES, *GLOBAL_DEFAULTS, "decoder_start_token_id", "bos_token_id", "forced_decoder_ids"}
        generation = {k: v for k, v in config.items() if k in keys and v is not None}
        # from_model_config: a decoder sub-config fills what the outer config leaves at the default
        generation.update({k: v for k, v in decoder.items() if k in keys and v is not None
                           and generation.get(k, GLOBAL_DEFAULTS.get(k)) == GLOBAL_DEFAULTS.get(k)})

    def value(name: str) -> Any:
        for source in (generation, config, decoder):
            if source.get(name) is not None:
                return source[name]
        return None

    return {k: v for k, v in generation.items() if k != "transformers_version"}, value


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def _eos(value: Any) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    return [int(v) for v in value] if isinstance(value, list) and all(_int(v) is not None for v in value) else []


def _ids(value: Any) -> int | list[int] | None:
    """A token id or a list of them, as the config gives it; None for anything else."""
    return _int(value) if _int(value) is not None else (_eos(value) or None)


def decoder_only_section(folder: BundleFolder, config: dict[str, Any], graph: tuple[str, GraphIO]) -> dict[str, Any]:
    """The ``"decoder-only"`` section of one graph with ``past_key_values.N.key/value``
    inputs and ``present.N.key/value`` outputs (optimum's text-generation-with-past)."""
    name, io = graph
    where = f"{folder.given}/{name}"
    past, present = _past_names(io, _DECODER_PAST)
    if not past:
        raise BundleError(f"{where} has no past_key_values.* inputs: the runtime decodes with a KV cache; "
                          f"{_DECODER_EXPORT}")
    missing = _missing(io, ("input_ids", "attention_mask"), ["logits", *present])
    if missing:
        raise BundleError(f"{where}: not a decoder with past key/values as optimum writes it "
                          f"(missing {', '.join(missing)}); {_DECODER_EXPORT}")
    optional = [n for n in ("position_ids", "use_cache_branch") if io.input(n) is not None]
    _check_fed(io, {"input_ids", "attention_mask", *optional, *past}, where)
    kv_heads, head_size = _kv_shape(io, past[0], where)
    defaults, value = _settings(folder, config)
    inputs: dict[str, Any] = {"input_ids": "input_ids", "attention_mask": "attention_mask",
                              "position_ids": "position_ids" if "position_ids" in optional else None}
    if "use_cache_branch" in optional:  # transformers.js's decoder_model_merged
        inputs["use_cache_branch"] = "use_cache_branch"
    return {
        "kind": "decoder-only",
        "inputs": inputs,
        "logits": "logits",
        "past_inputs": past,
        "present_outputs": present,
        "num_layers": len(past) // 2,
        "num_heads": _first(value, "num_attention_heads", "n_head"),
        "num_kv_heads": kv_heads,
        "head_size": head_size,
        "max_positions": _first(value, "max_position_embeddings", "n_positions"),
        "bos_token_id": _int(value("bos_token_id")),
        "eos_token_id": _eos(value("eos_token_id")),
        "pad_token_id": _int(value("pad_token_id")),
        "defaults": defaults,
    }


def encoder_decoder_section(folder: BundleFolder, config: dict[str, Any], graphs: dict[str, tuple[str, GraphIO]],
                            task: str = "text2text-generation") -> dict[str, Any]:
    """The ``"encoder-decoder"`` section of an encoder and a merged decoder: self- and
    cross-attention pasts (``past_key_values.N.decoder/encoder.key/value``), or
    self-attention ones only (``past_key_values.N.key/value``: vision encoder-decoders)."""
    enc_name, enc = graphs["encoder_model"]
    dec_name, dec = graphs[_MERGED]
    where = f"{folder.given}/{dec_name}"
    if "last_hidden_state" not in enc.output_names:
        raise BundleError(f"{folder.given}/{enc_name}: the encoder has no last_hidden_state output "
                          f"(it has {', '.join(enc.output_names)}); {_seq2seq_export(task)}")
    past, present = _past_names(dec, _SEQ2SEQ_PAST)
    if not past:
        raise BundleError(f"{where} has no past_key_values.* inputs: the runtime decodes with a KV cache; "
                          f"{_seq2seq_export(task)}")
    missing = _missing(dec, ("input_ids", "encoder_hidden_states"), ["logits", *present])
    if missing:
        raise BundleError(f"{where}: not a merged decoder with past key/values as optimum writes it "
                          f"(missing {', '.join(missing)}); {_seq2seq_export(task)}")
    optional = [n for n in ("encoder_attention_mask", "use_cache_branch") if dec.input(n) is not None]
    _check_fed(dec, {"input_ids", "encoder_hidden_states", *optional, *past}, where)
    self_past = [n for n in past if ".encoder." not in n]
    cross_past = [n for n in past if ".encoder." in n]
    heads, head_size = _kv_shape(dec, self_past[0], where)
    defaults, value = _settings(folder, config)
    start = _int(value("decoder_start_token_id"))
    if start is None:
        raise BundleError(f"{folder.given}: neither generation_config.json nor config.json names a "
                          "decoder_start_token_id; an encoder-decoder cannot start decoding without it")
    section: dict[str, Any] = {
        "kind": "encoder-decoder",
        "encoder": {"component": "encoder_model", "inputs": {n: n for n in enc.input_names},
                    "output": "last_hidden_state"},
        "decoder": {
            "component": _MERGED,
            "inputs": {"input_ids": "input_ids", "encoder_hidden_states": "encoder_hidden_states",
                       "encoder_attention_mask": "encoder_attention_mask" if "encoder_attention_mask" in optional
                       else None,
                       "use_cache_branch": "use_cache_branch" if "use_cache_branch" in optional else None},
            "logits": "logits",
            "past_inputs": past,
            "present_outputs": present,
            "cross_past_inputs": cross_past,
        },
        "num_layers": len(self_past) // 2,
        "num_heads": _first(value, "decoder_attention_heads", "num_heads", "num_attention_heads", "n_head"),
        "num_kv_heads": heads,
        "head_size": head_size,
        "max_positions": _first(value, "max_position_embeddings", "max_target_positions", "n_positions"),
        "vocab_size": _first(value, "vocab_size"),
        "decoder_start_token_id": start,
        "bos_token_id": _int(value("bos_token_id")),
        "eos_token_id": _eos(value("eos_token_id")),
        "pad_token_id": _int(value("pad_token_id")),
        "forced_bos_token_id": _int(value("forced_bos_token_id")),
        "forced_eos_token_id": _ids(value("forced_eos_token_id")),
        "defaults": defaults,
    }
    if cross_past:
        cross_head_size = _kv_shape(dec, cross_past[0], where)[1]
        if cross_head_size != head_size:
            section["encoder_head_size"] = cross_head_size
    section.update(language_settings(folder))
    return section


def language_settings(folder: BundleFolder) -> dict[str, Any]:
    """``language_codes`` and ``source_template`` of a tokenizer with language codes
    (mBART-50, NLLB: tokenizer_config.json names a ``src_lang`` among its
    ``additional_special_tokens``), as the exporter records them from transformers'
    ``lang_code_to_id``: code -> token id, and the ids around an encoded text, the source
    language's code written ``"src_lang"``. ``{}`` for any other tokenizer."""
    config = folder.read_json("tokenizer_config.json")
    source = config.get("src_lang")
    codes = [special_token({"t": t}, "t") for t in config.get("additional_special_tokens") or []]
    if not isinstance(source, str) or source not in codes or not folder.exists("tokenizer.json"):
        return {}
    from edgeformers.runtime.tokenizer import TextTokenizer

    tokenizer = TextTokenizer(folder.given, None)
    ids = {code: tokenizer.token_to_id(code) for code in codes if code}
    languages = {code: int(i) for code, i in ids.items() if i is not None}
    plain = list(tokenizer.encode(["a"], truncation=False, add_special_tokens=False)[0].ids)
    full = list(tokenizer.encode(["a"], truncation=False)[0].ids)
    start = next((i for i in range(len(full) - len(plain) + 1) if full[i:i + len(plain)] == plain), None)
    if not languages or start is None or not plain:
        return {}
    code_ids = set(languages.values())
    mark = lambda ids: ["src_lang" if t in code_ids else int(t) for t in ids]  # noqa: E731
    return {"language_codes": languages,
            "source_template": {"prefix": mark(full[:start]), "suffix": mark(full[start + len(plain):])}}


def _first(value: Any, *names: str) -> int | None:
    for name in names:
        found = _int(value(name))
        if found is not None:
            return found
    return None
