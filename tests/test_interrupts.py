"""SIGKILL at every step of writing a bundle: OUTPUT is the complete old bundle or the
complete new one, and the next run cleans up what the killed one left.

Each case runs ``export`` or ``quantize`` in a subprocess that wraps a library function
(os.rename, os.unlink, the exchange, the manifest write, optimum's export, the variant
maker) so that the process SIGKILLs itself at that point; nothing in edgeformers has a
test hook.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from edgeformers.exporter import output_dir
from edgeformers.exporter.build import export
from edgeformers.exporter.variants import add_variants
from edgeformers.runtime import pipeline
from edgeformers.runtime.bundle import Bundle
from edgeformers.runtime.manifest import MANIFEST_NAME

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")

TASK = "text-classification"

_KILLED_RUN = r"""
import json, os, signal, sys
from pathlib import Path

args = json.loads(sys.argv[1])
point, out = args["point"], Path(args["output"])

from edgeformers.exporter import build, output_dir, variants
from edgeformers.runtime.manifest import Manifest

def die():
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)

real_rename, real_unlink, real_exchange = os.rename, os.unlink, output_dir.exchange
exchanged = []

def then_die(real):
    def wrapper(*a, **k):
        real(*a, **k)
        die()
    return wrapper

if point == "after-optimum-export":
    build._optimum_export = then_die(build._optimum_export)
elif point == "writing-manifest":
    Manifest.write = lambda self, folder: die()
elif point == "making-variant":
    variants.make_variant = then_die(variants.make_variant)
elif point in ("before-first-rename", "between-fallback-renames", "after-fallback-renames"):
    output_dir.exchange = lambda first, second: False  # no RENAME_EXCHANGE: the fallback swap
    def rename(src, dst, *a, **k):
        if point == "before-first-rename" and Path(dst) == out:
            die()
        real_rename(src, dst, *a, **k)
        if point == "between-fallback-renames" and Path(src) == out:
            die()
        if point == "after-fallback-renames" and Path(dst) == out:
            die()
    os.rename = rename
elif point == "after-exchange":
    def exchange_then_die(first, second):
        real_exchange(first, second)
        die()
    output_dir.exchange = exchange_then_die
elif point == "removing-old-copy":
    def exchange(first, second):
        exchanged.append(first)
        return real_exchange(first, second)
    output_dir.exchange = exchange
    def unlink(path, *a, **k):
        real_unlink(path, *a, **k)
        if exchanged:
            exchanged.append(path)
            if len(exchanged) == 4:  # three files of the old copy gone, the rest still there
                die()
    os.unlink = unlink
else:
    raise SystemExit(f"unknown point {point}")

if args["command"] == "export":
    build.export(args["source"], out, task="text-classification", dtypes=["fp32"], force=True)
else:
    variants.add_variants(out, ["fp16"])
print("FINISHED WITHOUT BEING KILLED")
"""


def tree(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
    }


def run_killed(command: str, point: str, out: Path, source: Path | None = None) -> None:
    args = {"command": command, "point": point, "output": str(out), "source": str(source)}
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", _KILLED_RUN, json.dumps(args)], capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == -signal.SIGKILL, f"{point}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"


def assert_complete(out: Path, variants: set[str]) -> None:
    """A complete bundle: every listed file verified, nothing unlisted, and it runs."""
    opened = Bundle.open(out, verify=True)
    assert set(opened.manifest.variants) == variants
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert on_disk == set(opened.manifest.files) | {MANIFEST_NAME}
    for dtype in variants:
        assert pipeline(TASK, out, dtype=dtype, verify=True)("a fine day")[0]["label"] in ("NEGATIVE", "POSITIVE")


@pytest.fixture(scope="module")
def checkpoint(checkpoint_factory) -> Path:
    return checkpoint_factory("bert", "sequence-classification")


@pytest.fixture(scope="module")
def old_bundles(bundle_factory) -> dict[str, Path]:
    """The bundle a killed export replaces (fp32 + fp16, so it differs from the new fp32-only
    one), and the one a killed quantize extends (fp32 only; quantize adds fp16)."""
    return {
        "export": bundle_factory("bert", "sequence-classification", TASK, dtypes=("fp32", "fp16"))[1],
        "quantize": bundle_factory("bert", "sequence-classification", TASK, dtypes=("fp32",))[1],
    }


# (command, kill point, whether OUTPUT existed, what OUTPUT must be right after the kill,
#  the kinds of leftover folders the kill leaves beside it)
CASES = [
    ("export", "after-optimum-export", True, "old", ["partial"]),
    ("export", "writing-manifest", True, "old", ["partial"]),
    ("export", "before-first-rename", False, "absent", ["partial"]),
    ("export", "between-fallback-renames", True, "old-after-recovery", ["old", "partial"]),
    ("export", "after-fallback-renames", True, "new", ["old"]),
    ("export", "after-exchange", True, "new", ["partial"]),  # the partial now holds the old bundle
    ("export", "removing-old-copy", True, "new", ["partial"]),
    ("quantize", "making-variant", True, "old", ["partial"]),
    ("quantize", "writing-manifest", True, "old", ["partial"]),
    ("quantize", "between-fallback-renames", True, "old-after-recovery", ["old", "partial"]),
    ("quantize", "after-exchange", True, "new", ["partial"]),
    ("quantize", "removing-old-copy", True, "new", ["partial"]),
]


@pytest.mark.parametrize(("command", "point", "existed", "expected", "left"), CASES,
                         ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_a_killed_run_leaves_the_old_or_the_new_bundle(checkpoint, old_bundles, tmp_path, command, point, existed,
                                                        expected, left):
    out = tmp_path / "out"
    (tmp_path / "notes.txt").write_text("the user's, beside OUTPUT")
    (tmp_path / ".out.backup").mkdir()  # a dot-folder that is not ours
    (tmp_path / ".out.backup" / "keep").write_text("kept")
    if existed:
        shutil.copytree(old_bundles[command], out)
    old = tree(out) if existed else None
    new_variants = {"fp32"} if command == "export" else {"fp32", "fp16"}

    run_killed(command, point, out, checkpoint)

    leftovers = output_dir.leftovers(out)
    assert sorted(p.name.split(".")[-1].split("-")[0] for p in leftovers) == left
    if point == "after-exchange":
        assert tree(leftovers[0]) == old  # exchanged, not copied: the old bundle is whole until removed

    if expected == "old":
        assert tree(out) == old
    elif expected == "absent":
        assert not out.exists()
    elif expected == "new":
        assert_complete(out, new_variants)
    else:  # killed between the two renames: OUTPUT is missing, the old bundle is whole beside it
        assert not out.exists()
        (kept,) = [p for p in output_dir.leftovers(out) if ".old-" in p.name]
        assert tree(kept) == old
        with output_dir.write_lock(out):  # whoever takes the lock next puts it back first
            output_dir.recover(out)
        assert tree(out) == old
    assert (tmp_path / "notes.txt").read_text() == "the user's, beside OUTPUT"
    assert tree(tmp_path / ".out.backup") == {"keep": hashlib.sha256(b"kept").hexdigest()}

    # The next run cleans up what the killed one left and succeeds.
    if command == "export":
        export(str(checkpoint), out, task=TASK, dtypes=["fp32"], force=True)
    else:
        add_variants(out, ["fp16"])
    assert_complete(out, new_variants)
    assert sorted(os.listdir(tmp_path)) == [".out.backup", "notes.txt", "out"]
