"""The on-disk cache of generated sample data: folder, keys, load and save.

Warped T1 subjects and MUDI parameter maps are stored as ``.npz`` in
``cache_dir() / "sample_data" / SAMPLE_DATA_VERSION``; the file name carries a
hash of every generation constant (:func:`_generation_constants`), the seed and
the subject, so a change of a constant never returns stale data.  A failed or
unwritable cache only costs time (a warning is logged), never correctness.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from SuperResMoELib.io.atomic import atomic_path
from SuperResMoELib.io.paths import user_cache_dir
from SuperResMoELib.sample_data import fields, mudi_maps, mudi_physics, seeds, t1_variation, template

logger = logging.getLogger("superresmoe.sample_data")

#: Bump when anything about generation changes in a way the constants below
#: do not capture (it names the cache folder and enters every cache key).
SAMPLE_DATA_VERSION: str = "v1"


def cache_dir() -> Path:
    """The user cache folder (created on demand): ``$SUPERRESMOE_CACHE`` if set,
    else ``$XDG_CACHE_HOME/superresmoe``, else ``~/.cache/superresmoe``."""
    return user_cache_dir(create=True)


def _generation_constants() -> dict:
    """Everything that determines generated arrays (enters every cache key).

    The constants live in the modules that use them (warp fields, T1 bias and
    contrast, MUDI maps, tissue parameters, random streams); the keys and
    their order in each list are part of the cache key, so keep them.
    """
    return {
        "version": SAMPLE_DATA_VERSION,
        "nilearn": template._nilearn_version(),
        "field": [
            fields.FIELD_CONTROL_SPACING_MM,
            fields.WARP_SMOOTHNESS_MM,
            fields.WARP_MAX_MM,
            fields.WARP_SQUARING_STEPS,
        ],
        "bias": [
            t1_variation.BIAS_SMOOTHNESS_MM,
            t1_variation.BIAS_STRENGTH,
            t1_variation.CONTRAST_JITTER,
            t1_variation.GAIN_JITTER,
        ],
        "mudi": [
            mudi_maps.MUDI_SPACING_MM,
            mudi_maps.MUDI_MARGIN_MM,
            mudi_maps.MUDI_PARAM_JITTER,
            mudi_maps.MUDI_MASK_THRESHOLD,
            mudi_maps.MUDI_GRADIENT_SIGMA,
            mudi_maps.MUDI_TENSOR_SIGMA,
        ],
        "tissues": mudi_physics.TISSUE_PARAMETERS,
        "streams": seeds.RANDOM_STREAMS,
    }


def _cache_key(kind: str, subject: int, seed: int) -> str:
    """16 hex digits of the SHA-256 of the item and :func:`_generation_constants` (sorted JSON)."""
    text = json.dumps(
        {"kind": kind, "subject": subject, "seed": seed, **_generation_constants()}, sort_keys=True
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _cache_file(kind: str, subject: int, seed: int) -> tuple[Path | None, str]:
    """``(path, key)`` of an item's cache file (``path`` None: no usable cache folder)."""
    key = _cache_key(kind, subject, seed)
    try:
        folder = cache_dir() / "sample_data" / SAMPLE_DATA_VERSION
    except OSError as exc:
        logger.warning("sample data cache unavailable (%s); generating without caching", exc)
        return None, key
    return folder / f"{kind}_subject{subject}_seed{seed}_{key}.npz", key


def _load_cached(path: Path | None, key: str) -> dict[str, np.ndarray] | None:
    """The arrays of a cache file whose stored key is ``key``; None if missing, unreadable or stale."""
    if path is None or not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        logger.warning("ignoring unreadable sample data cache %s (%s)", path, exc)
        return None
    if str(arrays.pop("cache_key", "")) != key:
        logger.warning("ignoring sample data cache %s: key mismatch", path)
        return None
    return arrays


def _cached_grid_ok(cached: dict[str, np.ndarray], name: str) -> bool:
    """A cache entry holds array ``name`` (3D) and a valid 4x4 ``ijk_to_ras``."""
    m = cached.get("ijk_to_ras")
    a = cached.get(name)
    return (
        a is not None and a.ndim == 3 and m is not None and m.shape == (4, 4)
        and bool(np.all(np.isfinite(m))) and abs(np.linalg.det(m[:3, :3])) > 0
    )


def _save_cached(path: Path | None, key: str, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` and ``key`` atomically to ``path`` (a failure only logs a warning)."""
    if path is None:
        return
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, cache_key=np.array(key), **arrays)  # type: ignore[arg-type]  # numpy stubs: **arrays
    except OSError as exc:
        logger.warning("could not write sample data cache %s (%s)", path, exc)


def cached_arrays(
    kind: str,
    subject: int,
    seed: int,
    names: Sequence[str],
    generate: Callable[[], dict[str, np.ndarray]],
) -> tuple[dict[str, np.ndarray], str, Path | None]:
    """The arrays of one generated item, from the cache or from ``generate()``.

    Args:
        kind: ``"t1"`` or ``"mudi"`` (enters the key and the file name).
        subject, seed: the item (they enter the key and the file name).
        names: the arrays an entry must hold; ``names[0]`` must be a 3D
            ``(K, J, I)`` array on the grid given by ``ijk_to_ras``.
        generate: makes ``{name: array for name in names}`` plus the 4x4
            ``"ijk_to_ras"`` on a miss (a missing, unreadable, stale or
            incomplete entry); the result is then saved.

    Returns:
        ``(arrays, status, path)``: ``arrays`` holds ``names`` and
        ``"ijk_to_ras"``; ``status`` is ``"hit"`` or ``"miss"``; ``path`` the
        cache file (None when the cache folder is unavailable).  A generation
        is logged at INFO level with its duration.
    """
    t0 = time.perf_counter()
    path, key = _cache_file(kind, subject, seed)
    cached = _load_cached(path, key)
    if cached is not None and all(n in cached for n in names) and _cached_grid_ok(cached, names[0]):
        logger.debug("%s subject %d (seed %d) loaded from %s", kind.upper(), subject, seed, path)
        return {n: cached[n] for n in (*names, "ijk_to_ras")}, "hit", path
    arrays = generate()
    _save_cached(path, key, arrays)
    logger.info("generated %s subject %d (seed %d) in %.2f s (cache: %s)",
                kind.upper(), subject, seed, time.perf_counter() - t0, path)
    return arrays, "miss", path
