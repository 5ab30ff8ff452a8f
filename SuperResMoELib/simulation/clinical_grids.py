"""Clinical acquisition grids: orientations, grids covering a volume, random clinical-looking LR grids.

Direction matrices have the unit i, j, k axes (RAS) as columns; the k axis is
the through-plane (slice) axis.  Spacings are listed in ``(i, j, k)`` order.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from SuperResMoELib.core.errors import InputError
from SuperResMoELib.core.volume import Grid
from SuperResMoELib.simulation._checks import _check_non_negative, _check_positive, _check_rng
from SuperResMoELib.simulation.tolerances import COVER_TOLERANCE, RELATIVE_TOLERANCE

#: Orientations accepted by :func:`random_clinical_grid`.
ORIENTATIONS: tuple[str, ...] = ("axial", "coronal", "sagittal", "oblique", "random")

#: Orientations a "random" draw chooses from (uniformly).
RANDOM_ORIENTATIONS: tuple[str, ...] = ("axial", "coronal", "sagittal", "oblique")

#: Base orientations an "oblique" draw tilts (uniformly chosen).
BASE_ORIENTATIONS: tuple[str, ...] = ("axial", "coronal", "sagittal")

#: Direction matrices (columns = unit i, j, k axes in RAS) of the base
#: orientations; the k column is the through-plane axis (S, A, R).
BASE_DIRECTIONS: dict[str, np.ndarray] = {
    "axial": np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]),  # i=R j=A k=S
    "coronal": np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]]),  # i=R j=S k=A
    "sagittal": np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]),  # i=A j=S k=R
}


def _rotation(axis: np.ndarray, angle_rad: float) -> np.ndarray:
    a = np.asarray(axis, dtype=np.float64)
    a = a / np.linalg.norm(a)
    k = np.array([[0.0, -a[2], a[1]], [a[2], 0.0, -a[0]], [-a[1], a[0], 0.0]])
    return np.eye(3) + math.sin(angle_rad) * k + (1.0 - math.cos(angle_rad)) * (k @ k)


def covering_grid(grid: Grid, direction: np.ndarray, spacing: Sequence[float]) -> Grid:
    """A grid with orthonormal ``direction`` (columns i, j, k) and IJK ``spacing``
    centred on, and covering, the RAS bounding box of ``grid``'s corners
    (``ceil(extent / spacing)`` voxels per axis, at least 1)."""
    d = np.asarray(direction, dtype=np.float64)
    sp = np.asarray(spacing, dtype=np.float64)
    bounds = grid.bounds()
    box = np.array([[x, y, z] for x in bounds[0] for y in bounds[1] for z in bounds[2]])
    centre = bounds.mean(axis=1)
    proj = (box - centre) @ d  # coordinates along the new axes
    extent = proj.max(axis=0) - proj.min(axis=0)
    n = np.maximum(1, np.ceil(extent / sp - COVER_TOLERANCE)).astype(int)
    m = np.eye(4)
    m[:3, :3] = d * sp
    m[:3, 3] = centre - d @ (0.5 * (n - 1) * sp)
    return Grid((int(n[2]), int(n[1]), int(n[0])), m)


def random_clinical_grid(
    grid: Grid,
    voxel_volume_mm3: float,
    rng: np.random.Generator,
    orientation: str = "random",
    max_tilt_deg: float = 15.0,
    in_plane_range_mm: tuple[float, float] = (0.8, 1.3),
    gap_fraction: float = 0.0,
) -> tuple[Grid, dict]:
    """Draw a clinical-looking low-resolution acquisition grid.

    * Orientation: ``"axial"``, ``"coronal"``, ``"sagittal"`` put the
      through-plane (k) axis along S, A, R respectively (in-plane axes:
      axial i=R j=A; coronal i=R j=S; sagittal i=A j=S — see
      :data:`BASE_DIRECTIONS`; the coronal frame has determinant -1).
      ``"oblique"`` picks one of those three uniformly and rotates it by a
      random rotation (axis uniform on the sphere, angle uniform in
      ``[0, max_tilt_deg]``).  ``"random"`` picks one of the four uniformly.
    * Spacing: in-plane ``p ~ U(in_plane_range_mm)``, thickness
      ``t = voxel_volume / p^2``.  If that gives ``t < p`` the draw is
      **clamped** to isotropic voxels ``p = t = voxel_volume^(1/3)`` (so the
      voxel volume is always exact and thickness >= in-plane).
    * Extent: the grid is centred on, and covers, the RAS bounding box of
      ``grid``'s corners (``ceil(extent / spacing)`` voxels per axis).
    * Slice gap: ``gap_fraction`` in ``[0, 1)`` of the slice spacing ``t`` is
      a gap between slices; the slices are ``(1 - gap_fraction) * t`` thick
      (the grid spacing, hence the voxel volume, is unchanged).  Pass
      ``info["slice_thickness_mm"]`` to :func:`simulate_acquisition`.

    Returns:
        ``(lr_grid, info)``: ``lr_grid`` with spacing ``(p, p, t)`` and its k
        axis through-plane; ``info`` = ``{"orientation": drawn orientation
        (never "random"), "base_orientation": axial/coronal/sagittal,
        "in_plane_mm": p, "thickness_mm": t (the slice spacing),
        "slice_thickness_mm": t minus the gap, "gap_mm": the gap,
        "voxel_volume_mm3": p*p*t, "tilt_deg": rotation angle (0 unless
        oblique)}``.

    Raises:
        InputError: unknown orientation, non-positive voxel volume or spacings,
        negative tilt, gap fraction outside ``[0, 1)``, bad ``rng``.
    """
    if not isinstance(grid, Grid):
        raise InputError(f"expected a Grid, got {type(grid).__name__}")
    volume_mm3 = _check_positive(voxel_volume_mm3, "voxel volume (mm^3)")
    _check_rng(rng)
    if orientation not in ORIENTATIONS:
        raise InputError(f"unknown orientation {orientation!r}; choose one of {list(ORIENTATIONS)}")
    tilt_max = _check_non_negative(max_tilt_deg, "maximum tilt (degrees)")
    try:
        lo, hi = (float(x) for x in in_plane_range_mm)
    except (TypeError, ValueError):
        raise InputError(f"in-plane range must be two numbers (mm), got {in_plane_range_mm!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo <= 0 or hi < lo:
        raise InputError(f"in-plane range must satisfy 0 < low <= high, got {in_plane_range_mm!r}")

    gap = _check_non_negative(gap_fraction, "gap fraction")
    if gap >= 1.0:
        raise InputError(f"gap fraction must be below 1 (a fraction of the slice spacing), got {gap_fraction!r}")

    chosen = orientation
    if chosen == "random":
        chosen = RANDOM_ORIENTATIONS[int(rng.integers(len(RANDOM_ORIENTATIONS)))]
    base = chosen
    if chosen == "oblique":
        base = BASE_ORIENTATIONS[int(rng.integers(len(BASE_ORIENTATIONS)))]
    p = float(rng.uniform(lo, hi))
    t = volume_mm3 / (p * p)
    if t < p:
        p = t = volume_mm3 ** (1.0 / 3.0)
    direction = BASE_DIRECTIONS[base].copy()
    tilt = 0.0
    if chosen == "oblique":
        rot_axis = rng.standard_normal(3)
        while np.linalg.norm(rot_axis) < RELATIVE_TOLERANCE:  # practically never
            rot_axis = rng.standard_normal(3)
        tilt = float(rng.uniform(0.0, tilt_max))
        direction = _rotation(rot_axis, math.radians(tilt)) @ direction
    lr = covering_grid(grid, direction, (p, p, t))
    info = {
        "orientation": chosen,
        "base_orientation": base,
        "in_plane_mm": p,
        "thickness_mm": t,
        "slice_thickness_mm": t * (1.0 - gap),
        "gap_mm": t * gap,
        "voxel_volume_mm3": p * p * t,
        "tilt_deg": tilt,
    }
    return lr, info
