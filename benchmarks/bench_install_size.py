"""Install size of the base (runtime-only) install vs the export stack.

    python benchmarks/bench_install_size.py             # ~1-3 min, needs PyPI (or the pip find-links)
    python benchmarks/bench_install_size.py --keep      # keep the fresh venv under .bench/install/

Builds the edgeformers wheel from this checkout (``pip wheel --no-deps
--no-build-isolation``), installs it with its base dependencies only into a fresh venv,
then reports that venv's site-packages size and its biggest distributions, checks that
torch/transformers/optimum are absent (and that the runtime imports and, if the
benchmark bundle exists, classifies a text there without them), and compares with what
the ``export`` extra adds in the current (dev) environment: the closure of its
requirements minus the base closure, sized from each distribution's RECORD.

Results print as markdown tables and go to .bench/results/bench_install_size.json.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    BENCH_DIR,
    BUNDLES_DIR,
    MB,
    REPO,
    child_env,
    dir_size,
    log,
    table,
    verdict,
    write_results,
)

SCRIPT = "bench_install_size"
PACKAGE_DIRS = ("runtime", "exporter", "models")  # fallback when pyproject cannot be read
HEAVY = ("torch", "transformers", "optimum", "optimum-onnx", "onnx")
TARGET_MB = 250.0
# Run inside the fresh venv: size of every installed distribution from its RECORD.
SIZES_CHILD = r'''
import json, sys
from importlib import metadata
out = {}
for dist in metadata.distributions():
    total = 0
    for f in dist.files or []:
        try:
            total += dist.locate_file(f).stat().st_size
        except OSError:
            pass
    out[dist.metadata["Name"]] = {"version": dist.version, "bytes": total}
print(json.dumps(out))
'''
# Run inside the fresh venv: the runtime works with the base install alone.
SMOKE_CHILD = r'''
import json, sys
from edgeformers.runtime import pipeline
result = None
if len(sys.argv) > 1:
    clf = pipeline("sentiment-analysis", sys.argv[1], device="cpu", dtype="q8")
    result = clf("I absolutely loved this movie.")
heavy = sorted(m for m in ("torch", "transformers", "optimum", "onnx") if m in sys.modules)
importable = []
for name in ("torch", "transformers", "optimum"):
    try:
        __import__(name)
        importable.append(name)
    except ImportError:
        pass
print(json.dumps({"result": result, "heavy_modules_loaded": heavy, "heavy_importable": importable}))
'''


def run(command: list[str], what: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    shown = ["<script>" if "\n" in part else part for part in command]
    log(f"{what}: {' '.join(shown)}")
    done = subprocess.run(command, capture_output=True, text=True, env=child_env(), **kwargs)
    if done.returncode != 0:
        raise SystemExit(f"{what} failed (rc {done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def site_packages(python: Path) -> Path:
    done = run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], "locate site-packages")
    return Path(done.stdout.strip())


def package_dirs() -> list[str]:
    """Top-level source folders named by pyproject's package-dir mapping."""
    try:
        import tomllib

        mapping = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
        return sorted({str(v).split("/")[0] for v in mapping.values()})
    except (ImportError, KeyError):
        return list(PACKAGE_DIRS)


def source_copy(work: Path) -> Path:
    """The checkout's packaging inputs, copied: building there leaves no build/ or
    egg-info behind in the repo and cannot race another build running in it."""
    src = work / "src"
    src.mkdir(parents=True)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist")
    for path in REPO.iterdir():
        if path.is_file() and (path.name in ("pyproject.toml", "setup.py", "setup.cfg", "MANIFEST.in")
                               or path.name.startswith(("README", "LICENSE"))):
            shutil.copy2(path, src / path.name)
    for package in package_dirs():
        shutil.copytree(REPO / package, src / package, ignore=skip)
    return src


def fresh_install(work: Path) -> dict[str, Any]:
    """Wheel -> fresh venv with base deps -> sizes, absence checks, smoke run."""
    wheels = work / "wheels"
    wheels.mkdir(parents=True)
    t0 = time.perf_counter()
    src = source_copy(work)
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(src)],
        "build wheel")
    wheel = next(wheels.glob("edgeformers-*.whl"))
    t1 = time.perf_counter()
    venv = work / "venv"
    run([sys.executable, "-m", "venv", str(venv)], "create venv")
    python = venv / "bin" / "python"
    run([str(python), "-m", "pip", "install", "-q", str(wheel)], "install wheel (base deps, may reach PyPI)")
    t2 = time.perf_counter()
    sp = site_packages(python)
    dists = json.loads(run([str(python), "-c", SIZES_CHILD], "size distributions").stdout)
    bundle = BUNDLES_DIR / "distilbert-sst2"
    smoke_args = [str(bundle)] if (bundle / "edgeformers.json").is_file() else []
    smoke = json.loads(run([str(python), "-c", SMOKE_CHILD, *smoke_args], "smoke run in fresh venv",
                           cwd=str(work)).stdout.strip().splitlines()[-1])
    tooling = {"pip", "setuptools", "wheel"}
    total = dir_size(sp)
    tooling_bytes = sum(d["bytes"] for name, d in dists.items() if name.lower() in tooling)
    return {
        "wheel": wheel.name, "wheel_mb": wheel.stat().st_size / MB, "site_packages": str(sp),
        "site_packages_mb": total / MB, "site_packages_without_pip_mb": (total - tooling_bytes) / MB,
        "distributions": {k: {"version": v["version"], "mb": v["bytes"] / MB} for k, v in dists.items()},
        "heavy_installed": sorted(n for n in dists if n.lower() in HEAVY),
        "smoke": smoke, "build_s": t1 - t0, "install_s": t2 - t1,
    }


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(root: str, extras: set[str], installed: dict[str, metadata.Distribution]) -> set[str]:
    """Installed distributions that ``root[extras]`` pulls in, markers evaluated here."""
    from packaging.requirements import Requirement

    seen: set[str] = set()
    todo: list[tuple[str, set[str]]] = [(_norm(root), extras)]
    while todo:
        name, wanted = todo.pop()
        dist = installed.get(name)
        if dist is None:
            continue
        key = name + "[" + ",".join(sorted(wanted)) + "]"
        if key in seen:
            continue
        seen.add(key)
        for text in dist.requires or []:
            req = Requirement(text)
            envs = [{"extra": e} for e in (wanted or {""})]
            if req.marker is None or any(req.marker.evaluate(env) for env in envs):
                todo.append((_norm(req.name), set(req.extras)))
    return {k.split("[", 1)[0] for k in seen}


def dist_mb(dist: metadata.Distribution) -> float:
    total = 0
    for f in dist.files or []:
        try:
            total += Path(str(dist.locate_file(f))).stat().st_size
        except OSError:
            pass
    return total / MB


def export_stack() -> dict[str, Any]:
    """What ``pip install edgeformers[export]`` adds on top of the base install, measured in
    the environment running this script (the dev venv)."""
    installed = {_norm(d.metadata["Name"]): d for d in metadata.distributions()}
    if "edgeformers" not in installed:
        raise SystemExit("run this with the dev venv's python (edgeformers[export] installed)")
    base = closure("edgeformers", set(), installed)
    full = closure("edgeformers", {"export"}, installed)
    extra = sorted(full - base - {"edgeformers"})
    sizes = {name: {"version": installed[name].version, "mb": dist_mb(installed[name])} for name in extra}
    return {"python": sys.executable, "distributions": sizes, "total_mb": sum(s["mb"] for s in sizes.values()),
            "named_mb": {n: sizes[n]["mb"] for n in HEAVY if n in sizes},
            "base_closure": sorted(base)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", action="store_true", help="keep .bench/install/ (wheel and venv) afterwards")
    parser.add_argument("--top", type=int, default=10, help="how many of the biggest distributions to list")
    args = parser.parse_args()
    started = time.perf_counter()
    work = BENCH_DIR / "install"
    shutil.rmtree(work, ignore_errors=True)
    try:
        base = fresh_install(work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    stack = export_stack()
    size = base["site_packages_mb"]
    print("## Install size\n")
    print(table(["measure", "value", "target", "verdict"], [
        ["base install site-packages (MB)", size, f"≤ {TARGET_MB:g}", verdict(size, TARGET_MB, False)],
        ["  of which pip/setuptools (MB)", size - base["site_packages_without_pip_mb"], "-", "-"],
        ["edgeformers wheel (MB)", base["wheel_mb"], "-", "-"],
        ["torch/transformers/optimum installed", ", ".join(base["heavy_installed"]) or "none", "none",
         "meets" if not base["heavy_installed"] else "misses"],
        ["heavy modules after a q8 run", ", ".join(base["smoke"]["heavy_modules_loaded"]) or "none", "none",
         "meets" if not base["smoke"]["heavy_modules_loaded"] else "misses"],
        ["export extra adds (MB, dev venv)", stack["total_mb"], "-", "-"],
        [f"  of which {', '.join(stack['named_mb'])} (MB)", sum(stack["named_mb"].values()), "-", "-"],
        ["export extra / base install (x)", stack["total_mb"] / size if size else float("nan"), "-", "-"],
    ], digits=1))
    top = sorted(base["distributions"].items(), key=lambda kv: -kv[1]["mb"])[: args.top]
    print(f"\n### Biggest distributions in the base install (of {len(base['distributions'])})\n")
    print(table(["distribution", "version", "MB"], [[k, v["version"], v["mb"]] for k, v in top]))
    heavy = sorted(stack["distributions"].items(), key=lambda kv: -kv[1]["mb"])
    print(f"\n### What the export extra adds ({len(heavy)} distributions, {stack['total_mb']:.0f} MB)\n")
    print(table(["distribution", "version", "MB"], [[k, v["version"], v["mb"]] for k, v in heavy[: args.top]]))
    if base["smoke"]["result"] is not None:
        print(f"\nsmoke run in the fresh venv (q8 bundle): {base['smoke']['result']}")
    results = {"base_install": base, "export_stack": stack, "target_mb": TARGET_MB,
               "elapsed_s": time.perf_counter() - started}
    path = write_results(SCRIPT, results)
    print(f"\n(total {results['elapsed_s']:.0f} s; results in {path})")


if __name__ == "__main__":
    main()
