"""The inference GPU path: the same results on CUDA as on the CPU, in float32
and under autocast, for both tiling strategies and the methods that use them.
Marked ``gpu``; skipped without a CUDA device (``benchmarks/device_check.sh``
runs them on a GPU machine)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from SuperResMoELib.engine.sliding import run_patches
from SuperResMoELib.engine.windows import EngineConfig, HaloSpec
from SuperResMoELib.methods import create_method
from SuperResMoELib.methods.base import EnhanceOptions
from SuperResMoELib.nets.unet3d import ResidualUNet3D, UNet3DConfig

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


class _Net:
    def __init__(self, levels: int = 3) -> None:
        torch.manual_seed(0)
        self.cfg = UNet3DConfig(width=8, levels=levels)
        self.net = ResidualUNet3D(self.cfg).eval()
        torch.nn.init.normal_(self.net.out.weight, std=0.3)
        self.halo_spec = HaloSpec((self.cfg.halo,) * 3, (self.cfg.multiple,) * 3, self.cfg.bytes_per_voxel())
        self.devices: list[str] = []

    def to(self, device):
        self.net.to(device, memory_format=torch.channels_last_3d)

    def __call__(self, x):
        self.devices.append(x.device.type)
        b, c = x.shape[:2]
        y = self.net(x.reshape((b * c, 1) + tuple(x.shape[2:])).contiguous(memory_format=torch.channels_last_3d))
        return y.reshape(x.shape)


def _input(shape=(1, 70, 76, 64)) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0)
    return gaussian_filter(rng.random(shape), (0, 2, 2, 2)).astype(np.float32)


def test_halo_tiles_on_cuda_equal_the_cpu() -> None:
    x = _input()
    net = _Net()
    cpu = run_patches(x, net, (1, 1, 1), EngineConfig(mixed_precision=False), "cpu")
    budget = int(net.halo_spec.bytes_per_voxel * 300000)  # several tiles on the GPU
    gpu = run_patches(x, net, (1, 1, 1), EngineConfig(mixed_precision=False, memory_budget=budget), "cuda")
    assert gpu.device.startswith("cuda") and gpu.strategy == "halo" and gpu.n_patches > 1
    assert "cuda" in net.devices
    assert np.abs(gpu.image - cpu.image).max() < 1e-3


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_autocast_is_close_to_float32(dtype) -> None:
    if dtype == "bfloat16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16")
    x = _input()
    net = _Net()
    full = run_patches(x, net, (1, 1, 1), EngineConfig(mixed_precision=False), "cuda")
    amp = run_patches(x, net, (1, 1, 1), EngineConfig(amp_dtype=dtype), "cuda")
    tol = 2e-2 if dtype == "float16" else 6e-2  # values ~0..1
    assert np.abs(amp.image - full.image).max() < tol and amp.image.dtype == np.float32


def test_sliding_stitching_on_cuda_equals_the_cpu() -> None:
    """The vectorised stitcher (``index_add_`` on the device) and the per-window
    maps give the CPU's image and maps."""
    x = _input((2, 30, 34, 28))

    def predictor(t):
        y = torch.nn.functional.interpolate(t, scale_factor=(2, 1, 1), mode="nearest") * 2
        return y, {"patch": t.mean(dim=(2, 3, 4))}

    cfg = EngineConfig(8, 0.5, 64, mixed_precision=False)
    cpu = run_patches(x, predictor, (2, 1, 1), cfg, "cpu")
    gpu = run_patches(x, predictor, (2, 1, 1), cfg, "cuda")
    np.testing.assert_allclose(gpu.image, cpu.image, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gpu.patch_maps["patch"], cpu.patch_maps["patch"], rtol=1e-5, atol=1e-6)


def test_remix_and_ssmoe_on_cuda_match_the_cpu() -> None:
    from SuperResMoELib import sample_data

    lr, _ = sample_data.t1_pair(4, (1.0, 1.0, 4.0))
    crop = lr.with_array(np.asarray(lr.array)[10:30, 40:140, 40:140])
    opts = EnhanceOptions(mixed_precision=False)
    a = create_method("remix").enhance(crop, opts, "cpu")
    b = create_method("remix").enhance(crop, opts, "cuda")
    assert b.info["device"].startswith("cuda") and b.info["strategy"] == "halo"
    peak = float(np.abs(np.asarray(a.volume.array)).max())
    assert np.abs(np.asarray(a.volume.array) - np.asarray(b.volume.array)).max() < 1e-3 * peak

    subject = sample_data.mudi_subject(4)
    mudi, _ = subject.lr([0, 1], "aniso")
    c = create_method("ssmoe").enhance(mudi, opts, "cpu")
    d = create_method("ssmoe").enhance(mudi, opts, "cuda")
    assert d.info["device"].startswith("cuda") and d.info["strategy"] == "sliding"
    peak = float(np.abs(np.asarray(c.volume.array)).max())
    assert np.abs(np.asarray(c.volume.array) - np.asarray(d.volume.array)).max() < 1e-3 * peak
