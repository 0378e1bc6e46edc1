"""Hardware reports: the CPU section on this machine, the GPU section through a stand-in NVML.

There is no GPU here, so the NVML bindings are checked against a small C
library with NVML's signatures and struct layouts (built with the system C
compiler; skipped without one): it exercises the real ctypes marshalling,
error strings and the "not supported" path of MIG slices.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from byockit.worker import hardware
from byockit.worker.hardware import GpuInfo, HardwareMonitor, cpu_info


def test_cpu_info_describes_this_machine() -> None:
    info = cpu_info()
    assert info.logical_cores == os.cpu_count()
    assert 1 <= info.usable_cores <= (os.cpu_count() or 1)
    assert info.memory_total is not None
    assert info.memory_total > 0
    assert info.model


def test_documents_follow_ai_runner_layout() -> None:
    monitor = HardwareMonitor()
    try:
        gpus = monitor.gpus()
        info = monitor.info("my.processor")
        stats = monitor.stats("my.processor")
    finally:
        monitor.close()
    assert info["pipeline"] == stats["pipeline"] == "byoc"
    assert info["model_id"] == stats["model_id"] == "my.processor"
    assert info["gpu_info"] == {
        str(gpu.index): {
            "id": gpu.id,
            "name": gpu.name,
            "memory_total": gpu.memory_total,
            "memory_free": gpu.memory_free,
            "major": gpu.major,
            "minor": gpu.minor,
        }
        for gpu in gpus
    }
    assert isinstance(stats["gpu_stats"], dict)
    assert stats["gpu_stats"].keys() == info["gpu_info"].keys()
    cpu_stats = stats["cpu_stats"]
    assert isinstance(cpu_stats, dict)
    assert cpu_stats.keys() == {
        "load_average",
        "memory_total",
        "memory_available",
        "process_rss",
        "process_cpu_seconds",
        "process_cpu_percent",
    }


def test_cpu_stats_measure_this_process() -> None:
    monitor = HardwareMonitor()
    before = monitor.cpu_stats()
    deadline = time.process_time() + 0.05
    while time.process_time() < deadline:  # burn a little CPU between two samples
        pass
    after = monitor.cpu_stats()
    assert after.process_cpu_seconds > before.process_cpu_seconds
    assert after.process_cpu_percent > 0
    assert after.process_rss is not None
    assert after.process_rss > 0
    assert after.memory_available is not None
    assert after.memory_total is not None
    assert 0 < after.memory_available <= after.memory_total


_FAKE_NVML = r"""
#include <stdio.h>
#include <stddef.h>
typedef struct { unsigned long long total, free, used; } nvmlMemory_t;
typedef struct { unsigned int gpu, memory; } nvmlUtilization_t;
int init_result = 0;
int shutdowns = 0;
int nvmlInit_v2(void) { return init_result; }
int nvmlShutdown(void) { shutdowns++; return 0; }
const char *nvmlErrorString(int result) {
    return result == 3 ? "Not Supported" : "Driver/library version mismatch";
}
int nvmlDeviceGetCount_v2(unsigned int *count) { *count = 2; return 0; }
int nvmlDeviceGetHandleByIndex_v2(unsigned int index, void **handle) {
    *handle = (void *)(size_t)(index + 1); return 0;
}
int nvmlDeviceGetName(void *handle, char *name, unsigned int length) {
    snprintf(name, length, "Fake GPU %zu", (size_t)handle); return 0;
}
int nvmlDeviceGetUUID(void *handle, char *uuid, unsigned int length) {
    snprintf(uuid, length, "GPU-0000-%zu", (size_t)handle); return 0;
}
int nvmlDeviceGetMemoryInfo(void *handle, nvmlMemory_t *memory) {
    memory->total = 150000000000ULL * (size_t)handle;
    memory->free = 140000000000ULL;
    memory->used = memory->total - memory->free;
    return 0;
}
int nvmlDeviceGetCudaComputeCapability(void *handle, int *major, int *minor) {
    *major = 9; *minor = (int)(size_t)handle - 1; return 0;
}
int nvmlDeviceGetUtilizationRates(void *handle, nvmlUtilization_t *rates) {
    if ((size_t)handle == 2) return 3;  /* a MIG slice: NVML_ERROR_NOT_SUPPORTED */
    rates->gpu = 57; rates->memory = 12; return 0;
}
"""


@pytest.fixture(scope="module")
def fake_nvml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler to build the stand-in NVML library")
    folder = tmp_path_factory.mktemp("nvml")
    source = folder / "fake_nvml.c"
    source.write_text(_FAKE_NVML)
    library = folder / "libfake-nvml.so"
    subprocess.run(
        [compiler, "-shared", "-fPIC", "-o", str(library), str(source)], check=True, timeout=60
    )
    return library


def _global(library: Path, name: str) -> ctypes.c_int:
    return ctypes.c_int.in_dll(ctypes.CDLL(str(library)), name)


def test_gpus_read_through_nvml(fake_nvml: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hardware, "NVML_LIBRARY", str(fake_nvml))
    _global(fake_nvml, "init_result").value = 0
    shutdowns = _global(fake_nvml, "shutdowns")
    before = shutdowns.value
    monitor = HardwareMonitor()
    assert monitor.gpus() == [
        GpuInfo(0, "GPU-0000-1", "Fake GPU 1", 150_000_000_000, 140_000_000_000, 9, 0, 57, 12),
        GpuInfo(1, "GPU-0000-2", "Fake GPU 2", 300_000_000_000, 140_000_000_000, 9, 1, None, None),
    ]
    stats = monitor.stats("m")["gpu_stats"]
    assert isinstance(stats, dict)
    assert stats["1"] == {
        "id": "GPU-0000-2",
        "name": "Fake GPU 2",
        "memory_total": 300_000_000_000,
        "memory_free": 140_000_000_000,
        "utilization_compute": None,
        "utilization_memory": None,
    }
    monitor.close()
    assert shutdowns.value == before + 1


def test_a_driver_that_fails_to_initialise_leaves_cpu_only(
    fake_nvml: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(hardware, "NVML_LIBRARY", str(fake_nvml))
    _global(fake_nvml, "init_result").value = 18  # NVML_ERROR_LIB_RM_VERSION_MISMATCH
    try:
        with caplog.at_level(logging.INFO, logger="byockit.worker.hardware"):
            info = HardwareMonitor().info("m")
    finally:
        _global(fake_nvml, "init_result").value = 0
    assert info["gpu_info"] == {}
    assert "nvmlInit_v2: Driver/library version mismatch" in caplog.text


def test_no_nvml_library_means_no_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hardware, "NVML_LIBRARY", "libbyockit-no-such-library.so.1")
    assert HardwareMonitor().gpus() == []
