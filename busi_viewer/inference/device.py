"""Where inference runs: the torch device, and how many CPU threads it may use."""

from __future__ import annotations

import torch

from busi_viewer.core.errors import DeviceError
from busi_viewer.inference.cpu import inference_threads

__all__ = ["DeviceError", "configure_threads", "describe_device", "select_device"]


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


def configure_threads(threads: int | None = None) -> int:
    """Set torch's intra-op thread count to :func:`~busi_viewer.inference.cpu.inference_threads` and return it."""
    threads = inference_threads(threads)
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
