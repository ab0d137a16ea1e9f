"""Decoder exports beyond the first slice: the Qwen3 family token-exact against
transformers, tied embeddings stored once in fp32, q8 and q4, q4/q4f16 held to greedy-token
agreement, and q8/q4 quantizing the weights inside a merged decoder's If branches."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
onnx = pytest.importorskip("onnx")

from edgeformers.models.agreement import GREEDY_TOKEN_AGREEMENT  # noqa: E402
from edgeformers.runtime import pipeline  # noqa: E402
from tests.fixtures.floors import floor_for  # noqa: E402

PROMPTS = ["ok", "The quick brown fox jumps over", "Café au lait in Zürich 🙂", "My name is Wolfgang and I"]
NEW = 10
DTYPES = ("fp32", "q8", "q4", "q4f16")


@pytest.fixture(scope="module", params=["gpt2", "qwen3"])
def tied(request, bundle_factory):
    """(arch, checkpoint, bundle): tied-embedding decoders exported with every decoder variant."""
    checkpoint, bundle = bundle_factory(request.param, "causal-lm", "text-generation", dtypes=DTYPES)
    return request.param, checkpoint, bundle


def _graph(bundle: Path, dtype: str):
    from edgeformers.runtime.bundle import Bundle

    return onnx.load(str(Bundle.open(bundle).onnx_path(dtype)))


def _sizes(model) -> dict[str, tuple[int, ...]]:
    return {init.name: tuple(init.dims) for init in model.graph.initializer}


def _vocab_tables(model, vocab: int, hidden: int) -> list[str]:
    """Initializers that hold a vocab x hidden matrix in any orientation or blocking."""
    return [name for name, dims in _sizes(model).items()
            if dims and dims[0] in (vocab, hidden) and int(np.prod(dims)) >= vocab * hidden // 8 and vocab in dims]


def test_qwen3_batch_matches_transformers_token_for_token(bundle_factory):
    checkpoint, bundle = bundle_factory("qwen3", "causal-lm", "text-generation", dtypes=DTYPES)
    theirs = transformers.pipeline("text-generation", model=str(checkpoint))
    ours = pipeline("text-generation", bundle, device="cpu")
    want = [theirs(p, do_sample=False, max_new_tokens=NEW) for p in PROMPTS]
    assert ours(PROMPTS, do_sample=False, max_new_tokens=NEW, batch_size=4) == want  # one left-padded batch
    model = transformers.AutoModelForCausalLM.from_pretrained(str(checkpoint)).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(checkpoint), padding_side="left")
    batch = tokenizer(PROMPTS, padding=True, return_tensors="pt")
    with torch.inference_mode():
        expected = model.generate(**batch, do_sample=False, max_new_tokens=NEW, repetition_penalty=1.5)
    texts = tokenizer.batch_decode(expected[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    got = ours(PROMPTS, do_sample=False, max_new_tokens=NEW, repetition_penalty=1.5, return_full_text=False)
    assert [g[0]["generated_text"] for g in got] == texts
    section = json.loads((bundle / "edgeformers.json").read_text())["generation"]
    assert (section["num_heads"], section["num_kv_heads"], section["head_size"]) == (4, 2, model.config.head_dim)


def test_every_large_weight_is_stored_once_in_fp32(tied):
    """The fp32 graph's large initializers add up to the checkpoint's parameters (tied
    ones counted once); a second copy of the tied table would add vocab x hidden floats."""
    _, checkpoint, bundle = tied
    model = transformers.AutoModelForCausalLM.from_pretrained(str(checkpoint))
    vocab, hidden = model.get_input_embeddings().weight.shape
    params = sum(p.numel() for p in model.parameters())  # parameters() yields a tied tensor once
    graph = _graph(bundle, "fp32")
    stored = sum(int(np.prod(d)) for d in _sizes(graph).values() if int(np.prod(d)) >= 4096)
    assert params - vocab * hidden < stored <= params
    assert len(_vocab_tables(graph, vocab, hidden)) == 1
    report = json.loads((bundle / "edgeformers.json").read_text())["validation"]["fp32"]
    assert report["passed"] and max(report["max_abs_diff"].values()) <= report["atol"]


def test_q8_and_q4_keep_the_tied_table_single(tied):
    _, checkpoint, bundle = tied
    config = transformers.AutoConfig.from_pretrained(str(checkpoint))
    vocab, hidden = config.vocab_size, config.hidden_size
    q8 = _graph(bundle, "q8")
    [table] = _vocab_tables(q8, vocab, hidden)
    ops = {node.op_type: node for node in q8.graph.node if table in node.input}
    assert set(ops) == {"Gather", "Transpose"}  # the embedding lookup and the LM head read one int8 table
    head = [n for n in q8.graph.node if n.op_type == "MatMulInteger" and ops["Transpose"].output[0] in n.input]
    assert len(head) == 1 and _sizes(q8)[table] == (vocab, hidden)
    q4 = _graph(bundle, "q4")
    [blocks] = _vocab_tables(q4, vocab, hidden)
    users = Counter(node.op_type for node in q4.graph.node if blocks in node.input)
    assert users == Counter({"MatMulNBits": 1, "GatherBlockQuantized": 1})
    manifest = json.loads((bundle / "edgeformers.json").read_text())
    assert manifest["variants"]["q4"]["quantization"]["embeddings"].startswith("4-bit, shared")


def test_an_untied_decoder_keeps_both_tables(bundle_factory):
    """Llama's fixture has separate input and output embeddings: nothing is merged."""
    checkpoint, bundle = bundle_factory("llama", "causal-lm", "text-generation")  # fp32+q8, shared with others
    config = transformers.AutoConfig.from_pretrained(str(checkpoint))
    assert not config.tie_word_embeddings
    assert len(_vocab_tables(_graph(bundle, "fp32"), config.vocab_size, config.hidden_size)) == 2
    assert len(_vocab_tables(_graph(bundle, "q8"), config.vocab_size, config.hidden_size)) == 2


@pytest.mark.parametrize("dtype", ["q4", "q4f16"])
def test_q4_variants_are_held_to_greedy_token_agreement(tied, dtype):
    _, _, bundle = tied
    manifest = json.loads((bundle / "edgeformers.json").read_text())
    report = manifest["validation"][dtype]
    assert report["metric"] == GREEDY_TOKEN_AGREEMENT and report["passed"]
    assert report["value"] >= floor_for("text-generation")
    variant = manifest["variants"][dtype]
    assert variant["quantization"]["bits"] == 4 and variant["quantization"]["block_size"] == 32
    graph = _graph(bundle, dtype)
    levels = {next((a.i for a in n.attribute if a.name == "accuracy_level"), 0)
              for n in graph.graph.node if n.op_type == "MatMulNBits"}
    assert levels == {variant["quantization"]["accuracy_level"]} == {4}  # int8 kernels on CPU: ~3x faster steps
    weights = set(_sizes(graph))
    plain = [n.name for n in graph.graph.node if n.op_type in ("MatMul", "Gemm") and set(n.input) & weights]
    assert not plain, f"matmuls left with float weights: {plain}"  # GPT-2's Conv1D Gemms too
    sizes = {d: sum(e["size"] for n, e in manifest["files"].items() if n.startswith(f"onnx/model{s}.onnx"))
             for d, s in (("fp32", ""), ("q8", "_quantized"), (dtype, "_" + dtype))}
    assert sizes[dtype] < sizes["q8"] < sizes["fp32"]
    text = pipeline("text-generation", bundle, device="cpu", dtype=dtype)(PROMPTS[1], do_sample=False,
                                                                            max_new_tokens=NEW)
    assert text[0]["generated_text"].startswith(PROMPTS[1])


# --------------------------------------------------------------------------- merged decoders


#: arch -> task of the tiny encoder-decoders exported with fp32, q8 and q4 (tied input/output embeddings)
MERGED = {"bart": "summarization", "t5": "translation_en_to_fr"}


@pytest.fixture(scope="module")
def merged_export(tmp_path_factory):
    """arch -> (checkpoint, bundle): a tiny random encoder-decoder exported with fp32, q8
    and q4, once per module; its decoder_model_merged is one If node whose two branches
    read the outer graph's weights."""
    from click.testing import CliRunner

    from edgeformers.runtime.cli import cli
    from tests.fixtures.floors import floor_args
    from tests.fixtures.seq2seq_checkpoints import build_seq2seq_checkpoint

    root = tmp_path_factory.mktemp("merged")
    made: dict[str, tuple[Path, Path]] = {}

    def get(arch: str) -> tuple[Path, Path]:
        if arch not in made:
            checkpoint = build_seq2seq_checkpoint(arch, root / f"{arch}-checkpoint")
            bundle = root / f"{arch}-bundle"
            args = ["export", str(checkpoint), str(bundle), "--task", MERGED[arch], "--dtype", "fp32,q8,q4",
                    *floor_args(MERGED[arch])]
            result = CliRunner().invoke(cli, args)
            assert result.exit_code == 0, result.output
            made[arch] = (checkpoint, bundle)
        return made[arch]

    return get


@pytest.fixture(scope="module")
def seq2seq_bundle(merged_export):
    """The tiny BART summarizer's bundle (fp32, q8, q4)."""
    return merged_export("bart")[1]


def _branch_ops(model) -> dict[str, Counter]:
    [node] = [n for n in model.graph.node if n.op_type == "If"]
    return {attr.name: Counter(n.op_type for n in attr.g.node) for attr in node.attribute}


def _feed(session, cached: bool) -> dict[str, np.ndarray]:
    """Random inputs for one step: three new tokens without the cache, one with 4 cached."""
    rng = np.random.default_rng(0)
    feed = {}
    for spec in session.get_inputs():
        shape = [d if isinstance(d, int) else 1 if i == 0 else (4 if cached else 1) if "past" in spec.name and i == 2
                 else 5 if "encoder" in str(d) or "encoder" in spec.name else (1 if cached else 3)
                 for i, d in enumerate(spec.shape)]
        if spec.type == "tensor(bool)":
            feed[spec.name] = np.array([cached])
        elif spec.type == "tensor(int64)":
            feed[spec.name] = rng.integers(3, 600, shape) if "ids" in spec.name else np.ones(shape, np.int64)
        else:
            feed[spec.name] = rng.normal(size=shape).astype(np.float32)
    return feed


@pytest.mark.parametrize(("dtype", "op"), [("q8", "MatMulInteger"), ("q4", "MatMulNBits")])
def test_merged_decoder_is_quantized_inside_both_if_branches(seq2seq_bundle, dtype, op):
    import onnxruntime

    manifest = json.loads((seq2seq_bundle / "edgeformers.json").read_text())
    fp32_path = seq2seq_bundle / manifest["variants"]["fp32"]["files"]["decoder_model_merged"]
    target = seq2seq_bundle / manifest["variants"][dtype]["files"]["decoder_model_merged"]
    fp32, quantized = onnx.load(str(fp32_path)), onnx.load(str(target))
    weights = {i.name for i in fp32.graph.initializer}
    weights |= {n.output[0] for n in fp32.graph.node if n.op_type == "Transpose"}  # the tied LM head's weight
    before, after = _branch_ops(fp32), _branch_ops(quantized)
    for branch, ops in before.items():
        graph = _if_branch(fp32, branch)
        projections = sum(1 for n in graph.node if n.op_type == "MatMul"
                          and set(n.input) & (weights | {i.name for i in graph.initializer}))
        assert projections >= 12  # 2 layers x (self q/k/v/o, cross q, fc1, fc2) at least, plus the LM head
        assert after[branch][op] == projections, (branch, after[branch])
        assert after[branch]["MatMul"] == ops["MatMul"] - projections  # only activation x activation left
    # the manifest's sizes of the weights files show it (fp32 weights kept beside the quantized would not shrink it)
    size = lambda path: manifest["files"][path.relative_to(seq2seq_bundle).as_posix() + "_data"]["size"]  # noqa: E731
    assert size(target) < 0.3 * size(fp32_path)
    assert manifest["validation"][dtype]["passed"]
    sessions = [onnxruntime.InferenceSession(str(g), providers=["CPUExecutionProvider"]) for g in (fp32_path, target)]
    for cached in (False, True):
        ref, got = (s.run(["logits"], _feed(s, cached))[0].reshape(-1) for s in sessions)
        assert float(ref @ got / np.linalg.norm(ref) / np.linalg.norm(got)) > 0.95, (dtype, cached)


def _if_branch(model, branch: str):
    [node] = [n for n in model.graph.node if n.op_type == "If"]
    return next(attr.g for attr in node.attribute if attr.name == branch)


# --------------------------------------------------------------------------- tied tables in merged decoders


def _walk(graph):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _walk(attr.g)


def _merged(bundle: Path, dtype: str):
    manifest = json.loads((bundle / "edgeformers.json").read_text())
    return onnx.load(str(bundle / manifest["variants"][dtype]["files"]["decoder_model_merged"]))


@pytest.mark.parametrize("arch", list(MERGED))
def test_merged_decoder_stores_the_tied_table_once_and_still_matches_transformers(merged_export, arch):
    """The fp32 merged decoder's weights add up to the PyTorch decoder's parameters (the
    embedding table tied to the LM head counted once), and greedy outputs through the
    rewritten graph are still transformers' pipeline's."""
    from onnx import helper

    checkpoint, bundle = merged_export(arch)
    model = transformers.AutoModelForSeq2SeqLM.from_pretrained(str(checkpoint))
    assert model.config.tie_word_embeddings
    vocab, hidden = model.get_input_embeddings().weight.shape
    decoder = list(model.get_decoder().parameters()) + [model.get_output_embeddings().weight]
    params = {id(p): p for p in decoder if p.dim() >= 2}  # the tied head weight is the embedding's: counted once
    param_bytes = sum(p.numel() * p.element_size() for p in params.values())
    graph = _merged(bundle, "fp32")
    # the weight matrices (biases and norms are 1-D; BART's final_logits_bias buffer is [1, vocab])
    matrices = [i for i in graph.graph.initializer if len(i.dims) >= 2 and min(i.dims) > 1]
    stored = sum(int(np.prod(i.dims)) * np.dtype(helper.tensor_dtype_to_np_dtype(i.data_type)).itemsize
                 for i in matrices)
    assert stored == param_bytes  # a second copy of the table would add vocab x hidden x 4 bytes
    [table] = _vocab_tables(graph, vocab, hidden)
    users = Counter(n.op_type for n in _walk(graph.graph) if table in n.input)
    assert users == Counter({"Gather": 2, "Transpose": 1})  # a lookup per If branch, the head through Transpose
    report = json.loads((bundle / "edgeformers.json").read_text())["validation"]["fp32"]
    assert report["passed"] and max(report["max_abs_diff"].values()) <= report["atol"]
    texts = ["The quick brown fox jumps over the lazy dog.", "Café au lait in Zürich costs five euros"]
    theirs = transformers.pipeline(MERGED[arch], model=str(checkpoint))
    ours = pipeline(MERGED[arch], bundle, device="cpu")
    call = {"num_beams": 1, "max_new_tokens": 8}
    assert ours(texts, **call) == theirs(texts, **call)


@pytest.mark.parametrize("arch", list(MERGED))
def test_merged_decoder_q8_and_q4_keep_one_table_and_pass_agreement(merged_export, arch):
    """q8: one int8 table, read by both branches' lookups and (transposed) by both heads;
    q4: the heads' 4-bit blocks, read by both lookups through GatherBlockQuantized."""
    checkpoint, bundle = merged_export(arch)
    config = transformers.AutoConfig.from_pretrained(str(checkpoint))
    vocab, hidden = config.vocab_size, config.d_model
    manifest = json.loads((bundle / "edgeformers.json").read_text())
    q8 = _merged(bundle, "q8")
    [table] = _vocab_tables(q8, vocab, hidden)
    assert Counter(n.op_type for n in _walk(q8.graph) if table in n.input) == Counter({"Gather": 2, "Transpose": 1})
    assert _sizes(q8)[table] == (vocab, hidden)
    q4 = _merged(bundle, "q4")
    [blocks] = _vocab_tables(q4, vocab, hidden)
    users = Counter(n.op_type for n in _walk(q4.graph) if blocks in n.input)
    assert users == Counter({"MatMulNBits": 2, "GatherBlockQuantized": 2})
    quantization = manifest["variants"]["q4"]["quantization"]["components"]["decoder_model_merged"]
    assert quantization["embeddings"].startswith("4-bit, shared")
    for dtype in ("q8", "q4"):
        report = manifest["validation"][dtype]
        assert report["metric"] == GREEDY_TOKEN_AGREEMENT and report["passed"]
        assert report["value"] >= floor_for(MERGED[arch])
