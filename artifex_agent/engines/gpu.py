"""GPU memory hygiene and facts; importable and harmless on machines without CUDA."""

from __future__ import annotations

import gc
import logging
import os
import sys
from typing import Any

import torch

from artifex_agent.errors import ConfigError

logger = logging.getLogger(__name__)

ALLOC_ENV = "PYTORCH_CUDA_ALLOC_CONF"
# torch >= 2.9 also reads the device-neutral name; a user value in either one wins.
ALLOC_ENVS = ("PYTORCH_ALLOC_CONF", ALLOC_ENV)
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def configure_allocator() -> str | None:
    """Ask for expandable segments (less fragmentation) unless the user set the allocator; call before CUDA starts."""
    for env in ALLOC_ENVS:
        if os.environ.get(env):
            return os.environ[env]
    # The caching allocator reads its settings once, when CUDA initialises.
    if torch.cuda.is_initialized():
        logger.warning("CUDA is already initialised; %s is not applied", ALLOC_ENV)
        return None
    if sys.platform == "win32":
        # Expandable segments are not implemented on Windows; torch would only warn.
        return None
    os.environ[ALLOC_ENV] = "expandable_segments:True"
    return os.environ[ALLOC_ENV]


def resolve_device(cfg_device: str) -> torch.device:
    """'auto' -> cuda when present, else cpu; 'cuda' without a GPU is a config error."""
    if cfg_device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(cfg_device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"device {cfg_device!r} is not valid (use auto, cuda, cuda:N or cpu)") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {cfg_device!r} was asked for but CUDA is not available ({gpu_info()[1]})")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device {cfg_device!r} does not exist ({torch.cuda.device_count()} GPU(s) visible)")
    elif device.type != "cpu":
        raise ConfigError(f"device {cfg_device!r} is not supported (use auto, cuda, cuda:N or cpu)")
    return device


def resolve_dtype(cfg_dtype: str, device: torch.device) -> torch.dtype:
    """'auto' -> bfloat16 on CUDA (float16 where bf16 is unsupported), float32 on CPU."""
    if cfg_dtype == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    try:
        return DTYPES[cfg_dtype]
    except KeyError:
        raise ConfigError(f"dtype {cfg_dtype!r} is not supported (use auto, {', '.join(DTYPES)})") from None


def apply_memory_fraction(fraction: float, device: torch.device) -> None:
    """Cap this process at `fraction` of the GPU's memory; 0 means no cap, and CPU ignores it."""
    if not fraction or device.type != "cuda":
        return
    if not 0.0 < fraction <= 1.0:
        raise ConfigError(f"gpu_memory_fraction must be within 0..1, got {fraction}")
    # torch wants an index here; a bare "cuda" (device auto/cuda) means the current device.
    torch.cuda.set_per_process_memory_fraction(fraction, device_index(device))
    logger.info("GPU memory capped at %.0f%% of %s", fraction * 100, device)


def device_index(device: torch.device) -> int:
    """The CUDA ordinal of `device`: its own index, or the current device for a bare 'cuda'."""
    if device.type != "cuda":
        raise ValueError(f"{device} is not a CUDA device")
    return device.index if device.index is not None else torch.cuda.current_device()


def memory_budget(device: torch.device, fraction: float = 0.0) -> tuple[int, int]:
    """(bytes this process may use on `device`, bytes the device has in all); (0, 0) on the CPU.

    The budget is the card's total under the `gpu_memory_fraction` cap, less what other processes hold
    now (the driver's free memory plus what this process's allocator already has reserved).
    """
    if device.type != "cuda":
        return 0, 0
    index = device_index(device)
    free, total = torch.cuda.mem_get_info(index)
    ours = torch.cuda.memory_reserved(index)
    cap = int(total * fraction) if fraction else total
    return min(cap, free + ours), total


def is_oom(exc: BaseException) -> bool:
    """True for a CUDA out-of-memory error, also when wrapped by another exception."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, torch.cuda.OutOfMemoryError):
            return True
        if isinstance(current, RuntimeError) and "out of memory" in str(current).lower():
            return True
        current = current.__cause__ or current.__context__
    return False


def release_memory() -> None:
    """Free what Python still holds, then hand cached CUDA blocks back to the driver."""
    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.ipc_collect()


def gpu_info() -> tuple[list[dict[str, Any]], str]:
    """Every NVIDIA GPU as NVML sees it, and a problem string ('' when NVML answered)."""
    try:
        import pynvml
    except ImportError:
        return [], "nvidia-ml-py is not installed"
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return [], f"no NVIDIA driver (NVML: {exc})"
    except OSError as exc:  # the NVML library itself failed to load
        return [], f"no NVIDIA driver (NVML: {exc})"
    try:
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            gpus.append(
                {
                    "index": index,
                    "name": _text(pynvml.nvmlDeviceGetName(handle)),
                    "memory_total": int(memory.total),
                    "memory_used": int(memory.used),
                    "temperature_c": _optional(
                        lambda h=handle: pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU)
                    ),
                    "utilization_pct": _optional(lambda h=handle: pynvml.nvmlDeviceGetUtilizationRates(h).gpu),
                    "driver": driver,
                }
            )
        return gpus, ""
    except pynvml.NVMLError as exc:
        return [], f"NVML query failed: {exc}"
    finally:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass


def _text(value: str | bytes) -> str:
    # Older nvidia-ml-py releases return bytes.
    return value.decode() if isinstance(value, bytes) else value


def _optional(read: Any) -> int | None:
    """A reading some boards do not support (NVML_ERROR_NOT_SUPPORTED) becomes None."""
    import pynvml

    try:
        return int(read())
    except pynvml.NVMLError:
        return None
