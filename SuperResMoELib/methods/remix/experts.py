"""REMIx's seven resolution experts and the rule that picks one: the input's
voxel volume ``v = s_i * s_j * s_k`` (mm³) rounded to the nearest whole mm³
(halves up) and clamped to 1..7; the user may force another."""

from __future__ import annotations

import math

import numpy as np

from SuperResMoELib.core.errors import InputError

#: Expert bins: voxel volumes (mm³) 1..7.
EXPERTS: tuple[int, ...] = tuple(range(1, 8))


def expert_for_voxel_volume(voxel_volume_mm3: float) -> int:
    """The expert of a voxel volume: rounded to the nearest mm³ (halves up),
    clamped to 1..7."""
    v = float(voxel_volume_mm3)
    if not math.isfinite(v) or v <= 0:
        raise InputError(f"voxel volume must be a positive number of mm^3, got {voxel_volume_mm3!r}")
    return int(min(max(math.floor(v + 0.5), EXPERTS[0]), EXPERTS[-1]))


def choose_expert(spacing: np.ndarray | tuple[float, float, float], forced: int | None = None) -> tuple[int, dict]:
    """``(expert, why)`` for an input of IJK ``spacing`` (mm).

    ``why`` holds the voxel volume, the automatic choice, whether the user
    forced the expert, and a one-line ``reason`` for the log and the GUI.

    Raises:
        InputError: a forced expert outside 1..7.
    """
    sp = np.asarray(spacing, dtype=np.float64)
    v = float(np.prod(sp))
    auto = expert_for_voxel_volume(v)
    dims = "x".join(f"{s:.2f}" for s in sp)
    rule = f"input voxel {dims} mm = {v:.2f} mm^3"
    if forced is None:
        reason = (f"{rule} -> expert {auto} (nearest whole mm^3, clamped to "
                  f"{EXPERTS[0]}..{EXPERTS[-1]})")
        return auto, {"expert": auto, "automatic": auto, "forced": False, "voxel_volume_mm3": v, "reason": reason}
    try:
        e = int(forced)
    except (TypeError, ValueError):
        e = -1
    if e not in EXPERTS or (isinstance(forced, float) and forced != e):
        raise InputError(f"REMIx expert must be one of {list(EXPERTS)} (mm^3 bins), got {forced!r}")
    reason = f"expert {e} chosen by the user ({rule} would pick expert {auto})"
    return e, {"expert": e, "automatic": auto, "forced": True, "voxel_volume_mm3": v, "reason": reason}
