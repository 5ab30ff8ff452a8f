"""Arrays built once and kept on disk (patch libraries, labels, routing).

Files are ``.npz`` written atomically; an unreadable file is rebuilt, never
trusted half-written.  Cache names come from :func:`cache_key`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Callable

import numpy as np

from SuperResMoELib.io.atomic import atomic_path

log = logging.getLogger("superresmoe.training")


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Write ``arrays`` to ``path`` atomically (the folder is created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def cached_arrays(path: Path, build: Callable[[], dict[str, np.ndarray]], what: str) -> dict[str, np.ndarray]:
    """The arrays stored at ``path``, or ``build()`` saved there first.

    Args:
        path: the ``.npz`` cache file.
        build: makes the arrays when the cache is missing or unreadable.
        what: a short description for the log.
    """
    path = Path(path)
    if path.exists():
        try:
            with np.load(path) as z:
                return {name: z[name] for name in z.files}
        except (OSError, ValueError, KeyError) as exc:
            log.warning("%s cache %s unreadable (%s): rebuilding", what, path, exc)
    t0 = time.perf_counter()
    arrays = build()
    save_npz(path, **arrays)
    log.info("built %s in %.1f s (%s)", what, time.perf_counter() - t0, path)
    return arrays


def without_later_defaults(fields: dict, later: dict[str, object]) -> dict:
    """``fields`` (a config's ``asdict``) without the options added after its
    caches were first built, where they hold their defaults, so those caches
    keep their keys.  ``later`` maps a field name, or a dotted path into a
    nested config (``"degradation.isotropic_probability"``), to its default.
    ``fields`` is changed in place and returned."""
    for path, default in later.items():
        *parents, name = path.split(".")
        node = fields
        for p in parents:
            node = node[p]
        if node.get(name) == default:
            del node[name]
    return fields


def cache_key(fields: dict, default=str) -> str:
    """16 hex digits of the SHA-256 of ``fields`` as sorted JSON (``default``
    turns what JSON cannot hold into text or lists): a cache name that changes
    with anything the cached data depend on."""
    text = json.dumps(fields, sort_keys=True, default=default)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
