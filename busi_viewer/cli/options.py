"""The options every tool shares (busi-viewer, busi-predict, busi-bench), spelled and explained one way."""

from __future__ import annotations

import argparse
import re

__all__ = ["add_runtime_options", "device_name"]

_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
DEVICE_HELP = "auto (default): CUDA if available, else Apple MPS, else the CPU; or cpu, cuda, cuda:N, mps"
BACKEND_HELP = ("inference runtime: auto (default, or $BUSI_VIEWER_BACKEND): ONNX Runtime on the CPU and PyTorch on "
                "a GPU, ONNX Runtime whenever PyTorch is not installed; torch; onnx")


def device_name(text: str) -> str:
    """argparse type of --device: "auto", "cpu", "mps", "cuda" or "cuda:N", case-insensitive."""
    name = text.strip().lower()
    if not _DEVICE.fullmatch(name):
        raise argparse.ArgumentTypeError(f"unknown device {text!r}; use auto, cpu, cuda, cuda:N or mps")
    return name


def add_runtime_options(parser: argparse.ArgumentParser, backend: bool = True) -> None:
    """--device (and --backend) as every tool takes them."""
    parser.add_argument("--device", type=device_name, default="auto", metavar="DEVICE", help=DEVICE_HELP)
    if backend:
        parser.add_argument("--backend", choices=("auto", "torch", "onnx"), default=None, help=BACKEND_HELP)
