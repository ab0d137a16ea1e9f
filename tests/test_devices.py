"""Device names map to providers; an unavailable one falls back with one warning or raises."""

import warnings

import pytest

from edgeformers.models.errors import DeviceError
from edgeformers.runtime import devices
from edgeformers.runtime.devices import resolve_device


@pytest.fixture
def cpu_only(monkeypatch):
    monkeypatch.setattr(devices, "available_providers", lambda: ["CPUExecutionProvider"])


@pytest.fixture
def with_cuda(monkeypatch):
    monkeypatch.setattr(
        devices, "available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )


def test_auto_is_cpu_without_accelerators(cpu_only):
    plan = resolve_device("auto")
    assert plan.device == "cpu"
    assert plan.providers == [("CPUExecutionProvider", {})]


def test_auto_prefers_cuda_and_keeps_cpu_as_fallback(with_cuda):
    plan = resolve_device("auto")
    assert plan.device == "cuda"
    assert [p for p, _ in plan.providers] == ["CUDAExecutionProvider", "CPUExecutionProvider"]


def test_cuda_index_becomes_device_id(with_cuda):
    plan = resolve_device("cuda:1")
    assert plan.device == "cuda:1"
    assert plan.providers[0] == ("CUDAExecutionProvider", {"device_id": 1})


def test_unavailable_device_falls_back_with_one_warning(cpu_only):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plan = resolve_device("cuda")
    assert plan.device == "cpu"
    assert len(caught) == 1 and "falling back to CPU" in str(caught[0].message)


def test_unavailable_device_raises_when_strict(cpu_only):
    with pytest.raises(DeviceError, match="'coreml' is unavailable"):
        resolve_device("coreml", strict=True)


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "tpu", ""])
def test_unknown_device_names_are_refused(name):
    with pytest.raises(DeviceError, match="unknown device"):
        resolve_device(name)


def test_a_provider_the_session_dropped_is_reported(bundle_factory):
    """onnxruntime quietly runs on CPU when a requested provider cannot start; the
    pipeline says so (or refuses with strict=True) and exposes the real providers."""
    from edgeformers.runtime.bundle import Bundle
    from edgeformers.runtime.devices import DevicePlan
    from edgeformers.runtime.pipelines.text_classification import (
        TextClassificationPipeline,
    )

    _, path = bundle_factory("bert", "sequence-classification", "text-classification")
    bundle = Bundle.open(path)
    plan = DevicePlan("cuda", "cuda", [("CUDAExecutionProvider", {}), ("CPUExecutionProvider", {})])
    with pytest.warns(RuntimeWarning, match="dropped CUDAExecutionProvider"):
        pipe = TextClassificationPipeline(bundle, "fp32", plan)
    assert pipe.providers == ["CPUExecutionProvider"]
    with pytest.raises(DeviceError, match="dropped CUDAExecutionProvider"):
        TextClassificationPipeline(bundle, "fp32", plan, strict=True)


def test_auto_dtype_takes_the_catalogs_best_variant_for_the_device(bundle_factory, cpu_only):
    from edgeformers.models.dtypes import recommended_dtype
    from edgeformers.runtime import pipeline

    assert recommended_dtype("cpu", ["fp32", "q8", "fp16"]) == "q8"
    assert recommended_dtype("cuda:1", ["fp32", "q8", "fp16"]) == "fp16"
    assert recommended_dtype("coreml", ["q8"]) is None
    _, path = bundle_factory("bert", "sequence-classification", "text-classification")
    assert pipeline("text-classification", path, dtype="auto").dtype == "q8"
    assert pipeline("text-classification", path).dtype == "fp32"  # None: the reference export
