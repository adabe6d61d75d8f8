"""File content hashes: model-bundle checksums, dataset manifests, and review keys all use this one."""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from pathlib import Path

_CHUNK_SIZE = 1 << 20


def sha256_file(path: str | Path) -> str:
    """Lower-case hex SHA-256 of a file, read in 1 MiB chunks (bundles and datasets can be large)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as stream:
        while chunk := stream.read(_CHUNK_SIZE):
            digest.update(chunk)
    return digest.hexdigest()


_CACHE_ITEMS = 16_384  # ~200 bytes each
_cache: OrderedDict[tuple[str, int, int], str] = OrderedDict()
_cache_lock = threading.Lock()


def file_identity(path: str | Path) -> tuple[str, int, int] | None:
    """(path, mtime_ns, size): changes whenever the file is rewritten; None when it cannot be stat'ed."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return str(path), st.st_mtime_ns, st.st_size


def sha256_file_cached(path: str | Path) -> str:
    """:func:`sha256_file`, remembered per :func:`file_identity` (thread-safe, bounded): the viewer's folder
    indexer and its inference thread ask for the same files, and a file is read for its hash only once."""
    key = file_identity(path)
    if key is not None:
        with _cache_lock:
            digest = _cache.get(key)
            if digest is not None:
                _cache.move_to_end(key)
                return digest
    digest = sha256_file(path)
    if key is not None:
        with _cache_lock:
            _cache[key] = digest
            while len(_cache) > _CACHE_ITEMS:
                _cache.popitem(last=False)
    return digest
