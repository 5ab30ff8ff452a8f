"""The "3T-like" degradation of MoEDiff-SR training pairs (paper 003 maps a
3T scan resampled onto the 7T grid to the 7T scan; neither can be had here).

From an HR block on the 1 mm sample grid (config ``degradation``):

1. **gradient nonlinearity** (the paper's ``g``): the anatomy is pulled back
   through a smooth warp whose largest component, over the whole scan's field
   of view, is drawn in ``warp_max_mm``
   (:func:`SuperResMoELib.simulation.distortion.nonlinearity_displacement`);
2. **bias field** (``b``): multiplied by ``exp(f)`` with ``max |f|`` drawn in
   ``bias_strength`` (:func:`SuperResMoELib.simulation.noise.bias_field_map`);
3. **acquisition** on the scan's own axes: with probability
   ``thick_probability`` a clinical thick-slice case (slice spacing drawn in
   ``thick_mm`` along a random axis, in-plane factor in
   ``thick_in_plane_factor``), else the 3T-like case (every axis coarser by
   one factor drawn in ``factor``: 2.1 is the paper's 1.5 mm -> 0.7 mm); a
   slice profile (``profile``) of the LR spacing along every coarse axis;
4. **Rician noise** of sigma = ``noise_fraction`` x the subject's robust maximum;
5. cubic interpolation back onto the HR grid: the network's input.

The corrections a scanner would give are returned with it: ``log_bias`` =
``-f`` (the log of the correction factor) and the displacement correction
``-d`` (mm along the array axes, to first order the inverse warp).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from SuperResMoELib.core.geometry import resample, scaled_grid
from SuperResMoELib.core.volume import Grid, Volume
from SuperResMoELib.simulation.acquisition import simulate_acquisition
from SuperResMoELib.simulation.distortion import nonlinearity_displacement, warp_array
from SuperResMoELib.simulation.noise import bias_field_map, rician_noise
from SuperResMoELib.simulation.profiles import PROFILES

from ..config import FRACTION, NON_NEGATIVE, ORDERED, POSITIVE, Node, each, one_of, setting


@dataclass(frozen=True)
class MoEDiffDegradation(Node):
    """The drawn degradations (see the module docstring); ranges are ``[low, high]``."""

    factor: tuple[float, float] = setting((1.8, 2.4), each(POSITIVE), ORDERED)
    thick_probability: float = setting(0.3, FRACTION)
    thick_mm: tuple[float, float] = setting((3.0, 5.0), each(POSITIVE), ORDERED)
    thick_in_plane_factor: tuple[float, float] = setting((1.0, 1.5), each(POSITIVE), ORDERED)
    profile: str = setting("gaussian", one_of(PROFILES))
    noise_fraction: tuple[float, float] = setting((0.005, 0.03), each(NON_NEGATIVE), ORDERED)
    bias_strength: tuple[float, float] = setting((0.0, 0.3), each(NON_NEGATIVE), ORDERED)
    bias_smoothness_mm: float = setting(60.0, POSITIVE)
    warp_max_mm: tuple[float, float] = setting((0.0, 1.5), each(NON_NEGATIVE), ORDERED)


def draw_case(cfg: MoEDiffDegradation, rng: np.random.Generator) -> dict[str, Any]:
    """One acquisition: ``{"kind", "factors_ijk", "noise_fraction", "bias_strength", "warp_max_mm"}``."""
    if rng.uniform() < cfg.thick_probability:
        f = np.full(3, float(rng.uniform(*cfg.thick_in_plane_factor)))
        axis = int(rng.integers(0, 3))
        f[axis] = float(rng.uniform(*cfg.thick_mm))  # the HR grid is 1 mm: a factor is a spacing
        kind = "thick"
    else:
        f = np.full(3, float(rng.uniform(*cfg.factor)))
        kind = "3T-like"
    return {"kind": kind, "factors_ijk": [float(v) for v in f],
            "noise_fraction": float(rng.uniform(*cfg.noise_fraction)),
            "bias_strength": float(rng.uniform(*cfg.bias_strength)),
            "warp_max_mm": float(rng.uniform(*cfg.warp_max_mm))}


def acquire(block: Volume, fov: Grid, case: dict[str, Any], cfg: MoEDiffDegradation,
            rng: np.random.Generator, noise_scale: float) -> tuple[Volume, np.ndarray, np.ndarray]:
    """Steps 1-4 of the module docstring: ``(lr on its own grid, log bias correction
    (K, J, I), warp correction (3, K, J, I) in mm)``, the corrections on ``block.grid``."""
    grid = block.grid
    hr = np.asarray(block.array, np.float32)
    disp = nonlinearity_displacement(grid, case["warp_max_mm"], rng, fov)
    warped = warp_array(hr, disp, grid.spacing[::-1]) if case["warp_max_mm"] > 0 else hr
    bias = bias_field_map(grid, case["bias_strength"], rng, cfg.bias_smoothness_mm)
    distorted = Volume.on_grid(warped * bias, grid)
    lr_grid = scaled_grid(grid, [1.0 / f for f in case["factors_ijk"]])
    lr = simulate_acquisition(distorted, lr_grid, cfg.profile)
    sigma = case["noise_fraction"] * float(noise_scale)
    if sigma > 0:
        lr = rician_noise(lr, sigma, rng)
    return lr, -np.log(bias).astype(np.float32), -disp


def degrade_block(block: Volume, fov: Grid, case: dict[str, Any], cfg: MoEDiffDegradation,
                  rng: np.random.Generator, noise_scale: float) -> dict[str, np.ndarray]:
    """Degrade one HR block (module docstring): :func:`acquire`, then cubic back onto ``block.grid``.

    Args:
        block: ``(K, J, I)`` HR voxels on their grid (a crop of a scan).
        fov: the whole scan's grid (normalises the warp).
        case: from :func:`draw_case`.
        noise_scale: the intensity the noise fraction refers to (the subject's robust maximum).

    Returns:
        ``{"lr": (K, J, I), "log_bias": (K, J, I), "warp": (3, K, J, I)}`` float32 on
        ``block.grid``: the input, and the corrections (log factor; mm along k, j, i).
    """
    lr, log_bias, warp = acquire(block, fov, case, cfg, rng, noise_scale)
    back = np.asarray(resample(lr, block.grid, "cubic").array, np.float32)
    return {"lr": back, "log_bias": log_bias, "warp": warp}
