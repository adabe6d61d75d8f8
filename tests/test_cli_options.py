"""Every tool takes --device and --backend the same way and its help reads as plain text."""

from __future__ import annotations

import argparse

import pytest

from busi_viewer.cli.bench import main as bench_main
from busi_viewer.cli.options import device_name
from busi_viewer.cli.predict import build_parser as predict_parser
from busi_viewer.gui.app import _parser as viewer_parser
from training.cli import build_parser as train_parser


@pytest.mark.parametrize("text", ["auto", "cpu", "CUDA", "cuda:1", "mps"])
def test_every_device_spelling_is_accepted(text):
    assert device_name(text) == text.lower()


@pytest.mark.parametrize("text", ["gpu", "cuda:", "cuda:x", ""])
def test_unknown_devices_are_refused_with_the_choices(text):
    with pytest.raises(argparse.ArgumentTypeError, match="use auto, cpu, cuda, cuda:N or mps"):
        device_name(text)


def test_the_tools_share_the_device_option():
    for parser in (predict_parser(), viewer_parser()):
        assert parser.parse_args(["x", "--device", "auto"]).device == "auto"
        assert parser.parse_args(["x"]).device == "auto"
        assert "ONNX Runtime on the CPU and PyTorch on a GPU" in " ".join(parser.format_help().split())


def test_help_texts_have_no_markup(capsys):
    for parser in (predict_parser(), viewer_parser(), train_parser()):
        assert "``" not in parser.format_help()
    with pytest.raises(SystemExit):
        bench_main(["--help"])
    assert "``" not in capsys.readouterr().out
