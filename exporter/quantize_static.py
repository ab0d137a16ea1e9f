"""int8-static: static int8 quantization in QDQ form, with activation ranges calibrated
ahead of time instead of measured on every call (what makes dynamic q8 pay a min/max
pass per MatMul input).

Naive static quantization collapses accuracy on encoders (token classification is the
known casualty), so only the weight MatMuls/Gemms of the body are quantized and these
stay fp32 (measured with ``benchmarks/bench_variants.py``):

- every op that is not a MatMul/Gemm: embeddings (Gather), LayerNorm, Softmax, GELU,
  the residual Adds — quantizing their outputs is where ranges are widest;
- MatMuls of two activations (attention scores and context): softmax probabilities in
  uint8 lose the small weights the context is made of;
- the head: the MatMuls/Gemms nearest the graph outputs (a classifier's logits, a QA
  span scorer);
- the projections writing into the residual stream (attention output, FFN down): their
  errors add up layer after layer (all-MiniLM-L6-v2: mean cosine 0.99 kept fp32, 0.93 not).
  What is left int8 is the Q/K/V and FFN-up projections, about half the MatMul weights.

Calibration data: ``--calibration FILE`` (text, one example per line) or, without it, a
varied built-in set (:data:`BUILTIN_CALIBRATION`). Real data from the model's domain is
better: ranges come from what the model will see.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgeformers.exporter.onnx_files import restore
from edgeformers.models.errors import InputError
from edgeformers.models.families import Family

logger = logging.getLogger(__name__)

#: Calibration inputs are truncated to this many tokens: ranges settle well before, and
#: calibration time grows with length (entropy/percentile keep histograms per tensor).
CALIBRATION_MAX_TOKENS = 256
#: At most this many examples of a calibration file are used.
CALIBRATION_MAX_EXAMPLES = 512

_IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"})
_AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".mp3", ".ogg", ".m4a", ".opus"})
_MAGIC = (
    (b"\x89PNG", "image"), (b"\xff\xd8\xff", "image"), (b"GIF8", "image"), (b"BM", "image"),
    (b"RIFF", "audio"), (b"fLaC", "audio"), (b"ID3", "audio"), (b"OggS", "audio"),
)

#: Default calibration texts: short and long, questions, lists, numbers, names, accents,
#: CJK and emoji, several registers — so every activation sees its usual range.
BUILTIN_CALIBRATION: tuple[str, ...] = (
    "The meeting has been moved to Thursday at 3 pm.",
    "I can't believe how good this restaurant was, we'll definitely be back!",
    "Worst purchase ever. The battery died after two days.",
    "What is the capital of Australia?",
    "Canberra is the capital city of Australia, located in the Australian Capital Territory.",
    "Please send the invoice to accounts@example.com before Friday.",
    "The patient was prescribed 20 mg of atorvastatin once daily.",
    "Barack Obama was born in Honolulu, Hawaii, and served as the 44th President of the United States.",
    "Apple Inc. reported quarterly revenue of $89.5 billion, down 1% year over year.",
    "The mitochondria is the powerhouse of the cell.",
    "Mix the flour, sugar and eggs, then bake at 180°C for 25 minutes.",
    "Ich habe keine Zeit, aber ich komme morgen vorbei.",
    "La réunion est reportée à la semaine prochaine, désolé pour le dérangement.",
    "¿Dónde está la estación de tren más cercana?",
    "北京是中国的首都，也是一座历史悠久的城市。",
    "今日はとても暑いですね。",
    "Great job team!!! 🎉🎉 Let's keep going 💪",
    "meh",
    "OK",
    "Terms and conditions apply. See store for details. Offer valid while supplies last.",
    "The defendant pleaded not guilty to all charges on Monday.",
    "Stock markets fell sharply after the central bank raised interest rates by 0.5 percentage points.",
    "Can you recommend a good book about the history of mathematics?",
    "Error 404: the page you requested could not be found.",
    "def add(a, b): return a + b",
    "1. Preheat the oven. 2. Grease the pan. 3. Pour the batter.",
    "The quarterback threw a 40-yard touchdown pass in the final minute of the game.",
    "Climate change is affecting rainfall patterns across sub-Saharan Africa.",
    "I'm not sure whether I liked the ending; it felt rushed but also strangely satisfying.",
    "Paris, London, New York, Tokyo and Sydney are among the most visited cities in the world.",
    "Hello, how are you doing today?",
    "The new smartphone features a 6.1-inch display, 128 GB of storage and a 12 MP camera.",
    " ".join([
        "In the early nineteenth century, the expansion of the railway network transformed the economy,",
        "connecting remote towns to growing industrial cities, moving coal, grain and people at speeds",
        "that had been unimaginable only a generation before, and reshaping how ordinary families lived,",
        "worked and thought about distance, time and opportunity.",
    ] * 3),
    " ".join(["Customer review: the delivery was late, the box was damaged, but support replaced the item",
              "within a week and the replacement works perfectly, so overall I am fairly happy."] * 4),
)


def task_modality(task: str | None) -> str:
    """What a task's model reads; every task in the catalog today reads text."""
    return "text"


def read_calibration(path: Path, task: str | None) -> list[str]:
    """The calibration examples in ``path`` for ``task``'s model, or a clear refusal.

    Cheap and done before any work: an empty file, a folder of images or audio (not
    yet supported for text models), or binary data of another modality is an
    :class:`InputError` naming the file and what is accepted.
    """
    modality = task_modality(task)
    model = f"a {task} model" if task else "this model"
    accepted = "a UTF-8 text file with one example per line"
    path = Path(path)
    if path.is_dir():
        kinds = {_kind_of_name(p.name) for p in path.iterdir() if p.is_file()} - {None}
        found = ", ".join(sorted(kinds)) or "no recognised"
        raise InputError(f"--calibration {path} is a folder ({found} files): calibration from a folder of images "
                         f"or audio is not yet supported, and {model} reads {modality}; pass {accepted}")
    if not path.is_file():
        raise InputError(f"--calibration {path} does not exist; pass {accepted}")
    with path.open("rb") as handle:
        head = handle.read(4096)
    kind = _kind_of_name(path.name) or _kind_of_bytes(head)
    if kind is not None and kind != modality:
        raise InputError(f"--calibration {path} holds {kind} data, but {model} reads {modality}: "
                         f"calibration from {kind} is not yet supported; pass {accepted}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"--calibration {path} is not UTF-8 text ({err.reason} at byte {err.start}); "
                         f"pass {accepted}") from None
    if "\x00" in text:
        raise InputError(f"--calibration {path} holds binary data (NUL bytes); pass {accepted}")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise InputError(f"--calibration {path} is empty (no non-blank lines); pass {accepted}")
    return lines[:CALIBRATION_MAX_EXAMPLES]


def _kind_of_name(name: str) -> str | None:
    suffix = Path(name).suffix.lower()
    if suffix in _IMAGE_SUFFIXES:
        return "image"
    if suffix in _AUDIO_SUFFIXES:
        return "audio"
    return None


def _kind_of_bytes(head: bytes) -> str | None:
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    return None


class _TextFeeds:
    """onnxruntime's CalibrationDataReader protocol over tokenized texts, one per call."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self._feeds = feeds
        self._next: Iterator[dict[str, np.ndarray]] = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._next, None)

    def rewind(self) -> None:
        self._next = iter(self._feeds)


def calibration_feeds(bundle: Path, graph: Path, texts: list[str], same_length: bool = False) -> list[dict[str, np.ndarray]]:
    """``texts`` tokenized by the bundle's own tokenizer into the graph's inputs, one per
    feed; ``same_length`` pads them all to the longest (onnxruntime's histogram
    calibrators, entropy and percentile, stack every run's activations into one array)."""
    import onnx
    import transformers

    from edgeformers.runtime.bundle import read_json

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(bundle), trust_remote_code=False)
    names = [i.name for i in onnx.load(str(graph), load_external_data=False).graph.input]
    # Never past the model's positions (tokenizer limit, or config's less RoBERTa's offset of 2).
    positions = read_json(bundle / "config.json", required=True).get("max_position_embeddings") or 10**6
    limit = min(CALIBRATION_MAX_TOKENS, int(tokenizer.model_max_length or 10**6), int(positions) - 2)
    longest = max(len(tokenizer(text, truncation=True, max_length=limit)["input_ids"]) for text in texts)
    padding = {"padding": "max_length", "max_length": longest} if same_length else {"max_length": limit}
    feeds = []
    for text in texts:
        encoded = tokenizer(text, truncation=True, return_tensors="np", **padding)
        if "token_type_ids" in names and "token_type_ids" not in encoded:
            encoded["token_type_ids"] = np.zeros_like(encoded["input_ids"])
        feeds.append({name: np.asarray(encoded[name], dtype=np.int64) for name in names})
    return feeds


def sensitive_nodes(model: Any) -> list[str]:
    """Nodes int8-static keeps fp32 among those it would quantize (see the module doc):
    MatMuls of two activations, the MatMuls/Gemms nearest the graph outputs, and those
    writing into the residual stream."""
    graph = model.graph
    constants = {i.name for i in graph.initializer}
    constants |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    producer = {out: node for node in graph.node for out in node.output}
    keep = [n.name for n in graph.node if n.op_type == "MatMul" and not any(i in constants for i in n.input[1:2])]
    # Walk back from each output through non-MatMul ops up to a norm; a MatMul/Gemm met is the head.
    seen: set[str] = set()
    stack = [o.name for o in graph.output]
    while stack:
        name = stack.pop()
        node = producer.get(name)
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if node.op_type in ("MatMul", "Gemm"):
            keep.append(node.name)
            continue
        if "LayerNorm" in node.op_type:
            continue  # the residual stream: what lies behind a norm is the body, not the head
        stack.extend(node.input)
    # MatMuls writing into the residual stream (their output reaches a norm through Adds only):
    # all-MiniLM-L6-v2 keeps a mean cosine of 0.99 with them fp32, 0.93 without.
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    for node in graph.node:
        if node.op_type not in ("MatMul", "Gemm"):
            continue
        frontier, hops = list(node.output), 0
        while frontier and hops < 3:
            following = [c for out in frontier for c in consumers.get(out, [])]
            if any("LayerNorm" in c.op_type for c in following):
                keep.append(node.name)
                break
            frontier = [o for c in following if c.op_type == "Add" for o in c.output]
            hops += 1
    return sorted(set(keep))


def make_static_int8(source: Path, target: Path, family: Family, options: Any, external_data: bool) -> dict[str, Any]:
    """Write the int8-static variant of ``source`` (``BUNDLE/onnx/model.onnx``) to ``target``."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from edgeformers.exporter.quantize import dynamic_int8, quiet_preprocess_hint

    bundle = source.parent.parent  # the fp32 graph lives in BUNDLE/onnx/, beside which the tokenizer is
    if options.calibration is not None:
        texts, origin = read_calibration(options.calibration, None), str(options.calibration)
    else:
        texts, origin = list(BUILTIN_CALIBRATION), "built-in"
    reader = _TextFeeds(calibration_feeds(bundle, source, texts, same_length=options.calibration_method != "minmax"))
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[options.calibration_method]
    excluded = sensitive_nodes(onnx.load(str(source), load_external_data=False))
    settings = {
        "method": "static",
        "format": "QDQ",
        "activation_type": QuantType.QUInt8.name,
        "weight_type": QuantType.QInt8.name,
        "per_channel": family.quantize_per_channel,
        "reduce_range": family.quantize_reduce_range,
        "op_types": ["MatMul", "Gemm"],
        "embeddings": "int8 (dynamic Gather, weight-only)",
        "calibration": {"source": origin, "examples": len(texts), "method": options.calibration_method},
        "fp32_nodes": excluded,
    }
    with tempfile.TemporaryDirectory(prefix=".static-", dir=target.parent) as scratch, quiet_preprocess_hint():
        body, shaped = Path(scratch) / "body.onnx", source
        if _has_contrib_ops(source):
            # Symbolic shape inference types the outputs of fused contrib ops (--optimize's
            # SkipLayerNormalization, BiasGelu …); without it their activations are never
            # calibrated and the variant silently becomes weight-only. Only then: on plain
            # graphs it also exposes the attention-internal activations, which costs MiniLM
            # 0.04 mean cosine (0.99 -> 0.92).
            shaped = Path(scratch) / "shaped.onnx"
            quant_pre_process(source, shaped, skip_optimization=True, auto_merge=True, save_as_external_data=True,
                              all_tensors_to_one_file=True, external_data_location="shaped.onnx_data")
        quantize_static(
            shaped,
            body,
            reader,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=settings["op_types"],
            per_channel=settings["per_channel"],
            reduce_range=settings["reduce_range"],
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=excluded,
            calibrate_method=method,
            use_external_data_format=True,
            calibration_providers=["CPUExecutionProvider"],
            # Gemm biases stay fp32: int32 biases need their input's scale, which fused
            # graphs (--optimize) do not always expose, and fp32 biases cost nothing.
            extra_options={"QuantizeBias": False},
        )
        # The embedding tables as int8 weights, as q8 has them (weight-only: their outputs
        # are not requantized, which is where static quantization of embeddings hurts).
        dynamic_int8(body, target, ["Gather"], family)
    restore(target, external_data)
    return settings


def _has_contrib_ops(graph: Path) -> bool:
    import onnx

    return any(node.domain == "com.microsoft" for node in onnx.load(str(graph), load_external_data=False).graph.node)
