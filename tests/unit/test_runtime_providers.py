import logging

import onnxruntime as ort
import pytest

from mmsearch.runtime.providers import ProviderError, resolve_providers


def test_auto_uses_cuda_only_when_this_build_has_it(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    specs = resolve_providers(["auto"], cuda_device_id=1, cuda_mem_limit_gb=2)
    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert specs[0] == (
            "CUDAExecutionProvider",
            {"device_id": 1, "arena_extend_strategy": "kNextPowerOfTwo", "gpu_mem_limit": 2 * 1024**3},
        )
        assert specs[-1] == "CPUExecutionProvider"
    else:
        assert specs == ["CPUExecutionProvider"]
        assert "using CPU" in caplog.text


def test_explicit_provider_missing_from_the_build_is_an_error() -> None:
    if "TensorrtExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has TensorRT")
    with pytest.raises(ProviderError, match="'tensorrt' is not available"):
        resolve_providers(["tensorrt"])


def test_cpu_is_always_the_last_fallback() -> None:
    assert resolve_providers(["cpu"]) == ["CPUExecutionProvider"]
