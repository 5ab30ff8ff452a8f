"""The 3T-like degradation of MoEDiff-SR training: the gradient-nonlinearity
warp, the bias field, the drawn acquisitions and the corrections returned."""

from __future__ import annotations

import numpy as np
import pytest

from SuperResMoELib.core.errors import InputError
from SuperResMoELib.core.geometry import sub_volume
from SuperResMoELib.core.volume import Grid, Volume
from SuperResMoELib.simulation.distortion import FOV_LATTICE, MONOMIALS, nonlinearity_displacement, warp_array
from training.moediff.degradation import MoEDiffDegradation, degrade_block, draw_case


def test_displacement_reaches_its_bound_on_the_field_of_view(grid_of) -> None:
    fov = grid_of((FOV_LATTICE, FOV_LATTICE, FOV_LATTICE), "oblique")
    d = nonlinearity_displacement(fov, 1.5, np.random.default_rng(0))
    assert d.shape == (3,) + fov.shape and d.dtype == np.float32
    assert len(MONOMIALS) == 6 + 10  # the degree-2 and degree-3 monomials of three coordinates
    # over a grid spanning the field of view, the largest component stays close to (at most) the bound
    assert 0.5 < float(np.abs(d).max()) <= 1.5 * 1.01
    assert np.all(nonlinearity_displacement(fov, 0.0, np.random.default_rng(0)) == 0)
    with pytest.raises(InputError):
        nonlinearity_displacement(fov, -1.0, np.random.default_rng(0))


def test_a_crop_sees_the_scans_field(grid_of) -> None:
    """The displacement of a crop, normalised on the whole scan, is the scan's field cut out."""
    scan = Grid((20, 22, 24), np.diag([1.0, 1.0, 1.0, 1.0]))
    whole = nonlinearity_displacement(scan, 2.0, np.random.default_rng(5))
    vol = Volume(np.zeros(scan.shape, np.float32), scan.ijk_to_ras)
    crop = sub_volume(vol, (4, 5, 6), (12, 15, 18)).grid
    part = nonlinearity_displacement(crop, 2.0, np.random.default_rng(5), fov=scan)
    np.testing.assert_allclose(part, whole[:, 4:12, 5:15, 6:18], rtol=1e-5, atol=1e-6)


def test_warp_pulls_back_and_zero_is_identity() -> None:
    rng = np.random.default_rng(1)
    arr = rng.normal(size=(8, 9, 10)).astype(np.float32)
    zero = np.zeros((3,) + arr.shape, np.float32)
    np.testing.assert_allclose(warp_array(arr, zero, np.ones(3)), arr, atol=1e-5)
    ramp = np.broadcast_to(np.arange(10, dtype=np.float32), arr.shape).copy()  # value = i index
    shift = zero.copy()
    shift[2] = 2.0  # 2 mm along i at 0.5 mm voxels: 4 voxels
    out = warp_array(ramp, shift, np.array([1.0, 1.0, 0.5]))
    np.testing.assert_allclose(out[..., :5], ramp[..., 4:9], atol=1e-4)  # sampled at x + d
    with pytest.raises(ValueError):
        warp_array(arr, zero[:2], np.ones(3))


def test_cases_and_degraded_blocks() -> None:
    cfg = MoEDiffDegradation(thick_probability=0.5)
    rng = np.random.default_rng(0)
    cases = [draw_case(cfg, rng) for _ in range(200)]
    kinds = {c["kind"] for c in cases}
    assert kinds == {"thick", "3T-like"}
    for c in cases:
        f = np.asarray(c["factors_ijk"])
        if c["kind"] == "3T-like":
            assert np.all(f == f[0]) and cfg.factor[0] <= f[0] <= cfg.factor[1]
        else:
            assert sorted(f)[-1] >= cfg.thick_mm[0] and sorted(f)[0] <= cfg.thick_in_plane_factor[1]
    k, j, i = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in (24, 26, 28)), indexing="ij")
    block = Volume((100 + 10 * np.sin(i / 3) * np.cos(j / 4) + k).astype(np.float32), np.eye(4))
    case = {"kind": "3T-like", "factors_ijk": [2.0, 2.0, 2.0], "noise_fraction": 0.0, "bias_strength": 0.2,
            "warp_max_mm": 1.0}
    out = degrade_block(block, block.grid, case, cfg, np.random.default_rng(2), 110.0)
    assert out["lr"].shape == block.spatial_shape and out["warp"].shape == (3,) + block.spatial_shape
    bias = np.exp(-out["log_bias"])  # the correction is the inverse of the applied field
    assert 0.2 * 0.999 <= float(np.abs(np.log(bias)).max()) <= 0.2 * 1.001
    assert 0.3 < float(np.abs(out["warp"]).max()) <= 1.0 * 1.05
    # blurred, biased and warped: not the HR, but close in level
    assert 0 < float(np.abs(out["lr"] - block.array).mean()) < 0.25 * 100
    clean = dict(case, bias_strength=0.0, warp_max_mm=0.0)
    plain = degrade_block(block, block.grid, clean, cfg, np.random.default_rng(2), 110.0)
    assert np.all(plain["log_bias"] == 0) and np.all(plain["warp"] == 0)
