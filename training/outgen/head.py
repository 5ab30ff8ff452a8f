"""Out-of-generator heads: the MNI152 tissue fractions in another pose, scale
and shape (see :mod:`training.outgen`).

Geometry: a head's grid is axis-aligned in its own RAS space, ``spacing`` mm,
covering its brain plus a margin.  A subject-space point ``y`` (RAS mm) reads
the template at ``x = c + S^-1 R^T (y - c - t) + d(y)``: ``c`` the template
brain's centroid, ``R`` the rotation (about x, then y, then z), ``S`` the
scale, ``t`` the translation, ``d`` the shape change
``shape_mm * (u_y u_z, u_z u_x, u_x u_y)`` with ``u = (y - c) / 70 mm``
(smooth, zero at the centre).  Fractions are read with linear
interpolation, after a Gaussian blur of the voxel size when the grid is
coarser than 1 mm (a partial-volume point-spread function).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from SuperResMoELib.core.volume import Grid

#: Normalising length of the shape change (mm).
SHAPE_LENGTH_MM = 70.0
#: Margin around the brain on a head's grid (mm).
MARGIN_MM = 6.0
TISSUES: tuple[str, ...] = ("gm", "wm", "csf")


@dataclass(frozen=True)
class HeadPose:
    """Where a head sits relative to the template (module docstring)."""

    rotation_deg: tuple[float, float, float]
    scale: tuple[float, float, float]
    translation_mm: tuple[float, float, float]
    shape_mm: float

    def rotation(self) -> np.ndarray:
        """``(3, 3)`` rotation: about x, then y, then z."""
        ax, ay, az = (math.radians(a) for a in self.rotation_deg)
        rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
        ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
        rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
        return rz @ ry @ rx


#: The heads of the set: fixed data, far from the template's own pose.
HEADS: dict[str, HeadPose] = {
    "t1": HeadPose((9.0, -7.0, 12.0), (1.05, 0.93, 1.02), (3.0, -5.0, 4.0), 3.0),
    "qmri": HeadPose((-11.0, 8.0, -7.5), (0.94, 1.06, 0.97), (-4.0, 3.0, -2.0), 2.5),
    #: model selection only (training/outgen/qmri.py QMRI_SETS["validation"]), never reported as a test
    "qmri_validation": HeadPose((6.0, 10.0, 9.0), (1.04, 0.95, 1.05), (2.0, 4.0, -3.0), 2.0),
    #: model selection only (training/outgen/t1.py T1_SETS["validation"]), never reported as a test
    "t1_validation": HeadPose((-8.0, 11.0, -6.0), (0.96, 1.05, 0.95), (-2.0, 3.0, 5.0), 2.5),
}


@functools.lru_cache(maxsize=1)
def template_fractions() -> tuple[dict[str, np.ndarray], np.ndarray]:
    """GM, WM and CSF fractions ``(K, J, I)`` float32 of the MNI152 2009 maps in
    the nilearn wheel (GM + WM capped at 1; CSF = the rest of a brain
    envelope: GM + WM > 0.02, closed and filled) and the IJK->RAS matrix."""
    from nilearn import datasets
    from scipy import ndimage

    maps = {}
    affine = None
    for name, loader in (("gm", datasets.load_mni152_gm_template), ("wm", datasets.load_mni152_wm_template)):
        img = loader(resolution=1)
        maps[name] = np.clip(np.asarray(img.get_fdata(dtype=np.float32)).transpose(2, 1, 0), 0.0, 1.0)
        affine = np.asarray(img.affine, np.float64)
    total = maps["gm"] + maps["wm"]
    over = total > 1.0
    for name in ("gm", "wm"):
        maps[name][over] /= total[over]
    envelope = ndimage.binary_fill_holes(ndimage.binary_closing(total > 0.02, iterations=3))
    maps["csf"] = np.where(envelope, np.clip(1.0 - maps["gm"] - maps["wm"], 0.0, 1.0), 0.0).astype(np.float32)
    assert affine is not None
    return {k: np.ascontiguousarray(v, np.float32) for k, v in maps.items()}, affine


def _centre(maps: dict[str, np.ndarray], affine: np.ndarray) -> np.ndarray:
    brain = maps["gm"] + maps["wm"]
    idx = np.argwhere(brain > 0.5).mean(0)[::-1]  # KJI -> IJK
    return (affine @ np.append(idx, 1.0))[:3]


def head_grid(pose: HeadPose, spacing_mm: float) -> Grid:
    """The head's axis-aligned grid (module docstring), even sizes."""
    maps, affine = template_fractions()
    c = _centre(maps, affine)
    idx = np.argwhere(maps["gm"] + maps["wm"] + maps["csf"] > 0.05)[:, ::-1]
    lo, hi = idx.min(0), idx.max(0)
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])], float)
    ras = (affine[:3, :3] @ corners.T).T + affine[:3, 3]
    fwd = (pose.rotation() @ np.diag(pose.scale) @ (ras - c).T).T + c + np.asarray(pose.translation_mm)
    lo_mm = fwd.min(0) - MARGIN_MM - pose.shape_mm
    hi_mm = fwd.max(0) + MARGIN_MM + pose.shape_mm
    size = np.ceil((hi_mm - lo_mm) / spacing_mm).astype(int)
    size += size % 2
    return Grid.from_spacing(tuple(int(n) for n in size[::-1]), (spacing_mm,) * 3, tuple(lo_mm))


def template_points(pose: HeadPose, grid: Grid) -> np.ndarray:
    """``(3, K, J, I)`` template voxel indices (i, j, k) every voxel of ``grid`` reads."""
    maps, affine = template_fractions()
    c = _centre(maps, affine)
    k, j, i = (np.arange(n, dtype=np.float64) for n in grid.shape)
    kk, jj, ii = np.meshgrid(k, j, i, indexing="ij")
    ijk = np.stack([ii, jj, kk, np.ones_like(ii)]).reshape(4, -1)
    y = (grid.ijk_to_ras @ ijk)[:3]
    back = np.linalg.inv(pose.rotation() @ np.diag(pose.scale))
    x = back @ (y - c[:, None] - np.asarray(pose.translation_mm)[:, None]) + c[:, None]
    u = (y - c[:, None]) / SHAPE_LENGTH_MM
    x += pose.shape_mm * np.stack([u[1] * u[2], u[2] * u[0], u[0] * u[1]])
    t_ijk = np.linalg.inv(affine) @ np.vstack([x, np.ones((1, x.shape[1]))])
    return t_ijk[:3].reshape((3, *grid.shape))


def central_block(grid: Grid, block_mm: float) -> Grid:
    """The central ``block_mm`` cube (at most the grid) of an axis-aligned grid."""
    n = np.asarray(grid.shape)
    size = np.minimum(n, max(1, int(round(block_mm / float(grid.spacing[0])))))
    lo = (n - size) // 2
    origin = (grid.ijk_to_ras @ np.append(lo[::-1].astype(float), 1.0))[:3]
    return Grid.from_spacing(tuple(int(v) for v in size), tuple(grid.spacing), tuple(origin))


def head_fractions(name: str, spacing_mm: float, block_mm: float | None = None
                   ) -> tuple[dict[str, np.ndarray], Grid]:
    """Tissue fractions ``{"gm", "wm", "csf"}`` ``(K, J, I)`` float32 of head
    ``name`` (:data:`HEADS`) on its grid of ``spacing_mm`` (only its central
    ``block_mm`` cube when given: a small case)."""
    from scipy import ndimage

    pose = HEADS[name]
    maps, _ = template_fractions()
    grid = head_grid(pose, spacing_mm)
    if block_mm is not None:
        grid = central_block(grid, block_mm)
    pts = template_points(pose, grid)[::-1]  # (k, j, i) order for map_coordinates
    sigma = 0.0 if spacing_mm <= 1.0 else math.sqrt(spacing_mm**2 - 1.0) / 2.355
    out = {}
    for t in TISSUES:
        src = ndimage.gaussian_filter(maps[t], sigma) if sigma > 0 else maps[t]
        out[t] = np.clip(ndimage.map_coordinates(src, pts, order=1, mode="constant", cval=0.0), 0.0, 1.0
                         ).astype(np.float32)
    return out, grid
