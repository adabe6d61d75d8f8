"""File content hashes: model-bundle checksums, dataset manifests, and review keys all use this one."""

from __future__ import annotations

import hashlib
from pathlib import Path

_CHUNK_SIZE = 1 << 20


def sha256_file(path: str | Path) -> str:
    """Lower-case hex SHA-256 of a file, read in 1 MiB chunks (bundles and datasets can be large)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as stream:
        while chunk := stream.read(_CHUNK_SIZE):
            digest.update(chunk)
    return digest.hexdigest()
