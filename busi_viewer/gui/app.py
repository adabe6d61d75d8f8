"""``busi-viewer``: the desktop review workstation.

The window itself is issue #4 and has not landed yet; until then this entry point says so plainly and points
at the headless tool that works today, instead of opening an empty window.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    print(
        "busi-viewer: the desktop viewer is not built yet (tracked as issue #4).\n"
        "Headless prediction with Grad-CAM works today: busi-predict FOLDER --heatmaps",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
