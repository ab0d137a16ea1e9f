"""Encoder-decoder generation on tiny BART, T5, mBART-50 and Marian checkpoints built
locally and exported through the CLI: summarization / translation / text2text outputs
identical to ``transformers.pipeline`` (greedy and beam search, the checkpoints' own
generation defaults, T5 task prefixes, mBART language codes, batches of different
lengths), the manifest's encoder-decoder section, the q8 variant (both graphs, the merged
decoder quantized inside its If branches) held to greedy-token agreement, and bad inputs."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from edgeformers.models.agreement import GREEDY_TOKEN_AGREEMENT  # noqa: E402
from edgeformers.models.errors import InputError  # noqa: E402
from edgeformers.runtime import pipeline  # noqa: E402
from tests.fixtures.floors import floor_args, floor_for  # noqa: E402

TEXTS = ["The quick brown fox jumps over the lazy dog.", "ok", "Café au lait in Zürich 🙂 costs five euros today"]
NEW = 8
#: arch -> (task the bundle is exported and run for, call arguments that task needs)
CASES = {
    "bart": ("summarization", {}),
    "t5": ("translation_en_to_fr", {}),
    "mbart": ("translation", {"src_lang": "en_XX", "tgt_lang": "de_DE"}),
    "marian": ("translation", {}),
}
#: The catalog families this module proves (tests/test_families.py's TESTED_ELSEWHERE).
ARCHS = tuple(CASES)
_LOCK = threading.Lock()


@pytest.fixture(scope="session")
def seq2seq_bundles(tmp_path_factory):
    """arch -> (checkpoint, bundle with fp32 + q8), each built and exported once per session."""
    from click.testing import CliRunner

    from edgeformers.runtime.cli import cli

    root = tmp_path_factory.mktemp("seq2seq")
    made: dict[str, tuple[Path, Path]] = {}

    def get(arch: str) -> tuple[Path, Path]:
        with _LOCK:
            if arch not in made:
                checkpoint = root / f"{arch}-checkpoint"
                if arch == "marian":  # sentencepiece files only: the export converts them (tokenizer_convert)
                    from tests.fixtures.sentencepiece_models import build_marian_checkpoint

                    build_marian_checkpoint(checkpoint)
                else:
                    from tests.fixtures.seq2seq_checkpoints import build_seq2seq_checkpoint

                    build_seq2seq_checkpoint(arch, checkpoint)
                bundle = root / f"{arch}-bundle"
                task = CASES[arch][0]
                args = ["export", str(checkpoint), str(bundle), "--task", task, "--dtype", "fp32,q8",
                        *floor_args(task)]
                result = CliRunner().invoke(cli, args)
                assert result.exit_code == 0, result.output
                made[arch] = (checkpoint, bundle)
            return made[arch]

    return get


@pytest.fixture(scope="module", params=list(CASES))
def case(request, seq2seq_bundles):
    """(arch, task, call arguments, checkpoint, bundle, our fp32 pipeline, transformers' pipeline)."""
    arch = request.param
    task, kwargs = CASES[arch]
    checkpoint, bundle = seq2seq_bundles(arch)
    return (arch, task, kwargs, checkpoint, bundle, pipeline(task, bundle, device="cpu"),
            transformers.pipeline(task, model=str(checkpoint)))


def test_greedy_and_beam_outputs_equal_transformers_pipeline(case):
    """Texts of different lengths, one at a time and as one padded batch; greedy, and the
    pipeline's default beam search (num_beams=4, or the checkpoint's own settings)."""
    _, _, kwargs, _, _, ours, theirs = case
    for call in ({"num_beams": 1, "max_new_tokens": NEW}, {"max_new_tokens": NEW}):
        expected = theirs(TEXTS, **kwargs, **call)
        assert ours(TEXTS, **kwargs, **call) == expected, call
        assert ours(TEXTS, **kwargs, **call, batch_size=3) == expected, call
    single = {"num_beams": 1, "max_new_tokens": NEW}
    assert ours(TEXTS[0], **kwargs, **single) == theirs(TEXTS[0], **kwargs, **single)  # a string in: a list of one dict


def test_beam_search_sequences_and_token_ids_equal_generate(case):
    _, _, kwargs, _, _, ours, theirs = case
    call = {"num_beams": 3, "num_return_sequences": 2, "length_penalty": 0.5, "max_new_tokens": 6,
            "return_tensors": True}
    expected = theirs(TEXTS[:2], **kwargs, **call)
    got = ours(TEXTS[:2], **kwargs, **call)
    assert len(got) == 2 and all(len(rows) == 2 for rows in got)
    for ours_rows, their_rows in zip(got, expected):
        for mine, theirs_row in zip(ours_rows, their_rows):
            (key, ids), = mine.items()
            assert ids == theirs_row[key].tolist()


def test_stream_joins_to_transformers_text_greedy_and_with_beams(case):
    """``stream`` of each text, greedy and with the pipeline's default beam search (whose
    pieces are the prefix the beams agree on): the pieces join to transformers' text,
    Marian's stripped decode included."""
    _, _, kwargs, _, _, ours, theirs = case
    key = f"{ours.return_name}_text"
    for call in ({"num_beams": 1, "max_new_tokens": NEW}, {"max_new_tokens": NEW}):
        for text in TEXTS:
            expected = theirs(text, **kwargs, **call)[0][key]
            stream = ours.stream(text, **kwargs, **call)
            assert "".join(stream) == expected, (text, call)
            assert stream.finish_reason in ("eos", "length") and stream.token_ids


def test_stream_of_a_checkpoints_beam_defaults_and_its_bad_arguments(seq2seq_bundles):
    """BART's generation_config (4 beams, no_repeat_ngram_size, min/max_length, forced
    BOS/EOS) streamed with no call arguments; bad stream arguments are typed and leave
    the pipeline usable."""
    checkpoint, bundle = seq2seq_bundles("bart")
    ours = pipeline("summarization", bundle, device="cpu")
    expected = transformers.pipeline("summarization", model=str(checkpoint))(TEXTS[0])[0]["summary_text"]
    assert "".join(ours.stream(TEXTS[0])) == expected
    for args, kwargs, match in (((TEXTS,), {}, r"stream takes one text \(a string\), got list"),
                                ((TEXTS[0],), {"num_return_sequences": 2}, r"num_return_sequences=2 needs the pipeline"),
                                ((TEXTS[0],), {"bogus": 1}, r"stream got unknown argument 'bogus'"),
                                ((TEXTS[0],), {"max_new_tokens": 0}, r"max_new_tokens must be an integer >= 1"),
                                ((TEXTS[0],), {"do_sample": True, "num_beams": 2}, r"sampled beam search")):
        with pytest.raises(InputError, match=match):
            ours.stream(*args, **kwargs)
    _, bundle = seq2seq_bundles("mbart")
    translator = pipeline("translation", bundle, device="cpu")
    with pytest.raises(InputError, match=r"tgt_lang is missing"):
        translator.stream("hello", src_lang="en_XX")
    assert "".join(ours.stream(TEXTS[0])) == expected


def test_cli_run_streams_summaries_and_translations(seq2seq_bundles):
    """``edgeformers run`` streams a summarizer's and a translator's text (with -o for the
    languages), and prints the pipeline's JSON with --json."""
    from click.testing import CliRunner

    from edgeformers.runtime.cli import cli

    _, bundle = seq2seq_bundles("bart")
    ours = pipeline("summarization", bundle, device="cpu")
    result = CliRunner().invoke(cli, ["run", str(bundle), TEXTS[0], "--max-new-tokens", "6"])
    assert result.exit_code == 0, result.output
    assert result.stdout == ours(TEXTS[0], max_new_tokens=6)[0]["summary_text"] + "\n"
    result = CliRunner().invoke(cli, ["run", str(bundle), TEXTS[0], "--max-new-tokens", "6", "--json"])
    assert json.loads(result.stdout) == ours(TEXTS[0], max_new_tokens=6)
    _, bundle = seq2seq_bundles("mbart")
    translator = pipeline("translation", bundle, device="cpu")
    result = CliRunner().invoke(cli, ["run", str(bundle), "hello", "--greedy", "--max-new-tokens", "5",
                                      "-o", "src_lang=en_XX", "-o", "tgt_lang=de_DE"])
    assert result.exit_code == 0, result.output
    expected = translator("hello", src_lang="en_XX", tgt_lang="de_DE", do_sample=False, max_new_tokens=5)
    assert result.stdout == expected[0]["translation_text"] + "\n"


def test_bench_times_a_translator_per_new_token(seq2seq_bundles):
    """``edgeformers bench`` on mBART-50 (whose calls need language codes): both variants,
    inputs of the asked tokens, a fixed count of new tokens, time per token."""
    from tests.fixtures.bench_report import bench_report, check_rows

    _, bundle = seq2seq_bundles("mbart")
    report, table = bench_report(bundle, "--batch", "1", "--seq-len", "12", "--new-tokens", "5")
    check_rows(report, ["fp32", "q8"], [1], [12], "tokens", 5)
    assert "ms/token" in table


def test_checkpoint_generation_defaults_are_applied_as_transformers_applies_them(seq2seq_bundles):
    """BART's generation_config (num_beams 4, no_repeat_ngram_size 3, min/max_length, forced
    BOS/EOS, length_penalty 2.0, early stopping) with no call arguments at all; T5's
    summarization prefix and settings from task_specific_params."""
    checkpoint, bundle = seq2seq_bundles("bart")
    assert pipeline("summarization", bundle, device="cpu")(TEXTS[:2]) == \
        transformers.pipeline("summarization", model=str(checkpoint))(TEXTS[:2])
    checkpoint, bundle = seq2seq_bundles("t5")
    ours = pipeline("summarization", bundle, device="cpu")
    assert ours.prefix == "summarize: " and ours.defaults["no_repeat_ngram_size"] == 3
    assert ours(TEXTS[0], max_new_tokens=NEW) == \
        transformers.pipeline("summarization", model=str(checkpoint))(TEXTS[0], max_new_tokens=NEW)


def test_one_bundle_serves_the_three_seq2seq_tasks(seq2seq_bundles):
    checkpoint, bundle = seq2seq_bundles("t5")
    for task, key in (("text2text-generation", "generated_text"), ("translation_en_to_de", "translation_text"),
                      ("translation", "translation_text")):
        result = pipeline(task, bundle, device="cpu")(TEXTS[1], max_new_tokens=4)
        assert result == transformers.pipeline(task, model=str(checkpoint))(TEXTS[1], max_new_tokens=4)
        assert list(result[0]) == [key]


def test_manifest_records_the_encoder_decoder_layout(case):
    arch, _, _, _, bundle, _, _ = case
    manifest = json.loads((bundle / "edgeformers.json").read_text())
    section = manifest["generation"]
    config = transformers.AutoConfig.from_pretrained(str(case[3]))
    assert section["kind"] == "encoder-decoder"
    assert section["encoder"]["inputs"] == {"input_ids": "input_ids", "attention_mask": "attention_mask"}
    assert section["num_layers"] == (config.num_decoder_layers if arch == "t5" else config.decoder_layers)
    assert len(section["decoder"]["past_inputs"]) == 4 * section["num_layers"]
    assert set(section["decoder"]["cross_past_inputs"]) == {n for n in section["decoder"]["past_inputs"]
                                                           if ".encoder." in n}
    assert section["decoder_start_token_id"] == config.decoder_start_token_id
    assert manifest["variants"]["fp32"]["files"] == {"encoder_model": "onnx/encoder_model.onnx",
                                                     "decoder_model_merged": "onnx/decoder_model_merged.onnx"}
    if arch == "mbart":
        assert section["source_template"] == {"prefix": ["src_lang"], "suffix": [config.eos_token_id]}
    fp32 = manifest["validation"]["fp32"]
    assert fp32["passed"] and max(fp32["max_abs_diff"].values()) <= fp32["atol"]
    assert fp32["greedy_rows_identical"] == 2 * len(fp32["texts"])  # each text alone, then all as one batch


def test_q8_quantizes_both_graphs_and_is_held_to_greedy_token_agreement(case):
    import onnx

    _, task, kwargs, _, bundle, ours, _ = case
    manifest = json.loads((bundle / "edgeformers.json").read_text())
    report = manifest["validation"]["q8"]
    assert report["metric"] == GREEDY_TOKEN_AGREEMENT and report["passed"]
    assert report["value"] >= floor_for(task) and report["threshold"] == floor_for(task)
    decoder = onnx.load(str(bundle / manifest["variants"]["q8"]["files"]["decoder_model_merged"]),
                        load_external_data=False)
    branches = [attr.g for node in decoder.graph.node if node.op_type == "If" for attr in node.attribute]
    assert branches and all(any(n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul") for n in branch.node)
                            for branch in branches), "the merged decoder's If branches must be quantized"
    q8 = pipeline(task, bundle, device="cpu", dtype="q8")
    fp32_ids = ours(TEXTS, **kwargs, num_beams=1, max_new_tokens=NEW, return_tensors=True)
    q8_ids = q8(TEXTS, **kwargs, num_beams=1, max_new_tokens=NEW, return_tensors=True)
    first = [a[next(iter(a))][1] == b[next(iter(b))][1] for a, b in zip(fp32_ids, q8_ids)]
    assert sum(first) >= 2, (fp32_ids, q8_ids)


def test_language_codes_are_checked_and_forced(seq2seq_bundles):
    checkpoint, bundle = seq2seq_bundles("mbart")
    ours = pipeline("translation", bundle, device="cpu")
    with pytest.raises(InputError, match=r"tgt_lang='xx_YY' is not a language code of this checkpoint; it accepts: "
                                         r"ar_AR, cs_CZ, de_DE"):
        ours("hello", src_lang="en_XX", tgt_lang="xx_YY")
    with pytest.raises(InputError, match=r"src_lang='english' is not a language code"):
        ours("hello", src_lang="english", tgt_lang="fr_XX")
    with pytest.raises(InputError, match=r"needs both src_lang and tgt_lang.*tgt_lang is missing"):
        ours("hello", src_lang="en_XX")
    with pytest.raises(InputError, match=r"needs both src_lang and tgt_lang.*src_lang is missing"):
        ours("hello", tgt_lang="fr_XX")
    with pytest.raises(InputError, match=r"src_lang and tgt_lang are missing"):
        ours("hello")
    out = ours("hello", src_lang="en_XX", tgt_lang="ro_RO", num_beams=1, max_new_tokens=3, return_tensors=True)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(checkpoint))
    assert out[0]["translation_token_ids"][1] == tokenizer.convert_tokens_to_ids("ro_RO")


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"max_new_tokens": 0}, r"max_new_tokens must be an integer >= 1"),
    ({"max_new_tokens": 500}, r"max_new_tokens=500 passes the decoder's 130 positions"),
    ({"num_beams": 2, "num_return_sequences": 3}, r"`num_return_sequences` \(3\) has to be smaller or equal"),
    ({"num_beams": 1, "num_return_sequences": 2}, r"Greedy methods without beam search"),
    ({"num_beams": "4"}, r"num_beams must be an integer >= 1"),
    ({"length_penalty": float("nan")}, r"length_penalty must be"),
    ({"forced_bos_token_id": 10**6}, r"forced_bos_token_id must hold token ids .* below the vocabulary size"),
    ({"truncation": "sideways"}, r"truncation must be one of"),
    ({"bogus": 1}, r"unknown argument 'bogus'"),
])
def test_bad_arguments_are_typed_and_the_pipeline_stays_usable(seq2seq_bundles, kwargs, match):
    _, bundle = seq2seq_bundles("bart")
    ours = pipeline("summarization", bundle, device="cpu")
    with pytest.raises(InputError, match=match):
        ours("hello there", **kwargs)
    assert ours("ok", num_beams=1, max_new_tokens=2) == ours("ok", num_beams=1, max_new_tokens=2)


def test_inputs_past_the_encoder_positions_and_empty_inputs(seq2seq_bundles):
    checkpoint, bundle = seq2seq_bundles("bart")
    ours = pipeline("summarization", bundle, device="cpu")
    long = "the cat likes the red ball " * 60
    with pytest.raises(InputError, match=r"inputs\[1\] is \d+ tokens, longer than the model's 130-token maximum; "
                                         r"shorten it or pass truncation=True"):
        ours(["ok", long], num_beams=1, max_new_tokens=2)
    theirs = transformers.pipeline("summarization", model=str(checkpoint))
    call = {"num_beams": 1, "max_new_tokens": 3, "return_tensors": True}
    assert ours(long, truncation=True, **call)[0]["summary_token_ids"] == \
        theirs(long, truncation=True, **call)[0]["summary_token_ids"].tolist()
    # "" still encodes to <s></s>: transformers summarizes that, and so does the runtime
    assert ours("", num_beams=1, max_new_tokens=4) == theirs("", num_beams=1, max_new_tokens=4)
    with pytest.raises(InputError, match=r"inputs\[0\] is int; expected a string"):
        ours([3])


def test_stepper_reorders_encoder_states_with_the_cache(seq2seq_bundles):
    """Rows repeated after the first step decode exactly as the rows they copy."""
    from edgeformers.runtime.generation.settings import GenerationSettings

    _, bundle = seq2seq_bundles("t5")
    generator = pipeline("text2text-generation", bundle, device="cpu").generator
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(bundle))
    batch = tokenizer(TEXTS, padding=True, return_tensors="np")
    feed = {"input_ids": batch["input_ids"].astype(np.int64), "attention_mask": batch["attention_mask"].astype(np.int64)}
    settings = GenerationSettings(max_new_tokens=NEW, eos_token_id=[])
    plain = generator.generate(feed, settings)
    stepper = generator.stepper(feed)
    ids = generator.start_ids(3)
    tokens = [ids]
    for step in range(NEW):
        if step == 2:
            order = np.array([2, 0, 0, 1])
            stepper.reorder(order)
            tokens = [t[order] for t in tokens]
        tokens.append(stepper.step(tokens[-1][:, -1:]).argmax(-1)[:, None])
    np.testing.assert_array_equal(np.concatenate(tokens, axis=1), plain[[2, 0, 0, 1]])


def test_sampling_is_seeded_and_top_k_1_is_greedy(seq2seq_bundles):
    _, bundle = seq2seq_bundles("t5")
    ours = pipeline("text2text-generation", bundle, device="cpu")
    greedy = ours(TEXTS, num_beams=1, max_new_tokens=NEW)
    assert ours(TEXTS, num_beams=1, do_sample=True, top_k=1, seed=3, max_new_tokens=NEW) == greedy
    sampled = ours(TEXTS[0], num_beams=1, do_sample=True, temperature=1.5, seed=7, num_return_sequences=3,
                   max_new_tokens=NEW)
    assert len(sampled) == 3
    assert ours(TEXTS[0], num_beams=1, do_sample=True, temperature=1.5, seed=7, num_return_sequences=3,
                max_new_tokens=NEW) == sampled
    others = [ours(TEXTS[0], num_beams=1, do_sample=True, temperature=1.5, seed=s, max_new_tokens=NEW)[0]
              for s in range(4)]
    assert len({o["generated_text"] for o in others}) > 1, "different seeds should sample different text"


def test_validate_rechecks_encoder_decoder_bundles(seq2seq_bundles):
    from click.testing import CliRunner

    from edgeformers.runtime.cli import cli

    _, bundle = seq2seq_bundles("t5")
    floor = floor_args("translation")
    result = CliRunner().invoke(cli, ["validate", str(bundle), *floor])
    assert result.exit_code == 0, result.output
    assert "logits_with_past" in result.output and "greedy_token_agreement" in result.output
    result = CliRunner().invoke(cli, ["validate", str(bundle), "--atol", "1e-12", *floor])
    assert result.exit_code == 1 and "ValidationError" in result.output and "encoder_last_hidden_state" in result.output


def test_quantize_adds_encoder_decoder_variants_as_export_makes_them(seq2seq_bundles, tmp_path, monkeypatch):
    """``edgeformers quantize`` on an fp32-only BART bundle makes the q8 pair export makes
    (the same tokens as the bundle exported with fp32,q8), held to the same greedy-token
    agreement; re-making it leaves no stale file, and a failed check leaves the bundle as it was."""
    from click.testing import CliRunner

    from edgeformers.runtime.cli import cli
    from edgeformers.runtime.manifest import Manifest

    checkpoint, exported = seq2seq_bundles("bart")
    bundle = tmp_path / "bart-fp32"
    result = CliRunner().invoke(cli, ["export", str(checkpoint), str(bundle), "--task", "summarization"])
    assert result.exit_code == 0, result.output
    for attempt in range(2):
        result = CliRunner().invoke(cli, ["quantize", str(bundle), "--dtype", "q8", *floor_args("summarization")])
        assert result.exit_code == 0, result.output
    manifest = Manifest.read(bundle)
    assert set(manifest.variants) == {"fp32", "q8"}
    report = manifest.validation["q8"]
    assert report["metric"] == GREEDY_TOKEN_AGREEMENT and report["passed"] and report["value"] >= report["threshold"]
    assert sorted(manifest.files) == sorted(p.relative_to(bundle).as_posix() for p in bundle.rglob("*")
                                            if p.is_file() and p.name != "edgeformers.json")
    call = {"num_beams": 1, "max_new_tokens": NEW, "return_tensors": True}
    assert pipeline("summarization", bundle, dtype="q8")(TEXTS, **call) == \
        pipeline("summarization", exported, dtype="q8")(TEXTS, **call)
    from edgeformers.exporter.seq2seq_validate import Seq2SeqAgreement

    measure = Seq2SeqAgreement.measure
    monkeypatch.setattr(Seq2SeqAgreement, "measure", lambda self, graphs: {**measure(self, graphs), "passed": False})
    before = {p.relative_to(bundle): p.stat().st_mtime_ns for p in bundle.rglob("*")}
    result = CliRunner().invoke(cli, ["quantize", str(bundle), "--dtype", "q4"])
    assert result.exit_code == 1 and "the q4 variant is below its task's threshold" in result.output
    assert {p.relative_to(bundle): p.stat().st_mtime_ns for p in bundle.rglob("*")} == before
    # a link inside the bundle would be re-created in the working copy, where files are deleted
    # and rewritten: refused before anything is touched, the outside file included
    outside = tmp_path / "outside.txt"
    outside.write_text("not the bundle's")
    (bundle / "onnx" / "notes.txt").symlink_to(outside)
    result = CliRunner().invoke(cli, ["quantize", str(bundle), "--dtype", "q8"])
    assert result.exit_code == 1 and "is a symbolic link" in result.output and "Traceback" not in result.output
    assert outside.read_text() == "not the bundle's" and Manifest.read(bundle).variants["q8"].files


def test_plain_optimum_folder_without_manifest_runs_like_the_bundle(seq2seq_bundles, tmp_path):
    """An ``optimum-cli export onnx`` folder (no edgeformers.json): the generation section is
    built from the graphs and the config files, and the answers are the bundle's."""
    from optimum.exporters.onnx import main_export

    checkpoint, bundle = seq2seq_bundles("bart")
    main_export(str(checkpoint), output=str(tmp_path), task="text2text-generation-with-past", do_validation=False)
    plain = pipeline("summarization", tmp_path, device="cpu")
    assert not plain.bundle.has_manifest
    assert plain.generator.layout == pipeline("summarization", bundle, device="cpu").generator.layout
    call = {"max_new_tokens": NEW}
    assert plain(TEXTS, **call) == transformers.pipeline("summarization", model=str(checkpoint))(TEXTS, **call)


def test_rows_ending_at_different_steps_are_padded_as_transformers_pads_them(seq2seq_bundles):
    """EOS reached inside a batch (greedy and beams): the finished row is filled with the
    pad id while the others run on; token ids equal transformers'."""
    checkpoint, bundle = seq2seq_bundles("t5")
    ours = pipeline("text2text-generation", bundle, device="cpu")
    theirs = transformers.pipeline("text2text-generation", model=str(checkpoint))
    free = ours(TEXTS, num_beams=1, max_new_tokens=NEW, return_tensors=True)
    eos = free[0]["generated_token_ids"][3]  # row 0's third new token ends row 0 there
    for beams in (1, 2):
        call = {"num_beams": beams, "max_new_tokens": NEW, "eos_token_id": eos, "return_tensors": True}
        got = ours(TEXTS, **call, batch_size=3)
        expected = theirs(TEXTS, **call, batch_size=3)  # one padded batch on both sides
        assert [g["generated_token_ids"] for g in got] == [e["generated_token_ids"].tolist() for e in expected]
    alone = ours(TEXTS[0], num_beams=1, max_new_tokens=NEW, eos_token_id=eos, return_tensors=True)
    assert alone[0]["generated_token_ids"][-1] == eos and len(alone[0]["generated_token_ids"]) <= 4
