"""Realistic low-resolution acquisitions for REMIx training and evaluation.

Paper 002 makes LR training data by pushing HR scans through the affine of a
real clinical scan (its orientation and voxel size) and back to MNI space.
No clinical database is available here, so the clinical acquisition is drawn
from a distribution instead (config ``degradation``):

* the voxel volume ``v`` (mm³) uniform in ``[bin - halfwidth, bin + halfwidth)``
  (at least ``min_voxel_volume``): a draw always lands in its expert's bin;
* the orientation: axial / coronal / sagittal / oblique with the configured
  probabilities (oblique = a base orientation tilted by up to ``max_tilt_deg``);
* in-plane spacing ``p`` uniform in ``in_plane_mm``, slice spacing ``v / p²``
  (isotropic when that would be thinner than ``p``), so 1x1x3, 0.9x0.9x5,
  1.2x1.2x4 mm all occur;
* with probability ``gap_probability`` a slice gap of a fraction
  ``gap_fraction`` of the slice spacing (the slices get thinner, the spacing
  and the voxel volume stay);
* with probability ``native_probability`` a *native* acquisition instead:
  the HR grid's own axes and in-plane voxels, thick slices (``v`` / in-plane
  area) along the HR axis nearest the drawn orientation's slice normal, at a
  random slice phase (:func:`native_slice_grid`).  That is what a scan gives
  at inference when its in-plane spacing is already the target spacing: the
  in-plane voxels reach the network uninterpolated, only the slice axis is
  interpolated (``info["native"]`` tells the two kinds apart);
* with probability ``isotropic_probability`` (beyond the paper; default 0:
  off) an *isotropic* acquisition instead: cubic voxels of edge ``v^(1/3)``
  in the drawn orientation (a 2x2x2 mm scan is 8 mm³: the thick-slice
  experts never see such a blur otherwise; ``info["isotropic"]``);
* a slice profile (``profile``: Gaussian of FWHM = slice thickness, or
  boxcar) along every coarse axis, and Rician noise of sigma =
  ``noise_fraction`` x the robust maximum of the HR image.

The LR image (on its own grid) is then interpolated back onto the HR grid
with cubic splines: that is the network's input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from SuperResMoELib.core.errors import ConfigError
from SuperResMoELib.simulation.acquisition import simulate_acquisition
from SuperResMoELib.simulation.clinical_grids import BASE_DIRECTIONS, RANDOM_ORIENTATIONS, random_clinical_grid
from SuperResMoELib.simulation.noise import rician_noise
from SuperResMoELib.simulation.profiles import PROFILES
from SuperResMoELib.core.geometry import resample
from SuperResMoELib.core.intensity import robust_max
from SuperResMoELib.core.volume import Grid, Volume

from ..config import FRACTION, NON_NEGATIVE, NOT_EMPTY, ORDERED, POSITIVE, Node, each, from_dict, one_of, setting


@dataclass(frozen=True)
class DegradationConfig(Node):
    """The acquisition distribution (see the module docstring); the config's
    ``degradation`` object (:func:`training.config.from_dict`)."""

    bins: tuple[int, ...] = setting((1, 2, 3, 4, 5, 6, 7), NOT_EMPTY, each(POSITIVE))
    bin_halfwidth: float = setting(0.5, POSITIVE)
    min_voxel_volume: float = setting(0.8, POSITIVE)
    orientations: tuple[tuple[str, float], ...] = setting(
        (("axial", 0.35), ("coronal", 0.2), ("sagittal", 0.2), ("oblique", 0.25)), NOT_EMPTY, each(NON_NEGATIVE))
    max_tilt_deg: float = setting(20.0, NON_NEGATIVE)
    in_plane_mm: tuple[float, float] = setting((0.8, 1.3), each(POSITIVE), ORDERED)
    gap_probability: float = setting(0.3, FRACTION)
    gap_fraction: tuple[float, float] = setting((0.1, 0.3), each(FRACTION), ORDERED)
    profile: str = setting("gaussian", one_of(PROFILES))
    noise_fraction: tuple[float, float] = setting((0.0, 0.02), each(NON_NEGATIVE), ORDERED)
    native_probability: float = setting(0.0, FRACTION)
    isotropic_probability: float = setting(0.0, FRACTION)

    def __post_init__(self) -> None:
        super().__post_init__()
        unknown = [n for n, _ in self.orientations if n not in RANDOM_ORIENTATIONS]
        if unknown:
            raise ConfigError(f"orientations: unknown orientation(s) {unknown}; choose from "
                              f"{', '.join(RANDOM_ORIENTATIONS)}")
        if sum(w for _, w in self.orientations) <= 0:
            raise ConfigError(f"orientations: the probabilities must not all be 0, got {dict(self.orientations)}")

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "degradation") -> "DegradationConfig":
        """From the config's ``degradation`` object (missing keys keep their defaults).

        Raises:
            ConfigError: an unknown key or a refused value.
        """
        return from_dict(cls, d, source)

    def voxel_volume_range(self, bin_mm3: int) -> tuple[float, float]:
        """``[low, high)`` of the voxel volumes drawn for ``bin_mm3``."""
        return max(self.min_voxel_volume, bin_mm3 - self.bin_halfwidth), bin_mm3 + self.bin_halfwidth


def native_slice_grid(grid: Grid, axis: int, thickness_mm: float, phase: float) -> Grid:
    """Slices of ``thickness_mm`` across ``grid``'s IJK ``axis``, on ``grid``'s
    own in-plane voxels, as a scanner writes them: the new grid's i, j are
    ``grid``'s other two axes (in order, same spacings and voxel centres) and
    its k is ``axis`` (slice spacing ``thickness_mm``).

    Slice ``m`` is centred at continuous ``grid`` index
    ``-0.5 + f/2 - phase·f + m·f`` along ``axis`` (``f`` = thickness in
    ``grid`` voxels, ``phase`` in ``[0, 1)``): the first slice starts
    ``phase`` of a slice before ``grid``'s edge and the slices cover its whole
    extent.
    """
    if not thickness_mm > 0 or not 0.0 <= phase < 1.0 or axis not in (0, 1, 2):
        raise ValueError(f"need axis 0..2, thickness > 0 and phase in [0, 1), got {axis}, {thickness_mm}, {phase}")
    f = float(thickness_mm) / float(grid.spacing[axis])
    a0, a1 = (a for a in range(3) if a != axis)
    n = grid.size_ijk
    new_to_old = np.zeros((4, 4))
    new_to_old[a0, 0] = new_to_old[a1, 1] = new_to_old[3, 3] = 1.0
    new_to_old[axis, 2] = f
    new_to_old[axis, 3] = -0.5 + f / 2.0 - phase * f
    slices = int(np.ceil((n[axis] + phase * f) / f - 1e-9))
    return Grid((slices, n[a1], n[a0]), grid.ijk_to_ras @ new_to_old)


def _native(grid: Grid, v: float, orientation: str, gap: float, rng: np.random.Generator) -> tuple[Grid, dict] | None:
    """A native acquisition of voxel volume ``v`` (see the module docstring),
    or None when ``v`` is below the HR voxel volume (no thick axis)."""
    base = orientation if orientation in BASE_DIRECTIONS else str(rng.choice(sorted(BASE_DIRECTIONS)))
    normal = BASE_DIRECTIONS[base][:, 2]  # RAS slice normal of the base orientation
    axis = int(np.argmax(np.abs(grid.direction.T @ normal)))
    in_plane = np.delete(grid.spacing, axis)
    t = v / float(np.prod(in_plane))
    if t <= grid.spacing[axis]:
        return None
    lr = native_slice_grid(grid, axis, t, float(rng.uniform()))
    return lr, {"orientation": base, "base_orientation": base, "in_plane_mm": float(np.mean(in_plane)),
                "thickness_mm": t, "slice_thickness_mm": t * (1.0 - gap), "gap_mm": t * gap,
                "voxel_volume_mm3": float(np.prod(lr.spacing)), "tilt_deg": 0.0, "native": True}


def draw_acquisition(grid: Grid, bin_mm3: int, cfg: DegradationConfig, rng: np.random.Generator) -> tuple[Grid, dict]:
    """A clinical-looking LR grid covering ``grid`` for the expert ``bin_mm3``.

    Returns:
        ``(lr_grid, info)`` as :func:`SuperResMoELib.simulation.clinical_grids.random_clinical_grid`,
        plus ``"bin"``, ``"noise_fraction"`` (what :func:`degrade` will add)
        and ``"native"`` (a :func:`native_slice_grid` acquisition).
    """
    lo, hi = cfg.voxel_volume_range(bin_mm3)
    v = float(rng.uniform(lo, hi))
    names = [n for n, _ in cfg.orientations]
    p = np.array([w for _, w in cfg.orientations], dtype=np.float64)
    orientation = names[int(rng.choice(len(names), p=p / p.sum()))]
    gap = float(rng.uniform(*cfg.gap_fraction)) if rng.uniform() < cfg.gap_probability else 0.0
    drawn = None
    isotropic = cfg.isotropic_probability > 0 and rng.uniform() < cfg.isotropic_probability
    if isotropic:
        edge = v ** (1.0 / 3.0)
        drawn = random_clinical_grid(grid, v, rng, orientation, cfg.max_tilt_deg, (edge, edge), gap)
        drawn[1]["native"] = False
    elif cfg.native_probability > 0 and rng.uniform() < cfg.native_probability:
        drawn = _native(grid, v, orientation, gap, rng)
    if drawn is None:
        drawn = random_clinical_grid(grid, v, rng, orientation, cfg.max_tilt_deg, cfg.in_plane_mm, gap)
        drawn[1]["native"] = False
    drawn[1]["isotropic"] = isotropic
    lr_grid, info = drawn
    info["bin"] = int(bin_mm3)
    info["noise_fraction"] = float(rng.uniform(*cfg.noise_fraction))
    return lr_grid, info


def degrade(hr: Volume, lr_grid: Grid, info: dict, cfg: DegradationConfig, rng: np.random.Generator,
            noise_scale: float | None = None) -> tuple[Volume, Volume]:
    """Acquire ``hr`` on ``lr_grid`` and interpolate it back.

    Args:
        hr: the HR image ``(K, J, I)``.
        lr_grid, info: from :func:`draw_acquisition`.
        noise_scale: intensity the noise fraction refers to (default: the
            robust maximum of ``hr``; pass the whole subject's value when
            ``hr`` is a crop).

    Returns:
        ``(lr, back)``: ``lr`` on ``lr_grid``; ``back`` = ``lr`` resampled
        (cubic) onto ``hr.grid``, float32.
    """
    lr = simulate_acquisition(hr, lr_grid, cfg.profile, thickness_mm=info["slice_thickness_mm"])
    scale = robust_max(np.asarray(hr.array)) if noise_scale is None else float(noise_scale)
    sigma = info["noise_fraction"] * scale
    if sigma > 0:
        lr = rician_noise(lr, sigma, rng)
    return lr, resample(lr, hr.grid, "cubic")


def describe(info: dict) -> str:
    """``"oblique (axial, 12 deg) 1.05x1.05x4.5 mm, gap 0.9 mm"``-style summary."""
    o = info["orientation"]
    if info.get("native"):
        o = f"native {o}"
    elif info.get("isotropic"):
        o = f"isotropic {o}"
    elif o == "oblique":
        o = f"oblique ({info['base_orientation']}, {info['tilt_deg']:.0f} deg)"
    p, t = info["in_plane_mm"], info["thickness_mm"]
    gap = f", gap {info['gap_mm']:.1f} mm" if info.get("gap_mm", 0) > 0 else ""
    return f"{o} {p:.2f}x{p:.2f}x{t:.2f} mm = {info['voxel_volume_mm3']:.2f} mm^3{gap}"
