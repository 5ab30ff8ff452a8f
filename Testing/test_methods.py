"""Method registry, options and the cubic baseline."""

from __future__ import annotations

import numpy as np
import pytest

from SuperResMoELib.core.errors import CancelledError, InputError
from SuperResMoELib.methods import EnhanceOptions, Method, create_method, get_method_class, method_names
from SuperResMoELib.methods.base import prepare_array
from SuperResMoELib.core.progress import CancelToken
from SuperResMoELib.core.volume import AcquisitionTable, Volume

from conftest import make_matrix, smooth_volume


def test_registry_lists_and_creates() -> None:
    assert "cubic" in method_names()
    m = create_method("cubic")
    assert isinstance(m, Method) and m.name == "cubic" and not m.needs_checkpoint
    assert get_method_class("cubic") is type(m)
    with pytest.raises(InputError, match="unknown method 'sinc'; available: cubic"):
        create_method("sinc")


def test_cubic_output_grid_matches_declared_grid(geom: str) -> None:
    vol = smooth_volume((10, 12, 14), geom)
    m = create_method("cubic")
    for opts in (EnhanceOptions(), EnhanceOptions(scale=2), EnhanceOptions(target_spacing=0.5)):
        res = m.enhance(vol, opts)
        assert res.volume.grid.same_as(m.output_grid(vol, opts))
        np.testing.assert_allclose(res.volume.grid.corners(), vol.grid.corners(), atol=1e-9)
    assert m.enhance(vol).volume.spatial_shape == (20, 12, 14)  # default: x2 along k


def test_cubic_keeps_units_and_reproduces_linear_ramp() -> None:
    """A volume linear in RAS is reproduced (away from the edge) in the user's units."""
    vol = smooth_volume((16, 16, 16), "oblique")
    k, j, i = np.meshgrid(*[np.arange(16.0)] * 3, indexing="ij")
    ras = vol.grid.index_to_ras(np.stack([i, j, k], -1))
    f = lambda r: 1000.0 + 3 * r[..., 0] - 2 * r[..., 1] + r[..., 2]
    ramp = vol.with_array(f(ras).astype(np.float32))
    res = create_method("cubic").enhance(ramp, EnhanceOptions(scale=(1, 1, 2)))
    kk, jj, ii = np.meshgrid(*[np.arange(n) for n in res.volume.spatial_shape], indexing="ij")
    expected = f(res.volume.grid.index_to_ras(np.stack([ii, jj, kk], -1)))
    inner = (slice(12, -12), slice(6, -6), slice(6, -6))
    np.testing.assert_allclose(res.volume.array[inner], expected[inner], rtol=1e-4)


def test_cubic_4d_keeps_table_and_frames() -> None:
    frames = np.stack([np.full((6, 6, 6), v, np.float32) for v in (1.0, 50.0, 400.0)])
    table = AcquisitionTable(np.array([[0, 0, 0, 0, 20, 80], [1, 0, 0, 1000, 20, 80], [0, 1, 0, 3000, 7322.7, 130]]))
    vol = Volume(frames, make_matrix("flipped"), table)
    calls = []
    res = create_method("cubic").enhance(vol, progress=lambda s, f, m="": calls.append(f))
    assert res.volume.array.shape == (3, 12, 6, 6)
    np.testing.assert_allclose(res.volume.array[2], 400.0, rtol=1e-5)
    np.testing.assert_array_equal(res.volume.acquisition.values, table.values)
    assert calls == [1 / 3, 2 / 3, 1.0]


def test_cubic_cancel() -> None:
    token = CancelToken()
    token.cancel()
    with pytest.raises(CancelledError):
        create_method("cubic").enhance(smooth_volume(), cancel=token)


def test_prepare_array_types_and_checks() -> None:
    u8 = Volume(np.full((2, 2, 2), 255, np.uint8), np.eye(4))
    out = prepare_array(u8)
    assert out.dtype == np.float32 and out.max() == 255.0
    nan = np.ones((2, 2, 2), np.float32)
    nan[1, 0, 1] = np.nan
    with pytest.raises(InputError, match=r"1 voxel\(s\) are NaN or Inf \(first at array index \(1, 0, 1\)\)"):
        prepare_array(Volume(nan, np.eye(4)))
    fixed = prepare_array(Volume(nan, np.eye(4)), "zero")
    assert fixed[1, 0, 1] == 0 and np.isnan(nan[1, 0, 1])  # caller's array untouched
    with pytest.raises(InputError, match="do not fit in float32"):
        prepare_array(Volume(np.full((2, 2, 2), 1e35), np.eye(4)))
    with pytest.raises(InputError, match="unsupported voxel type"):
        prepare_array(Volume(np.full((2, 2, 2), 1 + 1j), np.eye(4)))


def test_options_validation() -> None:
    with pytest.raises(InputError, match="positive"):
        create_method("cubic").enhance(smooth_volume(), EnhanceOptions(target_spacing=-1))
    with pytest.raises(InputError, match="overlap"):
        EnhanceOptions(overlap=1.0).engine_config(16)
    assert EnhanceOptions(patch_size=(8, 16, 16)).engine_config(32).patch() == (8, 16, 16)
