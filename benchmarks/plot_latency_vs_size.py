"""Latency against size per variant, for the DistilBERT-base-sized classifier and the real
all-MiniLM-L6-v2, measured with ``edgeformers bench`` itself and drawn with matplotlib.

    python benchmarks/plot_latency_vs_size.py                      # variants the bundles hold
    python benchmarks/plot_latency_vs_size.py --add-dtypes fp16    # quantize more in first

Both bundles come from the other scripts' caches (``make_models.py`` and
``bench_embeddings.py`` build them). ``--add-dtypes`` runs ``edgeformers quantize`` on
them first, for every dtype the exporter can make that the bundle lacks. Each bundle is
then measured by ``edgeformers bench BUNDLE --device cpu --batch 1 --seq-len 16,128``;
its JSON goes to ``.bench/results/edgeformers_bench_<model>.json`` and the plot to
``benchmarks/latency_vs_size.png``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, RESULTS_DIR, child_env, go_offline, log, table, warn_if_busy  # noqa: E402

go_offline()

PLOT = Path(__file__).resolve().parent / "latency_vs_size.png"
EDGEFORMERS = [sys.executable, "-c", "from edgeformers.runtime.cli import main; main()"]


def bundles() -> dict[str, Path]:
    from bench_embeddings import DEFAULT_DTYPES, ensure_bundle
    from make_models import ensure_models

    _, classifier = ensure_models()
    return {"DistilBERT-base classifier": classifier, "all-MiniLM-L6-v2": ensure_bundle(list(DEFAULT_DTYPES))}


def add_dtypes(bundle: Path, dtypes: list[str]) -> None:
    present = json.loads((bundle / "edgeformers.json").read_text())["variants"]
    missing = [d for d in dtypes if d not in present]
    if missing:
        log(f"edgeformers quantize {bundle} --dtype {','.join(missing)}")
        subprocess.run([*EDGEFORMERS, "quantize", str(bundle), "--dtype", ",".join(missing)], check=True,
                       env=child_env(), cwd=REPO)


def bench(bundle: Path, runs: int, replot: bool = False) -> dict[str, Any]:
    out = RESULTS_DIR / f"edgeformers_bench_{bundle.name}.json"
    if replot and out.is_file():
        return json.loads(out.read_text())
    command = [*EDGEFORMERS, "bench", str(bundle), "--device", "cpu", "--batch", "1", "--seq-len", "16,128",
               "--runs", str(runs), "--json", str(out)]
    log(" ".join(["edgeformers", *command[3:]]))
    subprocess.run(command, check=True, env=child_env(), cwd=REPO)
    return json.loads(out.read_text())


def plot(reports: dict[str, dict[str, Any]], seq_lens: list[int]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    figure, axes = plt.subplots(1, len(seq_lens), figsize=(6 * len(seq_lens), 4.5), squeeze=False)
    for axis, seq_len in zip(axes[0], seq_lens):
        for (name, report), marker in zip(reports.items(), "os^D"):
            rows = [r for r in report["rows"] if r["seq_len"] == seq_len and r["batch"] == 1]
            xs = [r["file_bytes"] / 1e6 for r in rows]
            ys = [r["p50_ms"] for r in rows]
            axis.plot(xs, ys, marker=marker, linestyle="", label=name)
            for row, x, y in zip(rows, xs, ys):
                axis.annotate(row["dtype"], (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
        axis.set_xlabel("graph + weights (MB)")
        axis.set_ylabel("p50 latency, batch 1 (ms)")
        axis.set_title(f"{seq_len} tokens, CPU")
        axis.set_xscale("log")
        axis.set_yscale("log")
        for ticks in (axis.xaxis, axis.yaxis):  # plain numbers, not 3x10^1
            ticks.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
            ticks.set_minor_formatter(FuncFormatter(lambda value, _: f"{value:g}" if f"{value:g}"[0] in "235" else ""))
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle("edgeformers bench: latency against size per variant")
    figure.tight_layout()
    figure.savefig(PLOT, dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20, help="timed calls per shape (edgeformers bench --runs)")
    parser.add_argument("--replot", action="store_true", help="draw from the last run's JSON, measuring nothing")
    parser.add_argument("--add-dtypes", default="", help="variants to quantize into the bundles first, e.g. fp16")
    args = parser.parse_args()
    warn_if_busy()
    reports = {}
    for name, bundle in bundles().items():
        if args.add_dtypes:
            add_dtypes(bundle, [d.strip() for d in args.add_dtypes.split(",") if d.strip()])
        reports[name] = bench(bundle, args.runs, args.replot)
    plot(reports, [16, 128])
    rows = []
    for name, report in reports.items():
        advice = report["recommendation"]
        for row in report["rows"]:
            validation = row["validation"]
            agreement = "-" if validation["value"] is None else f"{validation['metric']}={validation['value']:.4g}"
            rows.append([name, row["dtype"], row["seq_len"], row["file_bytes"] / 1e6, row["load_ms"], row["p50_ms"],
                         row["p95_ms"], row["peak_rss_mb"], agreement])
        rows.append([name, f"recommended: fastest {advice['fastest']}, smallest {advice['smallest']}",
                     "", "", "", "", "", "", ""])
    print(table(["model", "dtype", "tokens", "size MB", "load ms", "p50 ms", "p95 ms", "peak RSS MB",
                 "recorded validation"], rows, digits=1))
    print(f"\nplot: {PLOT.relative_to(REPO)}")


if __name__ == "__main__":
    main()
