"""Generative folders without an edgeformers.json, as users have them: a plain
``optimum.exporters.onnx.main_export`` output (what ``optimum-cli export onnx`` writes) and
the transformers.js repo layout (graphs under ``onnx/``: ``model.onnx``, the older
``decoder_model_merged.onnx`` with its ``use_cache_branch``, an encoder-decoder pair).
The runtime builds the generation section from config.json, generation_config.json and
the graphs' own names (runtime/foreign_generation.py); greedy and beam outputs equal
``transformers.pipeline``'s on the same checkpoints. Folders it cannot decode get a
BundleError naming what is missing; graph_io (the protobuf walker) equals the onnx
package's reading of the same graphs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
onnx = pytest.importorskip("onnx")
pytest.importorskip("optimum.exporters.onnx")

from edgeformers.models.errors import BundleError  # noqa: E402
from edgeformers.runtime import pipeline  # noqa: E402
from edgeformers.runtime.bundle import Bundle  # noqa: E402
from edgeformers.runtime.onnx_scan import graph_io  # noqa: E402

PROMPTS = ["ok", "The quick brown fox jumps over", "Café au lait in Zürich 🙂"]
TEXTS = ["The quick brown fox jumps over the lazy dog.", "ok", "Café au lait in Zürich 🙂 costs five euros today"]
NEW = 10


def _export(checkpoint: Path, out: Path, task: str, **kwargs) -> Path:
    """optimum's export as a user runs it (optimum-cli export onnx calls main_export)."""
    from optimum.exporters.onnx import main_export

    from edgeformers.exporter.quiet import quiet_export

    with quiet_export():
        main_export(str(checkpoint), output=str(out), task=task, device="cpu", do_validation=False, **kwargs)
    return out


def _transformers_js(source: Path, dest: Path, graphs: dict[str, Path]) -> Path:
    """A transformers.js repo: the configs and tokenizer at the top, ``graphs`` (file name ->
    graph) under ``onnx/``."""
    (dest / "onnx").mkdir(parents=True)
    for file in source.iterdir():
        if file.is_file() and not file.name.endswith(".onnx"):
            shutil.copyfile(file, dest / file.name)
    for name, graph in graphs.items():
        shutil.copyfile(graph, dest / "onnx" / name)
    return dest


def _io(graph: Path) -> tuple[tuple, tuple]:
    """Inputs (initializers left out) and outputs as the onnx package reads them."""
    model = onnx.load(str(graph), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}

    def dims(value):
        if not value.type.tensor_type.HasField("shape"):
            return None
        return tuple(d.dim_value if d.HasField("dim_value") else d.dim_param if d.HasField("dim_param") else None
                     for d in value.type.tensor_type.shape.dim)

    return (tuple((i.name, i.type.tensor_type.elem_type, dims(i)) for i in model.graph.input if i.name not in initializers),
            tuple((o.name, o.type.tensor_type.elem_type, dims(o)) for o in model.graph.output))


def _ours_io(graph: Path) -> tuple[tuple, tuple]:
    scanned = graph_io(graph, str(graph))
    return (tuple((i.name, i.elem_type, i.dims) for i in scanned.inputs),
            tuple((o.name, o.elem_type, o.dims) for o in scanned.outputs))


@pytest.fixture(scope="module")
def decoder_exports(checkpoint_factory, tmp_path_factory):
    """arch -> (checkpoint, optimum's text-generation-with-past output folder), each exported once."""
    made: dict[str, tuple[Path, Path]] = {}

    def get(arch: str) -> tuple[Path, Path]:
        if arch not in made:
            checkpoint = checkpoint_factory(arch, "causal-lm")
            made[arch] = checkpoint, _export(checkpoint, tmp_path_factory.mktemp(f"{arch}-optimum"),
                                             "text-generation-with-past")
        return made[arch]

    return get


@pytest.fixture(params=["gpt2", "llama"])
def decoder(request, decoder_exports):
    """(arch, checkpoint, optimum's text-generation-with-past output folder)."""
    return (request.param, *decoder_exports(request.param))


@pytest.fixture(scope="module")
def bart(tmp_path_factory):
    """(checkpoint, optimum's text2text-generation-with-past output: encoder_model, decoder_model,
    decoder_with_past_model and decoder_model_merged)."""
    from tests.fixtures.seq2seq_checkpoints import build_seq2seq_checkpoint

    checkpoint = build_seq2seq_checkpoint("bart", tmp_path_factory.mktemp("bart-checkpoint"))
    return checkpoint, _export(checkpoint, tmp_path_factory.mktemp("bart-optimum"), "text2text-generation-with-past")


def _same_as_transformers(folder: Path, checkpoint: Path, full_text: tuple[bool, ...] = (True,)) -> None:
    ours = pipeline("text-generation", folder, device="cpu")
    assert not ours.bundle.has_manifest and ours.bundle.manifest.generation["kind"] == "decoder-only"
    theirs = transformers.pipeline("text-generation", model=str(checkpoint))
    call = {"do_sample": False, "max_new_tokens": NEW}
    for full in full_text:
        for prompt in PROMPTS:
            assert ours(prompt, return_full_text=full, **call) == theirs(prompt, return_full_text=full, **call)
    # one left-padded batch gives each prompt the text it gets alone
    assert ours(PROMPTS, batch_size=3, **call) == theirs(PROMPTS, **call)


def test_optimum_cli_decoder_folder_matches_transformers_pipeline(decoder):
    _, checkpoint, folder = decoder
    assert not (folder / "edgeformers.json").exists() and (folder / "model.onnx").is_file()
    _same_as_transformers(folder, checkpoint, full_text=(True, False))
    # no task given: GPT2LMHeadModel / LlamaForCausalLM name it
    assert Bundle.open(folder).manifest.task == "text-generation"


def test_transformers_js_model_onnx_layout_matches_transformers_pipeline(decoder, tmp_path):
    _, checkpoint, folder = decoder
    repo = _transformers_js(folder, tmp_path / "repo", {"model.onnx": folder / "model.onnx"})
    _same_as_transformers(repo, checkpoint)
    section = pipeline("text-generation", repo, device="cpu").bundle.manifest.generation
    layout = graph_io(folder / "model.onnx", "model.onnx")
    assert section["past_inputs"] == [n for n in layout.input_names if n.startswith("past_key_values.")]
    config = transformers.AutoConfig.from_pretrained(str(checkpoint))
    assert section["num_kv_heads"] == getattr(config, "num_key_value_heads", config.num_attention_heads)
    assert section["head_size"] == config.hidden_size // config.num_attention_heads
    assert section["eos_token_id"] == [config.eos_token_id]


def test_transformers_js_merged_decoder_runs_both_branches(decoder_exports, tmp_path):
    """transformers.js's older decoder-only layout: ``onnx/decoder_model_merged.onnx``, the
    no-past decoder and the with-past decoder fused under an If on ``use_cache_branch``
    (built here as optimum builds it). The no-past branch ignores the past inputs, so the
    tokens only match if the runtime feeds True on the cached steps (feeding False there
    was checked to change the text)."""
    from optimum.exporters.tasks import TasksManager
    from optimum.onnx.graph_transformations import merge_decoders

    checkpoint, with_past = decoder_exports("gpt2")
    config = transformers.AutoConfig.from_pretrained(str(checkpoint))
    constructor = TasksManager.get_exporter_config_constructor(
        exporter="onnx", model_type="gpt2", task="text-generation", library_name="transformers")
    no_past = constructor(config, task="text-generation", use_past=True, use_past_in_inputs=False)
    first = _export(checkpoint, tmp_path / "no-past", "text-generation", custom_onnx_configs={"model": no_past})
    merged = tmp_path / "decoder_model_merged.onnx"
    merge_decoders(first / "model.onnx", with_past / "model.onnx", save_path=merged)
    # a second variant of the same graph kind is kept; one taking other inputs is left out
    # (stand-ins under the variant names: only the names are read at load time)
    repo = _transformers_js(with_past, tmp_path / "repo", {"decoder_model_merged.onnx": merged,
                                                           "decoder_model_merged_fp16.onnx": merged,
                                                           "model_quantized.onnx": with_past / "model.onnx"})
    ours = pipeline("text-generation", repo, device="cpu")
    variants = ours.bundle.manifest.variants
    assert {d: v.files for d, v in variants.items()} == {"fp32": {"model": "onnx/decoder_model_merged.onnx"},
                                                         "fp16": {"model": "onnx/decoder_model_merged_fp16.onnx"}}
    assert ours.bundle.manifest.generation["inputs"]["use_cache_branch"] == "use_cache_branch"
    _same_as_transformers(repo, checkpoint)


def test_optimum_cli_seq2seq_folder_matches_transformers_pipeline(bart):
    """optimum's four graphs at the top; the runtime runs the encoder and the merged decoder
    with the checkpoint's own summarization defaults (beam search, no_repeat_ngram_size …)."""
    checkpoint, folder = bart
    ours = pipeline("summarization", folder, device="cpu")
    assert not ours.bundle.has_manifest and ours.bundle.manifest.generation["kind"] == "encoder-decoder"
    assert set(ours.bundle.manifest.variants["fp32"].files) == {"encoder_model", "decoder_model_merged"}
    theirs = transformers.pipeline("summarization", model=str(checkpoint))
    assert ours(TEXTS, max_new_tokens=8) == theirs(TEXTS, max_new_tokens=8)
    # no task given: BartForConditionalGeneration runs the generic encoder-decoder task
    assert Bundle.open(folder).manifest.task == "text2text-generation"


def test_generation_settings_kept_in_config_json_count_as_transformers_counts_them(bart, tmp_path):
    """Older checkpoints have no generation_config.json and keep num_beams, max_length,
    no_repeat_ngram_size … in config.json; transformers builds its generation config from
    them (GenerationConfig.from_model_config), and so does the runtime."""
    checkpoint, folder = bart
    legacy = {name: Path(shutil.copytree(source, tmp_path / name)) for name, source in
              (("checkpoint", checkpoint), ("folder", folder))}
    settings = json.loads((folder / "generation_config.json").read_text())
    assert settings["num_beams"] > 1 and settings["no_repeat_ngram_size"] and settings["max_length"] != 20
    for copy in legacy.values():
        config = json.loads((copy / "config.json").read_text())
        (copy / "config.json").write_text(json.dumps({**config, **settings}))
        (copy / "generation_config.json").unlink()
    ours = pipeline("summarization", legacy["folder"], device="cpu")
    assert ours(TEXTS) == transformers.pipeline("summarization", model=str(legacy["checkpoint"]))(TEXTS)


def test_transformers_js_seq2seq_layout_matches_transformers_pipeline(bart, tmp_path):
    checkpoint, folder = bart
    repo = _transformers_js(folder, tmp_path / "repo", {
        name: folder / name for name in ("encoder_model.onnx", "decoder_model_merged.onnx")})
    ours = pipeline("text2text-generation", repo, device="cpu")
    theirs = transformers.pipeline("text2text-generation", model=str(checkpoint))
    for call in ({"num_beams": 1, "max_new_tokens": NEW}, {"num_beams": 3, "num_return_sequences": 2,
                                                            "max_new_tokens": 6}):
        assert ours(TEXTS, **call) == theirs(TEXTS, **call)
    section = ours.bundle.manifest.generation
    config = transformers.AutoConfig.from_pretrained(str(checkpoint))
    assert section["decoder_start_token_id"] == config.decoder_start_token_id
    assert len(section["decoder"]["cross_past_inputs"]) == 2 * config.decoder_layers
    assert section["encoder"]["inputs"] == {"input_ids": "input_ids", "attention_mask": "attention_mask"}


def test_mbart50_folder_takes_language_codes_like_transformers(tmp_path):
    """mBART-50 in the transformers.js layout: the language codes and the ``[src_lang] text
    </s>`` template come from tokenizer_config.json and tokenizer.json (transformers reads
    them from its tokenizer class), so src_lang/tgt_lang translate as transformers does."""
    from tests.fixtures.seq2seq_checkpoints import build_seq2seq_checkpoint

    checkpoint = build_seq2seq_checkpoint("mbart", tmp_path / "checkpoint")
    folder = _export(checkpoint, tmp_path / "optimum", "text2text-generation-with-past")
    repo = _transformers_js(folder, tmp_path / "repo", {
        name: folder / name for name in ("encoder_model.onnx", "decoder_model_merged.onnx")})
    ours = pipeline("translation", repo, device="cpu")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(checkpoint))
    assert ours.bundle.manifest.generation["language_codes"] == dict(tokenizer.lang_code_to_id)
    theirs = transformers.pipeline("translation", model=str(checkpoint))
    for call in ({"src_lang": "en_XX", "tgt_lang": "de_DE"}, {"src_lang": "fr_XX", "tgt_lang": "ro_RO", "num_beams": 1}):
        assert ours(TEXTS, max_new_tokens=8, **call) == theirs(TEXTS, max_new_tokens=8, **call)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.filterwarnings("ignore:The class `AutoModelForVision2Seq` is deprecated:FutureWarning")
def test_optimum_cli_image_to_text_folder_matches_transformers_pipeline(tmp_path):
    """A vision encoder-decoder (ViT + GPT-2) exported by optimum: self-attention pasts only
    (``past_key_values.N.key``), settings from the nested decoder config; captions as
    transformers'."""
    from edgeformers.exporter.vision_inputs import synthetic_image
    from tests.fixtures.vision_checkpoints import build_image_to_text_checkpoint

    checkpoint = build_image_to_text_checkpoint(tmp_path / "checkpoint")
    folder = _export(checkpoint, tmp_path / "optimum", "image-to-text-with-past")
    ours = pipeline(model=folder, device="cpu")
    assert ours.task == "image-to-text" and ours.bundle.manifest.generation["decoder"]["cross_past_inputs"] == []
    theirs = transformers.pipeline("image-to-text", model=str(checkpoint))
    images = [synthetic_image(40, 56, "RGB", seed=0), synthetic_image(64, 48, "L", seed=1, pattern="noise")]
    for call in ({}, {"generate_kwargs": {"num_beams": 3}}):
        assert ours(images, **call) == theirs(images, **call)


@pytest.mark.slow
def test_optimum_cli_whisper_folder_matches_transformers_pipeline(whisper_tiny_en, tmp_path):
    """The real whisper-tiny.en exported by optimum (automatic-speech-recognition-with-past):
    the task comes from WhisperForConditionalGeneration, the encoder-decoder section from the
    graphs, and the transcript with timestamps is transformers'."""
    from tests.fixtures.whisper_real import speech

    folder = _export(whisper_tiny_en, tmp_path / "optimum", "automatic-speech-recognition-with-past")
    ours = pipeline(model=folder, device="cpu")
    assert ours.task == "automatic-speech-recognition" and not ours.bundle.has_manifest
    theirs = transformers.pipeline("automatic-speech-recognition", model=str(whisper_tiny_en), device="cpu")
    audio = speech("short")[0]
    call = {"return_timestamps": True, "generate_kwargs": {"num_beams": 1}}
    assert ours(audio, **call) == theirs(audio, **call)


def test_graph_io_equals_the_onnx_package(decoder, bart, tmp_path):
    """Every graph above, a merged decoder (If subgraphs), external data, and a graph that
    lists its initializers as inputs (IR < 4): the walker reads what onnx reads."""
    _, _, folder = decoder
    graphs = [folder / "model.onnx", *sorted(bart[1].glob("*.onnx"))]
    model = onnx.load(str(folder / "model.onnx"))
    onnx.save(model, str(tmp_path / "external.onnx"), save_as_external_data=True, location="external.onnx_data",
              size_threshold=0)
    weight = model.graph.initializer[0]
    model.graph.input.append(onnx.helper.make_tensor_value_info(weight.name, weight.data_type, list(weight.dims)))
    onnx.save(model, str(tmp_path / "listed.onnx"))
    graphs += [tmp_path / "external.onnx", tmp_path / "listed.onnx"]
    for graph in graphs:
        assert _ours_io(graph) == _io(graph), graph.name
    assert weight.name not in graph_io(tmp_path / "listed.onnx", "listed").input_names
    (tmp_path / "broken.onnx").write_bytes((folder / "model.onnx").read_bytes()[:5000])
    with pytest.raises(BundleError, match="not a readable ONNX graph"):
        graph_io(tmp_path / "broken.onnx", "broken.onnx")


# --- folders the runtime cannot decode: typed errors that say what is missing --------------

_FLOAT, _INT64 = 1, 7


def _graph(path: Path, inputs: dict[str, tuple[int, list]], outputs: dict[str, tuple[int, list]]) -> None:
    """A graph with these inputs and outputs and no nodes: enough for the load-time checks,
    which read names and shapes only."""
    value = onnx.helper.make_tensor_value_info
    graph = onnx.helper.make_graph([], "g", [value(n, t, d) for n, (t, d) in inputs.items()],
                                   [value(n, t, d) for n, (t, d) in outputs.items()])
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(onnx.helper.make_model(graph), str(path))


def _decoder_graph(path: Path, heads=4, extra=(), past=True) -> None:
    inputs = {"input_ids": (_INT64, ["b", "s"]), "attention_mask": (_INT64, ["b", "t"])}
    outputs = {"logits": (_FLOAT, ["b", "s", 50])}
    for layer in range(2 if past else 0):
        for kind in ("key", "value"):
            inputs[f"past_key_values.{layer}.{kind}"] = (_FLOAT, ["b", heads, "p", 8])
            outputs[f"present.{layer}.{kind}"] = (_FLOAT, ["b", heads, "t", 8])
    inputs.update({name: (_INT64, ["b", "s"]) for name in extra})
    _graph(path, inputs, outputs)


def _folder(tmp_path: Path, architecture: str, **config) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "architectures": [architecture],
                                                      "eos_token_id": 2, **config}))
    return tmp_path


@pytest.mark.parametrize("case, message", [
    ("no_past", r"no past_key_values\.\* inputs.*--task text-generation-with-past"),
    ("symbolic_heads", r"past_key_values\.0\.key should be .*fixed kv_heads"),
    ("token_type_ids", r"inputs the runtime does not feed \(token_type_ids\)"),
    ("unmerged_only", r"model\.onnx or decoder_model_merged\.onnx.*decoder_model\.onnx"),
])
def test_a_decoder_folder_the_runtime_cannot_run_says_why(tmp_path, case, message):
    folder = _folder(tmp_path, "GPT2LMHeadModel")
    if case == "unmerged_only":
        _decoder_graph(folder / "decoder_model.onnx", past=False)
        _decoder_graph(folder / "decoder_with_past_model.onnx")
    else:
        _decoder_graph(folder / "onnx" / "model.onnx", heads="h" if case == "symbolic_heads" else 4,
                       extra=("token_type_ids",) if case == "token_type_ids" else (), past=case != "no_past")
    with pytest.raises(BundleError, match=message):
        pipeline("text-generation", folder, device="cpu")


def test_a_seq2seq_folder_the_runtime_cannot_run_says_why(bart, tmp_path):
    _, source = bart
    unmerged = _transformers_js(source, tmp_path / "unmerged", {
        name: source / name for name in ("encoder_model.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx")})
    with pytest.raises(BundleError, match=r"decoder_model_merged\.onnx \(optimum fuses decoder_model"):
        pipeline("summarization", unmerged, device="cpu")
    no_start = _transformers_js(source, tmp_path / "no-start", {
        name: source / name for name in ("encoder_model.onnx", "decoder_model_merged.onnx")})
    config = json.loads((no_start / "config.json").read_text())
    (no_start / "config.json").write_text(json.dumps({**config, "decoder_start_token_id": None}))
    (no_start / "generation_config.json").unlink()
    with pytest.raises(BundleError, match="decoder_start_token_id"):
        pipeline("summarization", no_start, device="cpu")
    one_graph = _folder(tmp_path / "one-graph", "BartForConditionalGeneration")
    _decoder_graph(one_graph / "model.onnx")
    with pytest.raises(BundleError, match=r"encoder_model\.onnx and decoder_model_merged\.onnx"):
        pipeline("summarization", one_graph, device="cpu")
