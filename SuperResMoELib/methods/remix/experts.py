"""REMIx's seven resolution experts and the rule that picks one: the input's
voxel volume ``v = s_i * s_j * s_k`` (mm³) rounded to the nearest whole mm³
(halves up) and clamped to 1..7; the user may force another.

Beyond the paper, one measured exception (:func:`single_network_reason`):
experts trained on thick-slice acquisitions only (their manifest's training
degradation has no isotropic draws) lose to the single network on isotropic
low-resolution inputs, so ``remix`` runs the single network there unless the
user forces an expert (the measurement: ``docs/results/remix_isotropic``).

Also beyond the paper, an anisotropy-aware router (training config
``router: "anisotropy"``): the checkpoint then holds an eighth network, the
*isotropic expert* (:data:`ISOTROPIC_EXPERT`), trained on isotropic
acquisitions only, while the seven volume experts train on thick-slice
acquisitions only; an isotropic input (:func:`is_isotropic`) of at least
:data:`ISOTROPIC_EXPERT_FROM_MM3` mm³ goes to it, every other input to the
expert of its voxel volume."""

from __future__ import annotations

import math

import numpy as np

from SuperResMoELib.core.errors import InputError

#: Expert bins: voxel volumes (mm³) 1..7.
EXPERTS: tuple[int, ...] = tuple(range(1, 8))
#: An input is isotropic when its largest voxel edge is at most this times its smallest.
ISOTROPIC_RATIO: float = 1.25
#: Isotropic inputs of at least this voxel volume (mm³; the lower edge of expert
#: 4's bin) go to the single network when the experts never saw isotropic blur.
#: Measured on the bundled checkpoints (``docs/results/remix_isotropic``): PSNR,
#: isotropic acquisitions of the held-out sample subjects, 2 per bin; the experts
#: lead by 1.5 / 0.6 / 0.4 dB at 1-3 mm³, the single network by 0.3-1.5 dB at 4-8 mm³.
ISOTROPIC_SINGLE_FROM_MM3: float = 3.5
#: The isotropic expert's name in ``info["expert"]`` (its tensors: ``expert_iso.<param>``).
ISOTROPIC_EXPERT: str = "iso"
#: Isotropic inputs of at least this voxel volume (mm³, the lower edge of expert
#: 2's bin) go to the isotropic expert of an anisotropy-router checkpoint; it
#: trains on isotropic acquisitions of the bins from 2 mm³ on (below, the voxel
#: edge is within 15 % of the 1 mm target: expert 1's case).
ISOTROPIC_EXPERT_FROM_MM3: float = 1.5


def expert_key(expert: int | str) -> str:
    """The network's key in the experts checkpoint: ``expert<v>`` or ``expert_iso``."""
    return f"expert_{expert}" if expert == ISOTROPIC_EXPERT else f"expert{int(expert)}"


def is_isotropic(spacing: np.ndarray | tuple[float, float, float]) -> bool:
    """Whether the largest IJK voxel edge is at most :data:`ISOTROPIC_RATIO` times the smallest."""
    sp = np.asarray(spacing, dtype=np.float64)
    return bool(float(sp.max()) <= ISOTROPIC_RATIO * float(sp.min()))


def expert_for_voxel_volume(voxel_volume_mm3: float) -> int:
    """The expert of a voxel volume: rounded to the nearest mm³ (halves up),
    clamped to 1..7."""
    v = float(voxel_volume_mm3)
    if not math.isfinite(v) or v <= 0:
        raise InputError(f"voxel volume must be a positive number of mm^3, got {voxel_volume_mm3!r}")
    return int(min(max(math.floor(v + 0.5), EXPERTS[0]), EXPERTS[-1]))


def choose_expert(spacing: np.ndarray | tuple[float, float, float], forced: int | None = None,
                  isotropic_expert: bool = False) -> tuple[int | str, dict]:
    """``(expert, why)`` for an input of IJK ``spacing`` (mm): 1..7, or
    :data:`ISOTROPIC_EXPERT` when ``isotropic_expert`` (the checkpoint has
    one and the anisotropy-aware router is on) and the input is isotropic of
    at least :data:`ISOTROPIC_EXPERT_FROM_MM3` mm³.

    ``why`` holds the voxel volume, the automatic choice, whether the user
    forced the expert, and a one-line ``reason`` for the log and the GUI.

    Raises:
        InputError: a forced expert outside 1..7 (the isotropic expert is
            chosen by the router only).
    """
    sp = np.asarray(spacing, dtype=np.float64)
    v = float(np.prod(sp))
    auto: int | str = expert_for_voxel_volume(v)
    dims = "x".join(f"{s:.2f}" for s in sp)
    rule = f"input voxel {dims} mm = {v:.2f} mm^3"
    if isotropic_expert and is_isotropic(sp) and v >= ISOTROPIC_EXPERT_FROM_MM3:
        auto = ISOTROPIC_EXPERT
    if forced is None:
        if auto == ISOTROPIC_EXPERT:
            reason = (f"{rule}, isotropic (largest edge at most {ISOTROPIC_RATIO:g} x the smallest) -> the "
                      f"isotropic expert (anisotropy-aware router; from {ISOTROPIC_EXPERT_FROM_MM3:g} mm^3)")
        else:
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


def trained_on_isotropic(training_data: object) -> bool | None:
    """Whether a REMIx checkpoint's training degradation drew isotropic
    acquisitions (``degradation.isotropic_probability > 0``); ``None`` when the
    manifest does not record its degradation (a checkpoint built elsewhere)."""
    if not isinstance(training_data, dict) or not isinstance(training_data.get("degradation"), dict):
        return None
    p = training_data["degradation"].get("isotropic_probability", 0.0)
    return isinstance(p, (int, float)) and p > 0


def single_network_reason(spacing: np.ndarray | tuple[float, float, float], training_data: object) -> str | None:
    """Why the automatic choice runs the single network instead of an expert,
    or ``None`` to keep the voxel-volume rule.

    The single network runs for an isotropic input (largest IJK ``spacing``
    edge at most :data:`ISOTROPIC_RATIO` times the smallest) of at least
    :data:`ISOTROPIC_SINGLE_FROM_MM3` mm³ when the experts' manifest
    ``training_data`` says they were trained without isotropic acquisitions.
    """
    sp = np.asarray(spacing, dtype=np.float64)
    v = float(np.prod(sp))
    if not is_isotropic(sp) or v < ISOTROPIC_SINGLE_FROM_MM3:
        return None
    if trained_on_isotropic(training_data) is not False:
        return None
    dims = "x".join(f"{s:.2f}" for s in sp)
    return (f"isotropic input voxel {dims} mm = {v:.2f} mm^3: the single network, measured better than expert "
            f"{expert_for_voxel_volume(v)} on isotropic inputs of at least {ISOTROPIC_SINGLE_FROM_MM3:g} mm^3 "
            "(these experts were trained on thick-slice acquisitions only; force an expert with --expert)")
