"""How many CPU threads inference may use: affinity, physical cores, container quota, the user's override.

No torch here: the ONNX Runtime backend of the frozen app needs the same answer.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from busi_viewer.core.errors import DeviceError

THREADS_ENV = "BUSI_VIEWER_THREADS"
_SYS_CPU = Path("/sys/devices/system/cpu")
_CGROUP = Path("/sys/fs/cgroup")


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


def inference_threads(threads: int | None = None) -> int:
    """The intra-op thread count inference should use.

    Priority: ``threads``, then the ``BUSI_VIEWER_THREADS`` environment variable, then the number of usable
    physical cores (more threads than cores only adds contention for the shared floating-point units).
    Raises :class:`DeviceError` for a value below 1 or an environment value that is not a whole number.
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
    return threads
