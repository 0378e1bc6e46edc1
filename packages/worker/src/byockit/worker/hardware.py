"""What ``/hardware/info`` and ``/hardware/stats`` report: GPUs when there are any, CPU always.

GPUs are read through NVML, the NVIDIA driver's own monitoring library (what
``nvidia-smi`` itself uses), loaded with :mod:`ctypes`: no subprocess, no
extra Python package, no torch, and no CUDA context is created on any GPU.
Containers get the library from the NVIDIA container toolkit; where it is
missing (no GPU, or a container without the ``utility`` capability) the GPU
maps are empty and the CPU section still answers.

The documents follow ai-runner's (and pytrickle's) layout, so tools that read
those read byockit workers too: ``pipeline``, ``model_id`` and ``gpu_info`` /
``gpu_stats`` keyed by device index as text; byockit adds ``cpu_info`` /
``cpu_stats``. Sizes are bytes, utilisations percent.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import threading
import time
from pathlib import Path
from typing import Final

import attrs

from byockit.protocol.models import JSONObject

logger = logging.getLogger(__name__)

PIPELINE: Final = "byoc"
"""The ``pipeline`` field of the hardware and version documents."""

NVML_LIBRARY: Final = "libnvidia-ml.so.1"
"""The NVML shared library, as the NVIDIA driver installs it."""

_NVML_SUCCESS: Final = 0
_NAME_BUFFER: Final = 96
"""Bytes for a device name or UUID (NVML's own maximum is 96 with the terminator)."""


class _Memory(ctypes.Structure):
    _fields_ = (
        ("total", ctypes.c_ulonglong),
        ("free", ctypes.c_ulonglong),
        ("used", ctypes.c_ulonglong),
    )


class _Utilization(ctypes.Structure):
    _fields_ = (("gpu", ctypes.c_uint), ("memory", ctypes.c_uint))


@attrs.frozen
class GpuInfo:
    """One GPU. Utilisation is ``None`` where the driver does not measure it (MIG slices)."""

    index: int
    id: str
    name: str
    memory_total: int
    memory_free: int
    major: int
    minor: int
    utilization_compute: int | None
    utilization_memory: int | None


class NvmlError(Exception):
    """An NVML call failed; the message is the driver's own words."""


class _Nvml:
    """The few NVML calls the hardware endpoints need, on an initialised library."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self._lib = lib
        lib.nvmlErrorString.restype = ctypes.c_char_p

    @classmethod
    def open(cls, library: str) -> _Nvml | None:
        """Load and initialise NVML, or ``None`` (logged) where there is no usable driver."""
        try:
            nvml = cls(ctypes.CDLL(library))
            nvml._call("nvmlInit_v2")
        except (OSError, AttributeError, NvmlError) as exc:
            logger.info("no NVIDIA GPU information (%s): reporting CPU only", exc)
            return None
        return nvml

    def close(self) -> None:
        try:
            self._call("nvmlShutdown")
        except NvmlError as exc:
            logger.warning("NVML shutdown failed: %s", exc)

    def gpus(self) -> list[GpuInfo]:
        count = ctypes.c_uint()
        self._call("nvmlDeviceGetCount_v2", ctypes.byref(count))
        return [self._gpu(index) for index in range(count.value)]

    def _gpu(self, index: int) -> GpuInfo:
        handle = ctypes.c_void_p()
        self._call("nvmlDeviceGetHandleByIndex_v2", ctypes.c_uint(index), ctypes.byref(handle))
        memory = _Memory()
        self._call("nvmlDeviceGetMemoryInfo", handle, ctypes.byref(memory))
        major, minor = ctypes.c_int(), ctypes.c_int()
        self._call(
            "nvmlDeviceGetCudaComputeCapability", handle, ctypes.byref(major), ctypes.byref(minor)
        )
        rates = _Utilization()
        utilization: _Utilization | None = rates
        try:
            self._call("nvmlDeviceGetUtilizationRates", handle, ctypes.byref(rates))
        except NvmlError:
            utilization = None  # not supported on this device (e.g. a MIG slice)
        return GpuInfo(
            index=index,
            id=self._text("nvmlDeviceGetUUID", handle),
            name=self._text("nvmlDeviceGetName", handle),
            memory_total=memory.total,
            memory_free=memory.free,
            major=major.value,
            minor=minor.value,
            utilization_compute=utilization.gpu if utilization else None,
            utilization_memory=utilization.memory if utilization else None,
        )

    def _text(self, function: str, handle: ctypes.c_void_p) -> str:
        buffer = ctypes.create_string_buffer(_NAME_BUFFER)
        self._call(function, handle, buffer, ctypes.c_uint(_NAME_BUFFER))
        return buffer.value.decode("utf-8", "replace")

    def _call(self, function: str, *args: object) -> None:
        result = getattr(self._lib, function)(*args)
        if result != _NVML_SUCCESS:
            message = self._lib.nvmlErrorString(result)
            words = message.decode("utf-8", "replace") if message else f"error {result}"
            raise NvmlError(f"{function}: {words}")


@attrs.frozen
class CpuInfo:
    """The machine's processors and memory, as far as the OS tells."""

    model: str
    logical_cores: int | None
    usable_cores: int
    memory_total: int | None


@attrs.frozen
class CpuStats:
    """Load now. ``process_cpu_percent`` is this process's CPU use since the previous sample,
    in percent of one core (so up to 100 x the usable cores)."""

    load_average: tuple[float, float, float] | None
    memory_total: int | None
    memory_available: int | None
    process_rss: int | None
    process_cpu_seconds: float
    process_cpu_percent: float


class HardwareMonitor:
    """Answers the hardware endpoints. Opens NVML on first use and keeps it until :meth:`close`.

    Its methods block (briefly: NVML calls and reads of ``/proc``), so the
    server calls them in a worker thread; a lock keeps concurrent calls apart.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._nvml: _Nvml | None = None
        self._nvml_opened = False
        self._last_sample = _cpu_sample()

    def gpus(self) -> list[GpuInfo]:
        """Every GPU NVML sees; empty without a driver, or when NVML fails (logged)."""
        with self._lock:
            if not self._nvml_opened:
                self._nvml = _Nvml.open(NVML_LIBRARY)
                self._nvml_opened = True
            if self._nvml is None:
                return []
            try:
                return self._nvml.gpus()
            except NvmlError as exc:
                logger.warning("could not read GPU information: %s", exc)
                return []

    def cpu_stats(self) -> CpuStats:
        """CPU and memory load, and this process's CPU use since the previous call."""
        with self._lock:
            previous, self._last_sample = self._last_sample, _cpu_sample()
        now_wall, now_cpu = self._last_sample
        elapsed = now_wall - previous[0]
        meminfo = _meminfo()
        return CpuStats(
            load_average=os.getloadavg() if hasattr(os, "getloadavg") else None,
            memory_total=meminfo.get("MemTotal") or _sysconf_memory("SC_PHYS_PAGES"),
            memory_available=meminfo.get("MemAvailable") or _sysconf_memory("SC_AVPHYS_PAGES"),
            process_rss=_process_rss(),
            process_cpu_seconds=round(now_cpu, 3),
            process_cpu_percent=round(100 * (now_cpu - previous[1]) / elapsed, 1)
            if elapsed > 0
            else 0.0,
        )

    def info(self, model_id: str) -> JSONObject:
        """The ``/hardware/info`` document."""
        gpu_info: JSONObject = {
            str(gpu.index): {
                "id": gpu.id,
                "name": gpu.name,
                "memory_total": gpu.memory_total,
                "memory_free": gpu.memory_free,
                "major": gpu.major,
                "minor": gpu.minor,
            }
            for gpu in self.gpus()
        }
        cpu = cpu_info()
        return {
            "pipeline": PIPELINE,
            "model_id": model_id,
            "gpu_info": gpu_info,
            "cpu_info": {
                "model": cpu.model,
                "logical_cores": cpu.logical_cores,
                "usable_cores": cpu.usable_cores,
                "memory_total": cpu.memory_total,
            },
        }

    def stats(self, model_id: str) -> JSONObject:
        """The ``/hardware/stats`` document."""
        gpu_stats: JSONObject = {
            str(gpu.index): {
                "id": gpu.id,
                "name": gpu.name,
                "memory_total": gpu.memory_total,
                "memory_free": gpu.memory_free,
                "utilization_compute": gpu.utilization_compute,
                "utilization_memory": gpu.utilization_memory,
            }
            for gpu in self.gpus()
        }
        cpu = self.cpu_stats()
        return {
            "pipeline": PIPELINE,
            "model_id": model_id,
            "gpu_stats": gpu_stats,
            "cpu_stats": {
                "load_average": list(cpu.load_average) if cpu.load_average else None,
                "memory_total": cpu.memory_total,
                "memory_available": cpu.memory_available,
                "process_rss": cpu.process_rss,
                "process_cpu_seconds": cpu.process_cpu_seconds,
                "process_cpu_percent": cpu.process_cpu_percent,
            },
        }

    def close(self) -> None:
        """Release NVML (a later query opens it again)."""
        with self._lock:
            if self._nvml is not None:
                self._nvml.close()
            self._nvml = None
            self._nvml_opened = False


def cpu_info() -> CpuInfo:
    """The CPU model, core counts and total memory."""
    return CpuInfo(
        model=_cpu_model(),
        logical_cores=os.cpu_count(),
        usable_cores=len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count() or 1,
        memory_total=_meminfo().get("MemTotal") or _sysconf_memory("SC_PHYS_PAGES"),
    )


def _cpu_sample() -> tuple[float, float]:
    """(monotonic seconds, CPU seconds used by this process in every thread)."""
    times = os.times()
    return time.monotonic(), times.user + times.system


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _meminfo() -> dict[str, int]:
    """``/proc/meminfo`` in bytes (empty where there is none)."""
    values: dict[str, int] = {}
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return values
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        fields = rest.split()
        if fields and fields[0].isdigit():
            scale = 1024 if fields[1:] == ["kB"] else 1
            values[key] = int(fields[0]) * scale
    return values


def _sysconf_memory(pages_name: str) -> int | None:
    try:
        return os.sysconf(pages_name) * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _process_rss() -> int | None:
    """This process's resident memory now (Linux), ``None`` where the OS does not say."""
    try:
        resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return resident_pages * os.sysconf("SC_PAGE_SIZE")
