"""Export and quantize never destroy what edgeformers did not make.

Every refusal happens before any work and leaves every file byte-identical; ``--force``
replaces only an edgeformers bundle; a lock keeps two writers apart; a full disk and a
failed swap leave OUTPUT exactly as it was; leftovers of killed runs are cleaned up.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeformers.exporter import output_dir
from edgeformers.exporter.build import export
from edgeformers.exporter.variants import add_variants
from edgeformers.models.errors import ExportError
from edgeformers.runtime import pipeline
from edgeformers.runtime.bundle import Bundle
from edgeformers.runtime.cli import cli
from edgeformers.runtime.manifest import MANIFEST_NAME, Manifest

TASK = "text-classification"


def tree(folder: Path) -> dict[str, str]:
    """Everything under ``folder`` (dot-files included): file -> sha256, folder -> 'dir',
    symlink -> its target. Two equal trees hold the same bytes at the same paths."""
    found = {}
    for path in sorted(folder.rglob("*")):
        name = path.relative_to(folder).as_posix()
        if path.is_symlink():
            found[name] = "link:" + os.readlink(path)
        elif path.is_dir():
            found[name] = "dir"
        else:
            found[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


@pytest.fixture(scope="module")
def checkpoint(checkpoint_factory) -> Path:
    return checkpoint_factory("bert", "sequence-classification")


@pytest.fixture(scope="module")
def made_bundle(bundle_factory) -> Path:
    return bundle_factory("bert", "sequence-classification", TASK, dtypes=("fp32",))[1]


@pytest.fixture
def bundle(made_bundle, tmp_path) -> Path:
    """A private copy of an fp32 bundle at tmp_path/out."""
    return Path(shutil.copytree(made_bundle, tmp_path / "out"))


def export_fp32(checkpoint: Path, output: Path | str, **kwargs) -> Manifest:
    return export(str(checkpoint), output, task=TASK, dtypes=["fp32"], **kwargs)


def assert_fresh_bundle(path: Path) -> None:
    """``path`` is a complete bundle: verified, and holding exactly its listed files."""
    opened = Bundle.open(path, verify=True)
    on_disk = {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()}
    assert on_disk == set(opened.manifest.files) | {MANIFEST_NAME}
    assert pipeline(TASK, path, verify=True)("a fine day")[0]["label"] in ("NEGATIVE", "POSITIVE")


# --- refusals: --force replaces only an edgeformers bundle ---------------------------------------


def test_force_refuses_a_user_folder(checkpoint, tmp_path):
    out = tmp_path / "out"
    (out / "photos").mkdir(parents=True)
    (out / "photos" / "cat.jpg").write_bytes(b"\xff\xd8 not really a cat")
    (out / "notes.txt").write_text("precious")
    before = tree(tmp_path)
    with pytest.raises(ExportError, match=rf"OUTPUT {out} is not an edgeformers bundle \(it has no edgeformers.json\)"):
        export_fp32(checkpoint, out, force=True)
    assert tree(tmp_path) == before


@pytest.mark.parametrize("dropped", ["notes.txt", "onnx/my_model.onnx", "deep/er/file.bin"])
def test_force_refuses_a_bundle_holding_a_user_file(checkpoint, bundle, tmp_path, dropped):
    (bundle / dropped).parent.mkdir(parents=True, exist_ok=True)
    (bundle / dropped).write_text("the user's own")
    before = tree(tmp_path)
    with pytest.raises(ExportError, match=rf"not an edgeformers bundle \({dropped} is not one of its files\)"):
        export_fp32(checkpoint, bundle, force=True)
    assert tree(tmp_path) == before


def test_force_refuses_a_bundle_holding_a_symlink(checkpoint, bundle, tmp_path):
    (tmp_path / "elsewhere.txt").write_text("kept")
    (bundle / "link.txt").symlink_to(tmp_path / "elsewhere.txt")
    before = tree(tmp_path)
    with pytest.raises(ExportError, match="link.txt is a symbolic link"):
        export_fp32(checkpoint, bundle, force=True)
    assert tree(tmp_path) == before


def test_force_refuses_a_folder_whose_manifest_does_not_parse(checkpoint, bundle, tmp_path):
    (bundle / MANIFEST_NAME).write_text('{"format": "edgeformers", "task": 3}')
    before = tree(tmp_path)
    with pytest.raises(ExportError, match="does not read as an edgeformers manifest"):
        export_fp32(checkpoint, bundle, force=True)
    assert tree(tmp_path) == before


def test_the_source_checkpoint_is_never_output(checkpoint, tmp_path):
    source = Path(shutil.copytree(checkpoint, tmp_path / "models" / "ck"))
    before = tree(tmp_path)
    cases = [
        (source, "is the source checkpoint itself"),
        (source.parent, "holds the source checkpoint"),
        (source / "onnx", "is inside the source checkpoint"),
    ]
    for output, why in cases:
        for force in (True, False):
            with pytest.raises(ExportError, match=why):
                export_fp32(source, output, force=force)
    assert tree(tmp_path) == before


def test_a_plain_file_is_never_output(checkpoint, tmp_path):
    out = tmp_path / "out"
    out.write_text("a file, not a folder")
    for force in (True, False):
        with pytest.raises(ExportError, match=f"OUTPUT {out} is a file, not a folder"):
            export_fp32(checkpoint, out, force=force)
    assert out.read_text() == "a file, not a folder"


def test_a_symlink_is_never_output(checkpoint, bundle, tmp_path):
    (tmp_path / "alias").symlink_to(bundle)
    before = tree(tmp_path)
    with pytest.raises(ExportError, match="is a symbolic link"):
        export_fp32(checkpoint, tmp_path / "alias", force=True)
    assert tree(tmp_path) == before


@pytest.mark.parametrize("output", [".", "..", "./", "sub/..", ""])
def test_the_current_folder_and_its_parents_are_never_output(checkpoint, bundle, tmp_path, monkeypatch, output):
    # The current folder is even a real bundle: it is refused all the same, since swapping
    # it would leave the user's shell in a deleted folder.
    monkeypatch.chdir(bundle)
    before = tree(tmp_path)
    with pytest.raises(ExportError, match="is the current folder or holds it|OUTPUT is empty"):
        export_fp32(checkpoint, output, force=True)
    assert tree(tmp_path) == before


def test_home_and_root_are_never_output(checkpoint, bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(bundle))
    before = tree(tmp_path)
    with pytest.raises(ExportError, match="is your home folder or holds it"):
        export_fp32(checkpoint, bundle, force=True)
    with pytest.raises(ExportError, match="is your home folder or holds it"):
        export_fp32(checkpoint, tmp_path, force=True)
    with pytest.raises(ExportError, match="is the file system root"):
        export_fp32(checkpoint, "/", force=True)
    assert tree(tmp_path) == before


def test_without_force_an_existing_bundle_is_refused(checkpoint, bundle, tmp_path):
    before = tree(tmp_path)
    with pytest.raises(ExportError, match="already exists; pass --force"):
        export_fp32(checkpoint, bundle)
    assert tree(tmp_path) == before


def test_the_cli_refusals_are_one_line(checkpoint, bundle, tmp_path, monkeypatch):
    (bundle / "notes.txt").write_text("mine")
    monkeypatch.chdir(tmp_path)
    for output in (".", "out"):
        result = CliRunner().invoke(cli, ["export", str(checkpoint), output, "--task", TASK, "--force"])
        assert result.exit_code == 1
        assert result.output.count("\n") == 1 and result.output.startswith("Error: ExportError: OUTPUT")
    assert (bundle / "notes.txt").read_text() == "mine"


# --- what --force may replace ---------------------------------------------------------------------


def test_an_empty_folder_is_fine_without_force(checkpoint, tmp_path):
    (tmp_path / "out").mkdir()
    export_fp32(checkpoint, tmp_path / "out")
    assert_fresh_bundle(tmp_path / "out")
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_force_replaces_a_bundle_and_its_staging_leftovers(checkpoint, bundle, tmp_path):
    (bundle / ".edgeformers.json.4242.partial").write_text("{")
    (bundle / "onnx" / ".partial-abcd_123").mkdir()
    (bundle / "onnx" / ".partial-abcd_123" / "model_quantized.onnx").write_bytes(b"half")
    export_fp32(checkpoint, bundle, force=True)
    assert_fresh_bundle(bundle)
    assert sorted(os.listdir(tmp_path)) == ["out"]  # no temporary folder, old copy or lock file left


def test_the_fallback_swap_replaces_a_bundle(checkpoint, bundle, tmp_path, monkeypatch):
    monkeypatch.setattr(output_dir, "exchange", lambda first, second: False)
    export_fp32(checkpoint, bundle, force=True)
    assert_fresh_bundle(bundle)
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_a_failed_second_rename_puts_the_old_bundle_back(checkpoint, bundle, tmp_path, monkeypatch):
    monkeypatch.setattr(output_dir, "exchange", lambda first, second: False)
    real_rename = os.rename

    def rename(src, dst, *args, **kwargs):
        if Path(dst) == bundle and ".partial-" in Path(src).name:
            raise PermissionError(errno.EACCES, "Permission denied", str(src))
        real_rename(src, dst, *args, **kwargs)

    before = tree(tmp_path)
    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(ExportError, match="failed, which is left as it was"):
        export_fp32(checkpoint, bundle, force=True)
    assert tree(tmp_path) == before


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="renameat2(RENAME_EXCHANGE) is Linux's")
def test_exchange_swaps_two_folders_atomically(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f").write_text("a")
    (tmp_path / "b").mkdir()
    assert output_dir.exchange(tmp_path / "a", tmp_path / "b") is True
    assert sorted(os.listdir(tmp_path / "b")) == ["f"] and os.listdir(tmp_path / "a") == []


# --- the lock ------------------------------------------------------------------------------------


def test_a_second_writer_fails_fast_while_the_lock_is_held(checkpoint, bundle, tmp_path):
    before = tree(tmp_path)
    with output_dir.write_lock(bundle):
        with pytest.raises(ExportError, match=rf"another edgeformers process \(pid {os.getpid()}\) is writing OUTPUT"):
            export_fp32(checkpoint, bundle, force=True)
        with pytest.raises(ExportError, match="another edgeformers process .* is writing BUNDLE"):
            add_variants(bundle, ["fp16"])
        assert (tmp_path / ".out.lock").is_file()
    assert tree(tmp_path) == before  # the lock file goes with the lock
    export_fp32(checkpoint, bundle, force=True)


def test_a_lock_file_left_by_a_killed_process_does_not_block(checkpoint, bundle, tmp_path):
    (tmp_path / ".out.lock").write_text("999999\n")  # file present, nobody holds the lock
    export_fp32(checkpoint, bundle, force=True)
    assert sorted(os.listdir(tmp_path)) == ["out"]


# --- leftovers of killed runs ---------------------------------------------------------------------


def test_stale_leftovers_are_removed_with_a_log_line_and_nothing_else_is(checkpoint, bundle, tmp_path, caplog):
    ours = [".out.partial-abcd1234", ".out.old-zz_9x8y7"]
    not_ours = [".out.partial-short", ".out.backup", ".other.partial-abcd1234", ".out.partial-abcd12345"]
    for name in ours + not_ours:
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.onnx").write_bytes(b"x")
    (tmp_path / ".out.old-filefile").write_text("a file, not a folder: not ours")
    keep = {name: tree(tmp_path / name) for name in not_ours}
    with caplog.at_level(logging.WARNING, logger="edgeformers.exporter.output_dir"):
        export_fp32(checkpoint, bundle, force=True)
    removed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("removed")]
    assert sorted(removed) == sorted(
        f"removed {tmp_path / name}, left by an interrupted edgeformers run" for name in ours
    )
    assert sorted(os.listdir(tmp_path)) == sorted(["out", ".out.old-filefile", *not_ours])
    assert {name: tree(tmp_path / name) for name in not_ours} == keep


def test_a_bundle_left_only_as_old_is_put_back(checkpoint, bundle, tmp_path, caplog):
    """A kill between the fallback swap's two renames leaves OUTPUT missing: the next run
    restores it before anything else, and without --force then refuses to replace it."""
    before = tree(bundle)
    old = tmp_path / ".out.old-abcdefgh"
    bundle.rename(old)
    with caplog.at_level(logging.WARNING, logger="edgeformers.exporter.output_dir"):
        with pytest.raises(ExportError, match="already exists; pass --force"):
            export_fp32(checkpoint, bundle)
    assert f"restored {bundle} from .out.old-abcdefgh" in caplog.text
    assert tree(bundle) == before and sorted(os.listdir(tmp_path)) == ["out"]


# --- disk full ------------------------------------------------------------------------------------


def _disk_fills_in_onnx_save(monkeypatch) -> list[str]:
    """onnx.save_model writes a few bytes, then the disk is full."""
    import onnx

    calls = []

    def full(model, path, *args, **kwargs):
        calls.append(str(path))
        Path(path).write_bytes(b"\x08\x07partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(onnx, "save_model", full)
    return calls


@pytest.mark.parametrize("existing", [True, False], ids=["over-a-bundle", "new-output"])
def test_disk_full_mid_export_changes_nothing(checkpoint, made_bundle, tmp_path, monkeypatch, existing):
    out = tmp_path / "out"
    if existing:
        shutil.copytree(made_bundle, out)
    before = tree(tmp_path)
    calls = _disk_fills_in_onnx_save(monkeypatch)
    with pytest.raises(ExportError, match=r"no space left on device while writing .*\.out\.partial-.*model\.onnx"):
        export_fp32(checkpoint, out, force=True)
    assert calls, "the fp32 graph was never saved through onnx.save_model; the test must hit a real write"
    assert tree(tmp_path) == before


def test_disk_full_writing_the_manifest_changes_nothing(checkpoint, bundle, tmp_path, monkeypatch):
    def full(self, folder):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(folder / MANIFEST_NAME))

    before = tree(tmp_path)
    monkeypatch.setattr(Manifest, "write", full)
    with pytest.raises(ExportError, match="no space left on device while writing .*edgeformers.json"):
        export_fp32(checkpoint, bundle, force=True)
    assert tree(tmp_path) == before


def test_disk_full_mid_quantize_changes_nothing(bundle, tmp_path, monkeypatch):
    before = tree(tmp_path)
    calls = _disk_fills_in_onnx_save(monkeypatch)
    result = CliRunner().invoke(cli, ["quantize", str(bundle), "--dtype", "fp16"])
    assert result.exit_code == 1 and calls and "Traceback" not in result.output
    assert result.output.splitlines()[-1].startswith("Error: ExportError: no space left on device while writing")
    assert tree(tmp_path) == before


# --- quantize ---------------------------------------------------------------------------------------


def test_quantize_keeps_user_files_and_leaves_them_unlisted(bundle, checkpoint, tmp_path):
    (bundle / "notes.txt").write_text("mine")
    add_variants(bundle, ["fp16"])
    opened = Bundle.open(bundle, verify=True)
    assert set(opened.manifest.variants) == {"fp32", "fp16"}
    assert (bundle / "notes.txt").read_text() == "mine" and "notes.txt" not in opened.manifest.files
    assert sorted(os.listdir(tmp_path)) == ["out"]
    with pytest.raises(ExportError, match="notes.txt is not one of its files"):  # so --force still protects it
        export_fp32(checkpoint, bundle, force=True)


def test_quantize_needs_an_edgeformers_bundle(bundle, tmp_path):
    plain = tmp_path / "plain"
    (plain / "onnx").mkdir(parents=True)
    shutil.copy(bundle / "config.json", plain / "config.json")
    for name in ("model.onnx", "model.onnx_data"):
        shutil.copy(bundle / "onnx" / name, plain / "onnx" / name)
    before = tree(tmp_path)
    cases = [
        ([str(plain)], "has no edgeformers.json: quantize needs an edgeformers bundle"),
        ([str(tmp_path / "missing")], "is not a folder; quantize needs an edgeformers bundle"),
        ([str(bundle), "--dtype", "fp32"], "quantize adds variants made from fp32"),
    ]
    for args, message in cases:
        result = CliRunner().invoke(cli, ["quantize", *args])
        assert result.exit_code == 1, result.output
        assert result.output.count("\n") == 1 and message in result.output, result.output
    assert tree(tmp_path) == before


def test_export_argument_errors_are_typed(checkpoint, tmp_path):
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(ExportError, match="cannot create the folder"):
        export_fp32(checkpoint, tmp_path / "a-file" / "out")
    with pytest.raises(ExportError, match="--atol nan must be a finite number"):
        export_fp32(checkpoint, tmp_path / "out", atol=float("nan"))
    result = CliRunner().invoke(cli, ["export", str(checkpoint), str(tmp_path / "o"), "--task", TASK, "--atol", "-1"])
    assert result.exit_code == 1 and result.output.count("\n") == 1 and "--atol -1.0 must be" in result.output
    assert sorted(os.listdir(tmp_path)) == ["a-file"]



def test_quantize_refuses_the_current_folder(bundle, tmp_path, monkeypatch):
    monkeypatch.chdir(bundle)
    before = tree(tmp_path)
    result = CliRunner().invoke(cli, ["quantize", ".", "--dtype", "fp16"])
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert "BUNDLE . is the current folder or holds it" in result.output
    assert tree(tmp_path) == before
