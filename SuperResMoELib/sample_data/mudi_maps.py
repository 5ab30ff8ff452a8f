"""MUDI-like parameter maps: the shared 2.5 mm grid, tissue mixing into PD / T1 / T2* / ADC / FA, WM directions."""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy import ndimage

from SuperResMoELib.core.errors import SuperResMoEError
from SuperResMoELib.core.volume import Grid
from SuperResMoELib.sample_data.fields import _warp_field
from SuperResMoELib.sample_data.mudi_physics import TISSUE_PARAMETERS
from SuperResMoELib.sample_data.mudi_variation import MudiVariation, bias_field, draw_subject, mudi_variation
from SuperResMoELib.sample_data.seeds import _rng
from SuperResMoELib.sample_data.template import _template_arrays
from SuperResMoELib.sample_data.warp import _warp_region
from SuperResMoELib.simulation.block_mean import area_average

#: Isotropic HR voxel size (mm), as Super MUDI.
MUDI_SPACING_MM: float = 2.5
#: Margin (mm) around the template's brain bounding box on every side.
MUDI_MARGIN_MM: int = 5
#: Per-subject multiplicative jitter (standard deviation, clipped at 2 SD) of
#: every tissue parameter.
MUDI_PARAM_JITTER: float = 0.03
#: A 2.5 mm voxel is "brain" (signal and noise) when its tissue fraction
#: (GM + WM + CSF) reaches this; elsewhere everything is exactly 0, as in the
#: brain-masked Super MUDI data ("non-background" patches are then well defined).
MUDI_MASK_THRESHOLD: float = 0.5
#: Structure-tensor scales (in 2.5 mm voxels) for the WM principal direction.
MUDI_GRADIENT_SIGMA: float = 1.0
MUDI_TENSOR_SIGMA: float = 2.0


@functools.lru_cache(maxsize=4)
def _mudi_layout(margin_mm: float = MUDI_MARGIN_MM) -> tuple[Grid, tuple[int, int, int], tuple[int, int, int]]:
    """The shared 2.5 mm HR grid and its 1 mm source region (start, shape; KJI).

    The box covers the template brain mask's bounding box plus
    ``margin_mm`` (default :data:`MUDI_MARGIN_MM`; a
    :class:`~.mudi_variation.MudiVariation` may ask for more) on every side, rounded up to an even number of
    2.5 mm voxels per axis (so both Super MUDI tasks divide it) and centred.
    Its edges lie on 1 mm voxel edges, so 2 x 2 x 2 of its voxels are exactly
    5 x 5 x 5 template voxels.
    """
    t = _template_arrays()
    spacing = np.linalg.norm(t["affine"][:3, :3], axis=0)
    if not np.allclose(spacing, 1.0):  # pragma: no cover - nilearn invariant
        raise SuperResMoEError(f"expected a 1 mm template, got spacing {spacing}")
    mask = t["mask"] > 0
    factor = MUDI_SPACING_MM  # 1 mm voxels per HR voxel
    start, n_out = [], []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        nz = np.nonzero(mask.any(axis=other))[0]
        length = int(nz[-1]) - int(nz[0]) + 1 + 2 * int(margin_mm)
        n = math.ceil(length / factor)
        n += n % 2
        extra = round(n * factor) - length
        start.append(int(nz[0]) - int(margin_mm) - extra // 2)
        n_out.append(n)
    m = np.eye(4)
    m[:3, :3] = np.diag([factor] * 3)
    # HR voxel m centre = 1 mm index start - 0.5 + factor * (m + 0.5)  (i, j, k order)
    m[:3, 3] = np.array(start[::-1], dtype=np.float64) - 0.5 + 0.5 * factor
    grid = Grid(tuple(n_out), t["affine"] @ m)  # type: ignore[arg-type]
    region = tuple(round(n * factor) for n in n_out)
    return grid, tuple(start), region  # type: ignore[return-value]


def _principal_directions(wm: np.ndarray, grid: Grid, mask: np.ndarray) -> np.ndarray:
    """Unit WM fibre direction per voxel, ``(3, K, J, I)`` RAS (x, y, z) components.

    Heuristic: the direction along which the WM fraction varies least, i.e.
    the eigenvector of the smallest eigenvalue of the structure tensor
    (gradients at :data:`MUDI_GRADIENT_SIGMA`, tensor smoothed at
    :data:`MUDI_TENSOR_SIGMA` voxels).  Sign fixed so the largest component is
    positive.  Zero outside ``mask``.
    """
    sp = grid.spacing
    g_kji = [
        ndimage.gaussian_filter(wm, MUDI_GRADIENT_SIGMA, order=o, mode="nearest")
        for o in ((1, 0, 0), (0, 1, 0), (0, 0, 1))
    ]
    g = [g_kji[2] / sp[0], g_kji[1] / sp[1], g_kji[0] / sp[2]]  # physical d/di, d/dj, d/dk
    tensor = np.empty((int(mask.sum()), 3, 3))
    for a in range(3):
        for b in range(a, 3):
            t = ndimage.gaussian_filter(g[a] * g[b], MUDI_TENSOR_SIGMA, mode="nearest")[mask]
            tensor[:, a, b] = tensor[:, b, a] = t
    _, vecs = np.linalg.eigh(tensor)
    v = vecs[:, :, 0] @ grid.direction.T  # IJK-aligned physical -> RAS
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    big = np.argmax(np.abs(v), axis=1)
    v *= np.sign(v[np.arange(v.shape[0]), big])[:, None]
    out = np.zeros((3,) + mask.shape, dtype=np.float32)
    out[:, mask] = v.T
    return out


def subject_draw(index: int, seed: int, variation: MudiVariation):
    """The :class:`~.mudi_variation.SubjectDraw` of a non-standard subject (its own stream)."""
    return draw_subject(variation, _rng(seed, index, "mudi_variation"), TISSUE_PARAMETERS)


def _pose_displacement(draw, coarse: tuple[int, ...]) -> np.ndarray:
    """``(3, *coarse)`` displacement (KJI voxels) of the draw's affine pull-back
    ``x -> M (x - c) + c + t`` on the warp's coarse lattice (exact: it is linear)."""
    from SuperResMoELib.sample_data.fields import FIELD_CONTROL_SPACING_MM

    t = _template_arrays()
    centre = np.argwhere(t["mask"] > 0).mean(axis=0)
    x = np.indices(coarse, dtype=np.float64).reshape(3, -1) * FIELD_CONTROL_SPACING_MM
    moved = draw.affine @ (x - centre[:, None]) + centre[:, None] + draw.translation[:, None]
    return (moved - x).reshape((3, *coarse))


def _generate_mudi_maps(index: int, seed: int, variation: str | MudiVariation = "standard") -> dict[str, np.ndarray]:
    """The parameter maps of MUDI-like subject ``index`` (see
    :func:`~SuperResMoELib.sample_data.mudi.mudi_subject`): float32 KJI arrays
    ``"PD"``, ``"T1"``, ``"T2s"``, ``"ADC"``, ``"FA"`` on the
    :func:`_mudi_layout` grid and ``"V1"`` ``(3, K, J, I)``.

    ``variation`` (:mod:`~.mudi_variation`): ``standard`` is the generator as
    it always was; any other set adds its subject's pose to the warp, draws
    its tissue factors, mask threshold and bias (PD times the bias field)."""
    var = mudi_variation(variation)
    t = _template_arrays()
    grid, start, region = _mudi_layout(var.margin_mm)
    u = _warp_field(seed, index, "mudi_warp", t["t1"].shape)
    draw = None if var.is_standard else subject_draw(index, seed, var)
    if draw is not None:
        u = u + _pose_displacement(draw, u.shape[1:])
    fine = _warp_region([t["gm"], t["wm"], t["csf"]], [1, 1, 1], u, start, region)
    frac = np.stack([np.clip(area_average(f, grid.shape, MUDI_SPACING_MM), 0.0, 1.0) for f in fine])
    total = frac.sum(axis=0)
    mask = total >= (MUDI_MASK_THRESHOLD if draw is None else draw.mask_threshold)
    w = np.divide(frac, total, out=np.zeros_like(frac), where=total > 0)  # renormalised fractions
    names = ("gm", "wm", "csf")
    if draw is None:
        rng = _rng(seed, index, "mudi_params")
        params = {
            tissue: {
                p: v * (1.0 + MUDI_PARAM_JITTER * float(np.clip(rng.standard_normal(), -2.0, 2.0)))
                for p, v in TISSUE_PARAMETERS[tissue].items()
            }
            for tissue in names
        }
    else:
        params = {tissue: {p: v * draw.factors[tissue][p] for p, v in TISSUE_PARAMETERS[tissue].items()}
                  for tissue in names}
    pd = sum(frac[n] * params[t_]["PD"] for n, t_ in enumerate(names))
    if draw is not None:
        pd = pd * bias_field(draw.bias, grid.shape)
    r1 = sum(w[n] / params[t_]["T1"] for n, t_ in enumerate(names))
    r2 = sum(w[n] / params[t_]["T2s"] for n, t_ in enumerate(names))
    adc = sum(w[n] * params[t_]["ADC"] for n, t_ in enumerate(names))
    fa = np.clip(sum(w[n] * params[t_]["FA"] for n, t_ in enumerate(names)), 0.0, 0.95)
    maps = {
        "PD": np.where(mask, pd, 0.0),
        "T1": np.where(mask, np.divide(1.0, r1, out=np.zeros_like(r1), where=r1 > 0), 0.0),
        "T2s": np.where(mask, np.divide(1.0, r2, out=np.zeros_like(r2), where=r2 > 0), 0.0),
        "ADC": np.where(mask, adc, 0.0),
        "FA": np.where(mask, fa, 0.0),
    }
    out = {k: v.astype(np.float32) for k, v in maps.items()}
    out["V1"] = _principal_directions(w[1], grid, mask)
    return out
