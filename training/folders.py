"""Where a data set lives: the folder given, else the one its environment variable names."""

from __future__ import annotations

import os
from pathlib import Path


def given_or_env(root: Path | str | None, env: str, error: type[Exception], missing: str) -> Path:
    """``root`` when given (not None, not ""), else ``$env``; raises ``error(missing)`` when neither is set.
    The path is user-expanded, not checked: each data set checks its own layout."""
    value = str(root) if root is not None and str(root) != "" else os.environ.get(env, "")
    if not value:
        raise error(missing)
    return Path(value).expanduser()
