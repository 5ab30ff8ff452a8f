"""File digests (torch-free): the one sha256 of a file that checkpoints and
provenance sidecars both record."""

from __future__ import annotations

import hashlib
import os

#: Bytes read at a time when hashing a file.
HASH_CHUNK_BYTES: int = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(HASH_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()
