"""``edgeformers bench``: figures per variant x batch x seq-len, a table, a recommendation.

No timing threshold is asserted: only that the figures exist, are consistent with each
other and with the manifest, and that the recommendation follows its rule."""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner

from edgeformers.models.errors import InputError
from edgeformers.runtime.bench_inputs import text_of_length
from edgeformers.runtime.bundle import Bundle
from edgeformers.runtime.cli import cli
from edgeformers.runtime.cli_bench import recommend, validation_summary
from edgeformers.runtime.manifest import Manifest

ROW_KEYS = {"dtype": str, "batch": int, "seq_len": int, "tokens": int, "first_call_ms": float, "p50_ms": float,
            "p95_ms": float, "items_per_s": float, "peak_rss_mb": float, "load_ms": float, "file_bytes": int,
            "validation": dict}
VARIANT_KEYS = {"dtype": str, "device": str, "providers": list, "load_ms": float, "file_bytes": int, "peak_rss_mb": float,
                "validation": dict}


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


def test_bench_writes_well_formed_json_and_a_table(bundle_factory, tmp_path):
    _, bundle = bundle_factory("bert", "sequence-classification", "text-classification")
    out = tmp_path / "figures" / "bench.json"
    result = invoke("bench", str(bundle), "--device", "cpu", "--batch", "1,3", "--seq-len", "8,32",
                    "--runs", "2", "--json", str(out))
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    manifest = Manifest.read(bundle)
    present = list(manifest.variants)

    assert report["format"] == "edgeformers-bench" and report["task"] == "text-classification"
    assert (report["batches"], report["seq_lens"], report["runs"]) == ([1, 3], [8, 32], 2)
    assert [v["dtype"] for v in report["variants"]] == present
    for variant in report["variants"]:
        assert variant["error"] is None
        for key, kind in VARIANT_KEYS.items():
            assert isinstance(variant[key], kind), (key, variant)
        assert variant["providers"] == ["CPUExecutionProvider"] and variant["device"] == "cpu"
        assert variant["file_bytes"] == Bundle.open(bundle).variant_bytes(variant["dtype"])
        assert variant["validation"] == validation_summary(manifest.validation[variant["dtype"]])
    # one row per variant x batch x seq-len, each with its own figures
    assert sorted((r["dtype"], r["batch"], r["seq_len"]) for r in report["rows"]) == sorted(
        (d, b, s) for d in present for b in (1, 3) for s in (8, 32))
    for row in report["rows"]:
        for key, kind in ROW_KEYS.items():
            assert isinstance(row[key], kind), (key, row)
        assert row["tokens"] == row["seq_len"]  # the inputs really are that long
        assert 0 < row["p50_ms"] <= row["p95_ms"]
        assert math.isclose(row["items_per_s"], row["batch"] / (row["p50_ms"] / 1e3))
    advice = report["recommendation"]
    passed = [v["dtype"] for v in report["variants"] if v["validation"]["passed"]]
    assert set(advice["eligible"]) == set(passed) and advice["fastest"] in passed and advice["smallest"] in passed
    smallest = min(passed, key=lambda d: Bundle.open(bundle).variant_bytes(d))
    assert advice["smallest"] == smallest

    # the table: one line per row, the validation figure, the recommendation
    for dtype in present:
        assert result.output.count(f"│ {dtype} ") >= 4, result.output
    assert f"fastest {advice['fastest']}, smallest {advice['smallest']}" in result.output
    assert "validation" in result.output


@pytest.mark.parametrize("arch, head, task", [
    ("bert", "masked-lm", "fill-mask"),
    ("bert", "question-answering", "question-answering"),
])
def test_bench_builds_inputs_of_the_asked_length_for_each_task(bundle_factory, arch, head, task):
    _, bundle = bundle_factory(arch, head, task)
    result = invoke("bench", str(bundle), "--dtype", "q8", "--device", "cpu", "--batch", "2", "--seq-len", "24",
                    "--runs", "1", "--json", "-")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{"):])
    assert [(r["dtype"], r["batch"], r["tokens"]) for r in report["rows"]] == [("q8", 2, 24)]


def test_text_of_length_counts_special_tokens_and_pairs(bundle_factory):
    from edgeformers.runtime import pipeline

    _, bundle = bundle_factory("bert", "question-answering", "question-answering")
    pipe = pipeline(None, bundle, device="cpu")
    question = "What is disappointing?"
    shortest = len(pipe.tokenizer.encode([question], ["the"], truncation=False)[0].ids)
    for tokens in (shortest, 40, 100):
        text, got = text_of_length(pipe, tokens)
        encoded = pipe.tokenizer.encode([question], [text], truncation=False)[0]
        assert got == tokens == len(encoded.ids)
    with pytest.raises(InputError, match=f"shortest input is {shortest} tokens"):
        text_of_length(pipe, shortest - 1)


@pytest.mark.parametrize("args, error", [
    (["--dtype", "fp16"], "holds: fp32, q8"),
    (["--dtype", "q9"], "not a dtype"),
    (["--batch", "0"], "--batch"),
    (["--seq-len", "8,x"], "--seq-len"),
    (["--seq-len", "4096"], "max_length"),
    (["--device", "tpu"], "unknown device"),
])
def test_bench_bad_arguments_are_one_line_errors(bundle_factory, tmp_path, args, error):
    _, bundle = bundle_factory("bert", "sequence-classification", "text-classification")
    out = tmp_path / "bench.json"
    result = invoke("bench", str(bundle), *args, "--json", str(out))
    assert result.exit_code == 1 and error in result.output and "Traceback" not in result.output, result.output
    assert list(tmp_path.iterdir()) == []


def _variant(dtype: str, size: int, passed: bool | None) -> dict:
    return {"dtype": dtype, "file_bytes": size, "error": None,
            "validation": {"metric": "label_agreement", "value": 1.0, "threshold": 0.9, "passed": passed}}


def test_recommendation_takes_only_variants_that_passed():
    variants = [_variant("fp32", 400, True), _variant("q8", 100, True), _variant("q4", 50, False),
                _variant("fp16", 200, None)]
    rows = [{"dtype": d, "p50_ms": ms} for d, ms in
            [("fp32", 10.0), ("fp32", 100.0), ("q8", 4.0), ("q8", 120.0), ("q4", 1.0), ("q4", 1.0),
             ("fp16", 1.0), ("fp16", 1.0)]]
    advice = recommend(variants, rows)
    # geometric means: fp32 sqrt(1000) ~ 31.6, q8 sqrt(480) ~ 21.9; q4 failed, fp16 has no record
    assert (advice["fastest"], advice["smallest"], advice["eligible"]) == ("q8", "q8", ["fp32", "q8"])
    rows[0]["p50_ms"] = 2.0  # fp32 now 14.1 ms
    assert recommend(variants, rows)["fastest"] == "fp32"
    none = recommend([_variant("q4", 50, False)], rows)
    assert none["fastest"] is None and none["smallest"] is None and "passing validation" in none["reason"]


def test_validation_summary_reads_old_and_new_reports():
    assert validation_summary({"metric": "label_agreement", "value": 0.97, "threshold": 0.95, "passed": True}) == {
        "reference": None, "metric": "label_agreement", "value": 0.97, "threshold": 0.95, "passed": True}
    old_fp32 = {"reference": "pytorch", "atol": 1e-4, "max_abs_diff": {"logits": 2e-6, "x": 3e-6}, "passed": True}
    assert validation_summary(old_fp32) == {
        "reference": "pytorch", "metric": "max_abs_diff", "value": 3e-6, "threshold": 1e-4, "passed": True}
    assert validation_summary({"reference": "fp32", "min_cosine": 0.99})["passed"] is None
    assert validation_summary(None)["metric"] is None


def test_bench_json_file_is_replaced_whole(tmp_path):
    from edgeformers.runtime.cli_bench import write_json_atomically

    path = tmp_path / "b.json"
    write_json_atomically(path, {"a": 1})
    write_json_atomically(path, {"b": [1, 2]})
    assert json.loads(path.read_text()) == {"b": [1, 2]} and [p.name for p in tmp_path.iterdir()] == ["b.json"]


def test_bench_worker_is_importable_without_heavy_modules():
    import subprocess
    import sys

    code = ("import sys, edgeformers.runtime.bench_worker, edgeformers.runtime.cli_bench\n"
            "print(sorted(m for m in ('torch', 'transformers', 'optimum', 'rich') if m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "[]"


def test_the_table_names_the_device_the_variants_ran_on(bundle_factory):
    """Asked for CUDA on a machine without it, the variants fall back to the CPU, and the
    table's title and recommendation say so (not the device that was asked for)."""
    _, bundle = bundle_factory("bert", "sequence-classification", "text-classification")
    result = invoke("bench", str(bundle), "--dtype", "q8", "--device", "cuda", "--batch", "1", "--seq-len", "8",
                    "--runs", "1")
    assert result.exit_code == 0, result.output
    assert "(text-classification) on cpu" in result.output and "on cuda" not in result.output
    assert "recommended for cpu" in result.output


def test_bench_times_text_generation_per_new_token(bundle_factory):
    """A text-generation bundle: prompts of the asked tokens, exactly --new-tokens new tokens
    per row (EOS held off, so every variant does the same work), time per token reported."""
    from edgeformers.runtime import pipeline
    from edgeformers.runtime.bench_inputs import workload
    from tests.fixtures.bench_report import bench_report, check_rows

    _, bundle = bundle_factory("gpt2", "causal-lm", "text-generation")
    report, table = bench_report(bundle, "--batch", "1,2", "--seq-len", "8", "--new-tokens", "6")
    check_rows(report, list(Manifest.read(bundle).variants), [1, 2], [8], "tokens", 6)
    assert "ms/token" in table and "generates 6 new tokens greedily" in table
    pipe = pipeline(None, bundle, device="cpu")
    made = []
    real = pipe._generate
    pipe._generate = lambda prompts, settings: made.append(real(prompts, settings)) or made[-1]
    work = workload(pipe, 6)
    text, tokens = work.make(8)
    work.call(text, 2)
    eos = set(pipe.generation_settings().eos_token_id)
    assert tokens == 8 and [len(row) for row in made[0]] == [6, 6] and not eos & {t for row in made[0] for t in row}
