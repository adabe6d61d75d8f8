"""Device choice and CPU thread count."""

from __future__ import annotations

import os

import pytest
import torch

from busi_viewer.core.errors import DeviceError
from busi_viewer.inference import cpu as cpu_module
from busi_viewer.inference import device as device_module
from busi_viewer.inference.cpu import THREADS_ENV, physical_core_count
from busi_viewer.inference.device import (
    configure_threads,
    describe_device,
    select_device,
)


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _accelerator_present() -> bool:
    return torch.cuda.is_available() or device_module._mps_available()


def test_cpu_can_always_be_forced():
    assert select_device("cpu") == torch.device("cpu")
    assert select_device(" CPU ") == torch.device("cpu")


@pytest.mark.skipif(_accelerator_present(), reason="this machine has an accelerator")
def test_default_is_cpu_without_accelerator():
    assert select_device() == torch.device("cpu")
    assert select_device("auto") == torch.device("cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_default_is_cuda_when_present():
    assert select_device().type == "cuda"
    assert describe_device(select_device("cuda")).startswith("CUDA: ")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_unavailable_cuda_is_a_clear_error():
    with pytest.raises(DeviceError, match="CUDA was requested but is not available"):
        select_device("cuda")
    with pytest.raises(DeviceError, match="CUDA was requested"):
        select_device("cuda:0")


def test_unknown_device_name():
    with pytest.raises(DeviceError, match="unknown device 'tpu'"):
        select_device("tpu")


def test_configure_threads_uses_physical_cores():
    threads = configure_threads()
    assert 1 <= threads <= (os.cpu_count() or 1)
    assert threads == physical_core_count()
    assert torch.get_num_threads() == threads


def test_thread_override(monkeypatch):
    monkeypatch.setenv(THREADS_ENV, "1")
    assert configure_threads() == 1 and torch.get_num_threads() == 1
    assert configure_threads(threads=2) == 2
    monkeypatch.setenv(THREADS_ENV, "many")
    with pytest.raises(DeviceError, match=f"{THREADS_ENV} must be a positive whole number"):
        configure_threads()
    monkeypatch.setenv(THREADS_ENV, "0")
    with pytest.raises(DeviceError, match="at least 1"):
        configure_threads()


def _fake_topology(root, cores_of_cpu: dict[int, tuple[int, int]]):
    for cpu, (package, core) in cores_of_cpu.items():
        topology = root / f"cpu{cpu}" / "topology"
        topology.mkdir(parents=True)
        (topology / "physical_package_id").write_text(f"{package}\n")
        (topology / "core_id").write_text(f"{core}\n")


def test_hyperthreads_count_once_and_affinity_is_respected(tmp_path, monkeypatch):
    # Two sockets, two cores each, two hyper-threads per core; core ids repeat across sockets.
    _fake_topology(tmp_path / "cpu", {0: (0, 0), 1: (0, 1), 2: (1, 0), 3: (1, 1),
                                      4: (0, 0), 5: (0, 1), 6: (1, 0), 7: (1, 1)})
    monkeypatch.setattr(cpu_module, "_SYS_CPU", tmp_path / "cpu")
    monkeypatch.setattr(cpu_module, "_CGROUP", tmp_path / "no-cgroup")
    monkeypatch.setattr(cpu_module, "_usable_cpus", lambda: set(range(8)))
    assert physical_core_count() == 4
    monkeypatch.setattr(cpu_module, "_usable_cpus", lambda: {0, 4, 5})
    assert physical_core_count() == 2

    (tmp_path / "cgroup").mkdir()
    (tmp_path / "cgroup" / "cpu.max").write_text("150000 100000\n")
    monkeypatch.setattr(cpu_module, "_CGROUP", tmp_path / "cgroup")
    monkeypatch.setattr(cpu_module, "_usable_cpus", lambda: set(range(8)))
    assert physical_core_count() == 2


def test_unreadable_topology_falls_back_to_usable_cpus(tmp_path, monkeypatch):
    monkeypatch.setattr(cpu_module, "_SYS_CPU", tmp_path / "absent")
    monkeypatch.setattr(cpu_module, "_CGROUP", tmp_path / "absent")
    monkeypatch.setattr(cpu_module, "_usable_cpus", lambda: {0, 1, 2})
    assert physical_core_count() == 3


def test_describe_cpu():
    configure_threads(threads=1)
    assert describe_device("cpu") == "CPU (1 thread)"
    configure_threads(threads=2)
    assert describe_device(torch.device("cpu")) == "CPU (2 threads)"
