"""ONNX Runtime execution providers and session creation."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import onnxruntime as ort

log = logging.getLogger(__name__)

ProviderSpec = str | tuple[str, dict[str, Any]]

_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


class ProviderError(RuntimeError):
    pass


def resolve_providers(
    requested: list[str],
    *,
    cuda_device_id: int = 0,
    arena_extend_strategy: str = "kNextPowerOfTwo",
    cuda_mem_limit_gb: float = 0.0,
) -> list[ProviderSpec]:
    """Map settings to onnxruntime providers.

    "auto" takes CUDA when this onnxruntime build offers it (onnxruntime-gpu on a GPU host) and CPU otherwise;
    CPU is always appended last so an op CUDA lacks still runs. An explicitly named provider that this build
    lacks is an error rather than a silent fallback: the operator asked for it.
    """
    available = ort.get_available_providers()
    names: list[str] = []
    for item in requested or ["auto"]:
        if item == "auto":
            if "CUDAExecutionProvider" in available:
                names.append("CUDAExecutionProvider")
            else:
                log.info("no CUDAExecutionProvider in this onnxruntime build (%s): using CPU", ", ".join(available))
            continue
        name = _ALIASES.get(item.lower(), item)
        if name not in available:
            raise ProviderError(f"execution provider {item!r} is not available; this onnxruntime offers {available}")
        names.append(name)
    if "CPUExecutionProvider" not in names:
        names.append("CPUExecutionProvider")
    specs: list[ProviderSpec] = []
    for name in dict.fromkeys(names):
        if name == "CUDAExecutionProvider":
            opts: dict[str, Any] = {"device_id": cuda_device_id, "arena_extend_strategy": arena_extend_strategy}
            if cuda_mem_limit_gb > 0:
                opts["gpu_mem_limit"] = int(cuda_mem_limit_gb * 1024**3)
            specs.append((name, opts))
        else:
            specs.append(name)
    return specs


def create_session(
    path: Path | str,
    *,
    providers: list[str] | None = None,
    intra_op_threads: int = 0,
    inter_op_threads: int = 0,
    cuda_device_id: int = 0,
    arena_extend_strategy: str = "kNextPowerOfTwo",
    cuda_mem_limit_gb: float = 0.0,
    config_entries: dict[str, str] | None = None,
) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Extra ORT session config keys, e.g. {"session.intra_op.allow_spinning": "0"} for a server sharing its cores.
    for key, value in (config_entries or {}).items():
        options.add_session_config_entry(key, value)
        log.info("onnxruntime session config %s=%s", key, value)
    if intra_op_threads > 0:
        options.intra_op_num_threads = intra_op_threads
        log.info("onnxruntime intra-op threads: %d", intra_op_threads)
    if inter_op_threads > 0:
        options.inter_op_num_threads = inter_op_threads
        options.execution_mode = ort.ExecutionMode.ORT_PARALLEL
        log.info("onnxruntime inter-op threads: %d (parallel execution)", inter_op_threads)
    specs = resolve_providers(
        providers or ["auto"],
        cuda_device_id=cuda_device_id,
        arena_extend_strategy=arena_extend_strategy,
        cuda_mem_limit_gb=cuda_mem_limit_gb,
    )
    session = ort.InferenceSession(str(path), sess_options=options, providers=specs)
    used = session.get_providers()
    wanted = [s if isinstance(s, str) else s[0] for s in specs]
    # CUDA can be offered by the build yet fail to initialise (no driver, missing cuDNN): onnxruntime then
    # silently drops it, which must not go unnoticed.
    if "CUDAExecutionProvider" in wanted and "CUDAExecutionProvider" not in used:
        log.warning("CUDAExecutionProvider failed to initialise for %s; running on %s", path, used)
    else:
        log.info("loaded %s on %s", Path(path).name, used)
    return session
