"""``export`` and ``validate`` run no code from a checkpoint: no Python files are fetched
or imported (a config with ``auto_map`` is refused), and pickle weights are neither
downloaded nor loaded unless the user passes ``--allow-pickle``.

The "pickle" used here is hostile: loading it would create a marker file, so the tests
prove it was never unpickled, not only that a flag was checked."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import huggingface_hub
import pytest
import torch
from click.testing import CliRunner
from huggingface_hub.utils import filter_repo_objects
from safetensors.torch import load_file

from edgeformers.exporter.source import resolve_source
from edgeformers.exporter.validate import reference_tokenizer
from edgeformers.models.errors import ExportError
from edgeformers.runtime.cli import cli
from edgeformers.runtime.manifest import Manifest

COMMIT = "0123456789abcdef0123456789abcdef01234567"
EXPORT = ["--task", "text-classification", "--dtype", "fp32"]


class _Hostile:
    """Unpickling this creates ``marker``: what a malicious pytorch_model.bin could do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _hostile_pickle(folder: Path, marker: Path) -> None:
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(_Hostile(marker)))


def _custom_code(folder: Path, marker: Path, config_name: str = "config.json") -> None:
    """A modelling file that would create ``marker`` on import, named by ``auto_map``."""
    (folder / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w')\n")
    config = json.loads((folder / config_name).read_text())
    config["auto_map"] = {"AutoModelForSequenceClassification": "modeling_evil.EvilModel"}
    (folder / config_name).write_text(json.dumps(config))


@pytest.fixture
def checkpoint(checkpoint_factory, tmp_path) -> Path:
    """A private copy of the tiny DistilBERT classifier, safe to add files to."""
    folder = tmp_path / "checkpoint"
    shutil.copytree(checkpoint_factory("distilbert", "sequence-classification"), folder)
    return folder


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    """``snapshot_download`` over a "remote" folder, choosing files with huggingface_hub's
    own ``filter_repo_objects`` as the real one does; records what was fetched."""
    fetched: list[str] = []
    remotes: dict[str, Path] = {}

    def snapshot_download(repo_id, revision=None, allow_patterns=None, **_kwargs):
        remote = remotes[repo_id]
        files = sorted(p.relative_to(remote).as_posix() for p in remote.rglob("*") if p.is_file())
        snapshot = tmp_path / "hub" / f"models--{repo_id.replace('/', '--')}" / "snapshots" / COMMIT
        for name in filter_repo_objects(files, allow_patterns=allow_patterns):
            (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(remote / name, snapshot / name)
            fetched.append(name)
        return str(snapshot)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    return remotes, fetched


def test_a_hub_export_fetches_no_python_and_no_pickle(fake_hub, checkpoint, tmp_path):
    remotes, fetched = fake_hub
    marker = tmp_path / "pwned"
    (checkpoint / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w')\n")
    _hostile_pickle(checkpoint, marker)
    remotes["org/tiny"] = checkpoint

    result = CliRunner().invoke(cli, ["export", "org/tiny", str(tmp_path / "bundle"), *EXPORT])

    assert result.exit_code == 0, result.output
    assert "config.json" in fetched and "model.safetensors" in fetched and "tokenizer.json" in fetched
    assert not [name for name in fetched if name.endswith((".py", ".bin"))]
    assert Manifest.read(tmp_path / "bundle").source == {"hub_id": "org/tiny", "revision": COMMIT}
    assert not marker.exists()


def test_pickle_only_hub_weights_need_allow_pickle(fake_hub, checkpoint, tmp_path):
    remotes, fetched = fake_hub
    torch.save(load_file(checkpoint / "model.safetensors"), checkpoint / "pytorch_model.bin")
    (checkpoint / "model.safetensors").unlink()
    remotes["org/old"] = checkpoint

    refused = CliRunner().invoke(cli, ["export", "org/old", str(tmp_path / "refused"), *EXPORT])
    assert refused.exit_code == 1
    assert "ExportError: org/old: the Hub repository has no safetensors weights" in refused.output
    assert "--allow-pickle" in refused.output and "pytorch_model.bin" not in fetched
    assert not (tmp_path / "refused").exists()

    allowed = CliRunner().invoke(cli, ["export", "org/old", str(tmp_path / "bundle"), *EXPORT, "--allow-pickle"])
    assert allowed.exit_code == 0, allowed.output  # fp32 validated against the model loaded from the pickle
    assert "pytorch_model.bin" in fetched


def test_a_local_pickle_only_checkpoint_is_refused_and_never_unpickled(checkpoint, tmp_path):
    marker = tmp_path / "pwned"
    (checkpoint / "model.safetensors").unlink()
    _hostile_pickle(checkpoint, marker)

    result = CliRunner().invoke(cli, ["export", str(checkpoint), str(tmp_path / "bundle"), *EXPORT])

    assert result.exit_code == 1
    assert "only pickle weights (pytorch_model.bin)" in result.output and "--allow-pickle" in result.output
    assert not marker.exists() and not (tmp_path / "bundle").exists()


def test_safetensors_win_over_a_pickle_beside_them(checkpoint, tmp_path):
    marker = tmp_path / "pwned"
    _hostile_pickle(checkpoint, marker)
    result = CliRunner().invoke(cli, ["export", str(checkpoint), str(tmp_path / "bundle"), *EXPORT])
    assert result.exit_code == 0, result.output
    assert not marker.exists()


@pytest.mark.parametrize("config_name", ["config.json", "tokenizer_config.json"])
def test_custom_code_is_refused_before_anything_loads(checkpoint, tmp_path, config_name):
    marker = tmp_path / "pwned"
    _custom_code(checkpoint, marker, config_name)
    result = CliRunner().invoke(cli, ["export", str(checkpoint), str(tmp_path / "bundle"), *EXPORT])
    assert result.exit_code == 1
    assert f"{config_name} has 'auto_map' (AutoModelForSequenceClassification)" in result.output
    assert "never runs code from a checkpoint" in result.output
    assert not marker.exists()


def test_validate_checks_its_source_the_same_way(bundle_factory, checkpoint, tmp_path):
    _, bundle = bundle_factory("distilbert", "sequence-classification", "text-classification")
    marker = tmp_path / "pwned"
    (checkpoint / "model.safetensors").unlink()
    _hostile_pickle(checkpoint, marker)

    result = CliRunner().invoke(cli, ["validate", str(bundle), "--source", str(checkpoint)])

    assert result.exit_code == 1 and "--allow-pickle" in result.output
    assert not marker.exists()
    _custom_code(checkpoint, marker)
    with pytest.raises(ExportError, match="auto_map"):
        resolve_source(str(checkpoint), allow_pickle=True)
    with pytest.raises(ExportError, match="config.json has 'auto_map'"):
        reference_tokenizer(checkpoint)  # what validate and quantize load a bundle's tokenizer with
    assert not marker.exists()
