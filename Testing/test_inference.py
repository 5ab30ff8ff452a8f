"""The patch engine: exactness, independence of tiling, robustness paths."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from SuperResMoELib.core.errors import CancelledError, InputError, ResourceError
from SuperResMoELib.engine.sliding import EngineConfig, blend_weights, run_patches, window_starts
from SuperResMoELib.core.progress import CancelToken


def nearest_up(zoom):
    """Pointwise upsampling: repeat each voxel ``zoom`` times along each axis."""
    def f(x: torch.Tensor) -> torch.Tensor:
        for axis, z in zip((2, 3, 4), zoom):
            x = x.repeat_interleave(z, dim=axis)
        return x
    return f


def smooth_input(shape=(1, 19, 23, 17), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=shape).astype(np.float32)
    from scipy.ndimage import gaussian_filter
    return np.stack([gaussian_filter(c, 1.5) for c in a]).astype(np.float32) * 10


class SmallNet(torch.nn.Module):
    """A fixed random conv predictor with a 5-voxel receptive field, x(1,1,2)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.c1 = torch.nn.Conv3d(1, 4, 3, padding=1)
        self.c2 = torch.nn.Conv3d(4, 1, 3, padding=1)

    def forward(self, x):
        y = self.c2(torch.tanh(self.c1(x))) + x
        return F.interpolate(y, scale_factor=(2, 1, 1), mode="nearest")


def test_window_starts_cover_everything() -> None:
    for n, p, o in [(10, 4, 0.5), (17, 8, 0.0), (8, 8, 0.5), (5, 8, 0.5), (100, 32, 0.25)]:
        s = window_starts(n, p, o)
        covered = np.zeros(max(n, p), bool)
        for start in s:
            covered[start:start + p] = True
        assert covered[:n].all() and s[-1] + p == max(n, p) and s == sorted(set(s))


def test_pointwise_predictor_reproduced_exactly() -> None:
    x = smooth_input((2, 19, 23, 17))
    expected = nearest_up((2, 1, 3))(torch.from_numpy(x)[None])[0].numpy()
    for cfg in (EngineConfig(8, 0.5, 3), EngineConfig((5, 7, 6), 0.0, 1), EngineConfig(12, 0.75, 16, blend="constant")):
        out = run_patches(x, nearest_up((2, 1, 3)), (2, 1, 3), cfg)
        assert out.image.shape == (2, 38, 23, 51)
        np.testing.assert_allclose(out.image, expected, rtol=1e-6, atol=1e-5)


def test_trilinear_predictor_reproduced_away_from_patch_edges() -> None:
    """Trilinear x2 has a one-voxel border effect at each patch edge; with 50%
    overlap and Gaussian blending the stitched result matches the whole-volume
    interpolation to within 1% of the data range."""
    x = smooth_input((1, 24, 24, 24))
    tri = lambda t: F.interpolate(t, scale_factor=2, mode="trilinear", align_corners=False)
    expected = tri(torch.from_numpy(x)[None])[0].numpy()
    out = run_patches(x, tri, (2, 2, 2), EngineConfig(12, 0.5, 4)).image
    err = np.abs(out - expected)
    rng = expected.max() - expected.min()
    assert err.max() < 0.01 * rng
    # on the volume border, patches see the same edge as the whole volume: exact
    np.testing.assert_allclose(out[:, :2], expected[:, :2], atol=0.01 * rng)


@pytest.mark.parametrize("patch, overlap", [(8, 0.5), (12, 0.5), (16, 0.25), ((10, 14, 9), 0.6)])
def test_result_independent_of_tiling(patch, overlap) -> None:
    """A conv net with a receptive field: any tiling agrees with a big-patch run
    to within 2% of the output range (stated tolerance of the engine)."""
    net = SmallNet().eval()
    x = smooth_input((1, 22, 26, 20))
    with torch.no_grad():
        whole = net(torch.from_numpy(x)[None])[0].numpy()
    out = run_patches(x, net, (2, 1, 1), EngineConfig(patch, overlap, 4)).image
    assert out.shape == whole.shape
    rng = whole.max() - whole.min()
    assert np.abs(out - whole).max() < 0.02 * rng
    assert np.abs(out - whole).mean() < 0.002 * rng


def test_volume_smaller_than_patch_is_padded_and_cropped() -> None:
    x = smooth_input((1, 3, 20, 5))
    out = run_patches(x, nearest_up((2, 2, 2)), (2, 2, 2), EngineConfig(8, 0.5, 2))
    assert out.image.shape == (1, 6, 40, 10)
    np.testing.assert_allclose(out.image, nearest_up((2, 2, 2))(torch.from_numpy(x)[None])[0].numpy(), atol=1e-5)


def test_input_not_modified_and_progress_reported() -> None:
    x = smooth_input()
    before = x.copy()
    calls = []
    run_patches(x, nearest_up((1, 1, 2)), (1, 1, 2), EngineConfig(8, 0.5, 4),
                progress=lambda s, f, m="": calls.append((s, f)))
    np.testing.assert_array_equal(x, before)
    fractions = [f for _, f in calls]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0 and fractions == sorted(fractions)


def test_cancel_stops_between_batches() -> None:
    token = CancelToken()
    seen = []

    def predictor(t):
        seen.append(t.shape[0])
        if len(seen) == 2:
            token.cancel()
        return nearest_up((1, 1, 1))(t)

    with pytest.raises(CancelledError):
        run_patches(smooth_input(), predictor, (1, 1, 1), EngineConfig(6, 0.5, 2), cancel=token)
    assert len(seen) == 2


def test_out_of_memory_halves_batch_then_succeeds() -> None:
    sizes = []

    def predictor(t):
        sizes.append(t.shape[0])
        if t.shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return nearest_up((1, 1, 2))(t)

    x = smooth_input()
    out = run_patches(x, predictor, (1, 1, 2), EngineConfig(8, 0.5, 8))
    assert sizes[:3] == [8, 4, 2] and set(sizes[3:]) <= {2, 1}
    assert out.batch_size == 2 and len(out.events) == 2 and "batch size 4" in out.events[0]
    np.testing.assert_allclose(out.image, nearest_up((1, 1, 2))(torch.from_numpy(x)[None])[0].numpy(), atol=1e-5)


class GpuLikePredictor:
    """Runs out of memory on any non-CPU device (``meta`` stands in for a GPU)."""

    def __init__(self) -> None:
        self.moved_to: list[str] = []
        self.devices: list[str] = []

    def to(self, device: torch.device) -> "GpuLikePredictor":
        self.moved_to.append(torch.device(device).type)
        return self

    def __call__(self, x):
        self.devices.append(x.device.type)
        if x.device.type != "cpu":
            raise RuntimeError("CUDA error: out of memory")
        return nearest_up((2, 1, 1))(x)


def test_out_of_memory_at_batch_one_falls_back_to_cpu() -> None:
    pred = GpuLikePredictor()
    x = smooth_input()
    out = run_patches(x, pred, (2, 1, 1), EngineConfig(8, 0.5, 4), device="meta")
    assert pred.devices[:3] == ["meta"] * 3 and set(pred.devices[3:]) == {"cpu"}
    assert pred.moved_to == ["meta", "cpu"] and out.device == "cpu"
    assert "continuing on the CPU" in out.events[-1]
    np.testing.assert_allclose(out.image, nearest_up((2, 1, 1))(torch.from_numpy(x)[None])[0].numpy(), atol=1e-5)


def test_cpu_out_of_memory_at_batch_one_is_a_clear_error() -> None:
    def predictor(t):
        raise RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate; out of memory")

    with pytest.raises(ResourceError, match="smaller patch size"):
        run_patches(smooth_input(), predictor, (1, 1, 1), EngineConfig(8, 0.5, 2))


def test_other_errors_are_not_swallowed() -> None:
    def predictor(t):
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        run_patches(smooth_input(), predictor, (1, 1, 1), EngineConfig(8))


def test_per_patch_aux_becomes_a_map() -> None:
    """Each voxel takes the aux value of the patch whose centre is nearest."""
    x = smooth_input((1, 16, 16, 16))

    def predictor(t):
        label = t.mean(dim=(1, 2, 3, 4)) * 0 + torch.arange(t.shape[0], dtype=torch.float32)
        return nearest_up((2, 2, 2))(t), {"patch": label + predictor.offset}

    predictor.offset = 0
    cfg = EngineConfig(8, 0.0, 1)  # 8 non-overlapping patches, one per batch
    count = {"n": 0}

    def counting(t):
        y, aux = predictor(t)
        aux["patch"] = aux["patch"] + count["n"]
        count["n"] += 1
        return y, aux

    out = run_patches(x, counting, (2, 2, 2), cfg)
    m = out.patch_maps["patch"]
    assert m.shape == (32, 32, 32)
    assert m[0, 0, 0] == 0 and m[-1, -1, -1] == 7 and len(np.unique(m)) == 8
    assert np.all(m[:16, :16, 16:] == 1)  # second window along i


def test_bad_arguments() -> None:
    x = smooth_input()
    with pytest.raises(ValueError, match="integer zoom"):
        run_patches(x, nearest_up((1, 1, 1)), (1, 1, 1.5), EngineConfig(8))
    with pytest.raises(InputError, match="overlap"):
        run_patches(x, nearest_up((1, 1, 1)), (1, 1, 1), EngineConfig(8, overlap=1.0))
    with pytest.raises(ValueError, match="predictor returned"):
        run_patches(x, lambda t: t, (1, 1, 2), EngineConfig(8))


def test_blend_weights_peak_in_centre() -> None:
    w = blend_weights((8, 8, 8))
    assert w.max() == pytest.approx(1.0) and w.min() > 0
    assert w[3:5, 3:5, 3:5].min() == w.max() or w[4, 4, 4] > w[0, 0, 0]


def test_threads_match_the_cores_given(monkeypatch) -> None:
    from SuperResMoELib.engine.devices import ENV_THREADS, cores_given, match_threads

    before = torch.get_num_threads()
    try:
        monkeypatch.setenv(ENV_THREADS, "1")
        assert match_threads() == 1 and torch.get_num_threads() == 1
        monkeypatch.delenv(ENV_THREADS)
        assert 1 <= cores_given() <= (os.cpu_count() or 1)
        assert match_threads() == cores_given() == torch.get_num_threads()
        assert match_threads(1) == 1
    finally:
        torch.set_num_threads(before)


def test_batches_come_from_a_voxel_budget() -> None:
    from SuperResMoELib.engine.windows import CPU_BATCH_VOXELS, GPU_BATCH_VOXELS

    assert EngineConfig((8, 16, 16)).batch_for("cpu") == CPU_BATCH_VOXELS // 2048
    assert EngineConfig((8, 16, 16)).batch_for("cuda") == GPU_BATCH_VOXELS // 2048
    assert EngineConfig(64).batch_for("cpu") == max(1, CPU_BATCH_VOXELS // 64**3)
    assert EngineConfig(64, batch_size=5).batch_for("cuda") == 5
