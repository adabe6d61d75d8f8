"""Atomic file writes: readers see the old file or the complete new one, never half of it."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once at import: os.umask is process-wide, so never toggle it while threads write


@contextlib.contextmanager
def atomic_write(path: Path | str, mode: str = "w", *, overwrite: bool = True, **open_kwargs) -> Iterator[IO]:
    """Open a temporary sibling of ``path`` for writing; on success fsync and rename it over ``path``.

    On any exception the temporary file is removed and ``path`` is untouched. With ``overwrite=False`` an
    existing ``path`` raises FileExistsError before anything is written.
    """
    path = Path(path)
    if not overwrite and path.exists():
        raise FileExistsError(f"{path} already exists")
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    temp = Path(temp_name)
    try:
        os.chmod(temp, 0o666 & ~_UMASK)  # mkstemp's 0600 would hide results from colleagues
        with os.fdopen(fd, mode, **open_kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise

