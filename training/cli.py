"""``busi-train``: audit, fit, evaluate and export (issue #3; not built yet)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    print("busi-train: the training pipeline is not built yet (tracked as issue #3).", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
