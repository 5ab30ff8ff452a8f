"""The domain of a checkpoint's training inputs, and warnings for inputs far outside it.

A manifest's ``domain`` (written at export, see :func:`describe_domain`)::

    {"spacing_mm": {"min": [i, j, k], "max": [i, j, k]},   # input voxel sizes seen in training
     "intensity": {"robust_max": [lo, hi]},                 # per-frame 99.5th percentile, user units
     "dims": [4],                                           # input dimensionalities trained on
     "note": "..."}

Every key is optional (a method that normalises intensities per image leaves
``intensity`` out).  :func:`domain_warnings` compares an input with it and
returns one sentence per problem; the methods put them into
``info["warnings"]`` and the log, the CLI prints them, the Slicer panel shows
them in its results box.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from SuperResMoELib.core.intensity import robust_max
from SuperResMoELib.core.volume import Volume, format_ijk

if TYPE_CHECKING:
    from SuperResMoELib.checkpoints.manifest import Manifest

log = logging.getLogger("superresmoe")

#: An input voxel size more than this factor below the smallest (or above the
#: largest) training spacing of an axis is "far outside".
SPACING_RATIO: float = 2.0
#: A robust maximum more than this factor outside the training range is "far outside".
INTENSITY_RATIO: float = 10.0


def describe_domain(spacings_ijk: Sequence[Sequence[float]], robust_maxima: Sequence[float] | None,
                    dims: Sequence[int], note: str = "") -> dict[str, Any]:
    """The ``domain`` entry of a manifest from what the training saw.

    Args:
        spacings_ijk: input voxel sizes (mm, IJK) of the training inputs.
        robust_maxima: per-frame 99.5th percentiles of the training inputs in
            user units (``None`` when the method normalises each image).
        dims: input dimensionalities (3, 4).
        note: free text (e.g. what the data were).
    """
    sp = np.asarray(spacings_ijk, dtype=np.float64).reshape(-1, 3)
    out: dict[str, Any] = {"spacing_mm": {"min": sp.min(0).round(4).tolist(), "max": sp.max(0).round(4).tolist()},
                           "dims": sorted({int(d) for d in dims})}
    if robust_maxima is not None:
        rm = np.asarray(robust_maxima, dtype=np.float64)
        out["intensity"] = {"robust_max": [float(rm.min()), float(rm.max())]}
    if note:
        out["note"] = note
    return out


def domain_warnings(manifest: Manifest, volume: Volume, frames: np.ndarray) -> list[str]:
    """Sentences naming how ``volume`` lies far outside the manifest's domain
    (empty when it has none or the input fits).  Each is also logged.

    Args:
        frames: ``(N, K, J, I)`` voxels of the input in user units.
    """
    domain = manifest.domain or {}
    found: list[str] = []
    what = f"the {manifest.method} checkpoint ({manifest.task})"
    sp = domain.get("spacing_mm")
    if sp:
        lo, hi = np.asarray(sp["min"], float), np.asarray(sp["max"], float)
        s = volume.grid.spacing
        if np.any(s < lo / SPACING_RATIO) or np.any(s > hi * SPACING_RATIO):
            found.append(f"input voxels of {format_ijk(s)} mm (i, j, k) are far outside the "
                         f"{format_ijk(lo)} to {format_ijk(hi)} mm that {what} was trained on")
    inten = domain.get("intensity", {}).get("robust_max")
    if inten:
        sample = frames[:: max(1, len(frames) // 8)]
        peaks = [robust_max(f) for f in sample]
        peak = float(np.median(peaks)) if peaks else 0.0
        lo_i, hi_i = float(inten[0]), float(inten[1])
        if peak < lo_i / INTENSITY_RATIO or peak > hi_i * INTENSITY_RATIO:
            found.append(f"input intensities (99.5th percentile {peak:.4g}) are far outside the "
                         f"{lo_i:.4g} to {hi_i:.4g} that {what} was trained on; it keeps the user's units, "
                         "so rescale the image to the training units")
    dims = domain.get("dims")
    ndim = 4 if volume.is_4d else 3
    if dims and ndim not in dims:
        kinds = " or ".join(f"{d}D" for d in dims)
        found.append(f"the input is {ndim}D but {what} was trained on {kinds} inputs")
    for sentence in found:
        log.warning("%s", sentence)
    return found
