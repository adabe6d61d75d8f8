"""Where inference runs: the torch device, and how many CPU threads it may use."""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from busi_viewer.core.errors import BusiViewerError

THREADS_ENV = "BUSI_VIEWER_THREADS"
_SYS_CPU = Path("/sys/devices/system/cpu")
_CGROUP = Path("/sys/fs/cgroup")


class DeviceError(BusiViewerError):
    """The requested compute device does not exist on this machine, or a thread setting is invalid."""


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def select_device(preference: str | None = None) -> torch.device:
    """The torch device to run on.

    ``preference``: None or "auto" picks CUDA, else Apple MPS, else CPU; "cpu" forces the CPU; "cuda",
    "cuda:N" or "mps" demand that device and raise :class:`DeviceError` when it is not available.
    """
    choice = (preference or "auto").strip().lower()
    if choice == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if choice == "cpu":
        return torch.device("cpu")
    if choice == "mps":
        if not _mps_available():
            raise DeviceError("Apple MPS was requested but is not available on this machine; use 'cpu' or 'auto'")
        return torch.device("mps")
    if choice == "cuda" or choice.startswith("cuda:"):
        try:
            device = torch.device(choice)
        except RuntimeError as exc:
            raise DeviceError(f"invalid CUDA device {preference!r}: {exc}") from exc
        if not torch.cuda.is_available():
            raise DeviceError(
                "CUDA was requested but is not available (no NVIDIA GPU, no driver, or a CPU-only PyTorch build); "
                "use 'cpu' or 'auto'"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(f"{choice} was requested but only {torch.cuda.device_count()} CUDA device(s) exist")
        return device
    raise DeviceError(f"unknown device {preference!r}; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")


def _usable_cpus() -> set[int] | None:
    if hasattr(os, "sched_getaffinity"):
        return set(os.sched_getaffinity(0))
    return None


def _physical_cores(cpus: set[int]) -> int | None:
    """Distinct (package, core) pairs among ``cpus``: hyper-threads of one core share its execution units."""
    cores = set()
    try:
        for cpu in cpus:
            topology = _SYS_CPU / f"cpu{cpu}" / "topology"
            package = (topology / "physical_package_id").read_text().strip()
            core = (topology / "core_id").read_text().strip()
            cores.add((package, core))
    except OSError:
        return None
    return len(cores) or None


def _cgroup_cpu_limit() -> int | None:
    """The container's CPU quota rounded up (cgroup v2, then v1), or None when unlimited or unknown."""
    try:
        quota, period = (_CGROUP / "cpu.max").read_text().split()[:2]
        if quota != "max":
            return max(1, math.ceil(int(quota) / int(period)))
        return None
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((_CGROUP / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((_CGROUP / "cpu" / "cpu.cfs_period_us").read_text())
        return max(1, math.ceil(quota_us / period_us)) if quota_us > 0 and period_us > 0 else None
    except (OSError, ValueError):
        return None


def physical_core_count() -> int:
    """Physical CPU cores this process may use (affinity and container quota respected); at least 1."""
    cpus = _usable_cpus()
    count = _physical_cores(cpus) if cpus else None
    if count is None:
        count = len(cpus) if cpus else (os.cpu_count() or 1)
    limit = _cgroup_cpu_limit()
    return max(1, min(count, limit) if limit else count)


def configure_threads(threads: int | None = None) -> int:
    """Set torch's intra-op thread count and return it.

    Priority: ``threads``, then the ``BUSI_VIEWER_THREADS`` environment variable, then the number of usable
    physical cores (more threads than cores only adds contention for the shared floating-point units).
    """
    if threads is None:
        value = os.environ.get(THREADS_ENV, "").strip()
        if value:
            try:
                threads = int(value)
            except ValueError:
                raise DeviceError(f"{THREADS_ENV} must be a positive whole number, got {value!r}") from None
    if threads is None:
        threads = physical_core_count()
    if threads < 1:
        raise DeviceError(f"the thread count must be at least 1, got {threads}")
    torch.set_num_threads(threads)
    return threads


def describe_device(device: torch.device | str) -> str:
    """A one-line description for the status bar, e.g. "CUDA: NVIDIA H100 80GB HBM3 (79 GiB)", "CPU (2 threads)"."""
    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        return f"CUDA: {props.name} ({props.total_memory / 2**30:.0f} GiB)"
    if device.type == "mps":
        return "Apple MPS (Metal)"
    if device.type == "cpu":
        threads = torch.get_num_threads()
        return f"CPU ({threads} thread{'' if threads == 1 else 's'})"
    return str(device)
