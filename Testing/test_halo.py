"""Halo-crop tiling: tile plans, the U-Net's receptive-field bound, exact
equality with one whole-volume pass, strategy choice, out-of-memory paths."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from SuperResMoELib.core.errors import InputError, ResourceError
from SuperResMoELib.engine.sliding import run_patches
from SuperResMoELib.engine.windows import EngineConfig, HaloSpec, plan_tiles
from SuperResMoELib.methods.base import EnhanceOptions
from SuperResMoELib.nets.unet3d import ResidualUNet3D, UNet3DConfig


def _net(cfg: UNet3DConfig, seed: int = 0) -> ResidualUNet3D:
    torch.manual_seed(seed)
    net = ResidualUNet3D(cfg).eval()
    torch.nn.init.normal_(net.out.weight, std=0.5)  # a trained-like, non-zero correction
    return net


class UNetPredictor:
    """A REMIx-like predictor over ``(1, C, ...)`` tiles (channels = items)."""

    def __init__(self, net: ResidualUNet3D, spec: HaloSpec | None) -> None:
        self.net = net
        self.halo_spec = spec
        self.shapes: list[tuple[int, ...]] = []

    def to(self, device):
        self.net.to(device)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape))
        b, c = x.shape[:2]
        y = self.net(x.reshape((b * c, 1) + tuple(x.shape[2:])))
        return y.reshape(x.shape)


def _spec(cfg: UNet3DConfig) -> HaloSpec:
    return HaloSpec((cfg.halo,) * 3, (cfg.multiple,) * 3, cfg.bytes_per_voxel())


def _whole(net: ResidualUNet3D, x: np.ndarray, multiple: int) -> np.ndarray:
    """One whole-volume pass: pad by edge replication to the multiple, run, crop."""
    t = torch.from_numpy(x)[:, None]
    pad = [(-n) % multiple for n in x.shape[1:]]
    t = F.pad(t, (0, pad[2], 0, pad[1], 0, pad[0]), mode="replicate")
    with torch.inference_mode():
        y = net(t)[:, 0]
    return y[:, :x.shape[1], :x.shape[2], :x.shape[3]].numpy()


@pytest.mark.parametrize("shape,max_voxels", [((32, 48, 40), 10**9), ((32, 48, 40), 20000),
                                              ((64, 24, 16), 9000), ((8, 8, 8), 4000)])
def test_tiles_cover_every_voxel_once_within_budget(shape, max_voxels) -> None:
    spec = HaloSpec((4, 4, 4), (4, 4, 4), 100.0)
    tiles = plan_tiles(shape, spec, max_voxels)
    count = np.zeros(shape, np.int32)
    for t in tiles:
        count[tuple(slice(a, b) for a, b in zip(t.core_start, t.core_stop))] += 1
        assert math.prod(t.read_shape) <= max_voxels
        assert all(0 <= r0 <= c0 < c1 <= r1 <= n for r0, c0, c1, r1, n in
                   zip(t.read_start, t.core_start, t.core_stop, t.read_stop, shape))
        assert all(a % 4 == 0 for a in t.read_start + t.core_start)  # on the pooling grid
        # the halo is there wherever the volume goes on
        assert all(c0 - r0 == min(4, c0) and r1 - c1 == min(4, n - c1) for r0, c0, c1, r1, n in
                   zip(t.read_start, t.core_start, t.core_stop, t.read_stop, shape))
    assert np.all(count == 1)
    if math.prod(shape) <= max_voxels:
        assert len(tiles) == 1


def test_a_budget_below_the_smallest_tile_is_a_clear_error() -> None:
    with pytest.raises(InputError, match="memory budget"):
        plan_tiles((64, 64, 64), HaloSpec((8, 8, 8), (4, 4, 4), 100.0), 1000)


@pytest.mark.parametrize("levels,convs", [(3, 2), (2, 1), (3, 1)])
def test_reach_bounds_the_receptive_field(levels, convs) -> None:
    """No input voxel beyond ``reach`` changes an output voxel (gradient support),
    at every alignment to the pooling grid."""
    cfg = UNet3DConfig(width=2, levels=levels, convs=convs)
    net = _net(cfg).double()
    n = -(-(2 * cfg.reach + 2 * cfg.multiple + 4) // cfg.multiple) * cfg.multiple
    support = 0
    for offset in range(cfg.multiple):
        x = torch.randn(1, 1, n, n, n, dtype=torch.float64, requires_grad=True)
        c = n // 2 + offset
        net.correction(x)[0, 0, c, c, c].backward()
        nz = (x.grad[0, 0].abs() > 0).nonzero()
        support = max(support, int((nz - c).abs().max()))
    assert support <= cfg.reach <= cfg.halo and cfg.halo % cfg.multiple == 0
    assert support >= cfg.reach - 2 * cfg.multiple  # the bound is not loose either


@pytest.mark.parametrize("levels,shape,voxels", [(2, (2, 37, 45, 30), 12000), (2, (1, 52, 21, 64), 12000),
                                                 (3, (1, 64, 70, 60), 240000)])
def test_halo_tiles_equal_one_whole_volume_pass(levels, shape, voxels) -> None:
    cfg = UNet3DConfig(width=4, levels=levels)
    net = _net(cfg)
    rng = np.random.default_rng(1)
    x = rng.normal(size=shape).astype(np.float32)
    spec = _spec(cfg)
    pred = UNetPredictor(net, spec)
    budget = int(spec.bytes_per_voxel * shape[0] * voxels)  # several tiles
    out = run_patches(x, pred, (1, 1, 1), EngineConfig(memory_budget=budget))
    assert out.strategy == "halo" and out.n_patches > 1 and "tiles" in out.tiling
    assert all(s[1] == shape[0] for s in pred.shapes)  # the channels travel together
    whole = _whole(net, x, cfg.multiple)
    assert np.abs(out.image - whole).max() < 1e-4 * max(1.0, float(np.abs(whole).max()))
    if levels == 3:
        return
    # the same network through blended sliding windows is not exact: the tiles' zero padding shows
    slid = run_patches(x, lambda t: net(t.reshape((-1, 1) + tuple(t.shape[2:]))).reshape(t.shape), (1, 1, 1),
                       EngineConfig(16, 0.5, strategy="sliding"))
    assert slid.strategy == "sliding" and np.abs(slid.image - whole).max() > 1e-3


def test_whole_volume_in_one_pass_when_it_fits() -> None:
    cfg = UNet3DConfig(width=2, levels=2)
    pred = UNetPredictor(_net(cfg), _spec(cfg))
    out = run_patches(np.ones((1, 10, 12, 14), np.float32), pred, (1, 1, 1), EngineConfig())
    assert out.n_patches == 1 and pred.shapes == [(1, 1, 10, 12, 14)] and "whole volume" in out.tiling


def test_strategy_choice() -> None:
    spec = HaloSpec((4, 4, 4), (2, 2, 2), 10.0)
    assert EngineConfig().resolve_strategy(spec)[0] == "halo"
    assert EngineConfig().resolve_strategy(None)[0] == "sliding"
    assert EngineConfig(strategy="sliding").resolve_strategy(spec)[0] == "sliding"
    with pytest.raises(InputError, match="fully convolutional"):
        EngineConfig(strategy="halo").resolve_strategy(None)
    # a patch size the user gives asks for sliding windows under auto, not when halo is forced
    assert EnhanceOptions(patch_size=16).engine_config(64).strategy == "sliding"
    assert EnhanceOptions(patch_size=16, tiling="halo").engine_config(64).strategy == "halo"
    assert EnhanceOptions(memory_budget=100).engine_config(64).memory_budget == 100 * 2**20
    with pytest.raises(InputError, match="tiling"):
        EnhanceOptions(tiling="tiles").engine_config(64)


def test_out_of_memory_halves_the_budget_then_matches() -> None:
    cfg = UNet3DConfig(width=2, levels=2)
    net = _net(cfg)
    spec = _spec(cfg)
    limit = 17000

    class Tight(UNetPredictor):
        def __call__(self, x):
            if math.prod(x.shape[2:]) > limit:
                raise RuntimeError("CUDA out of memory. Tried to allocate 1 GiB")
            return super().__call__(x)

    x = np.random.default_rng(0).normal(size=(1, 40, 42, 44)).astype(np.float32)
    out = run_patches(x, Tight(net, spec), (1, 1, 1), EngineConfig(memory_budget=1 << 24))
    assert out.events and all("memory budget" in e for e in out.events)
    assert np.abs(out.image - _whole(net, x, cfg.multiple)).max() < 1e-4


def test_cpu_out_of_memory_with_the_smallest_tile_is_a_clear_error() -> None:
    class Never(UNetPredictor):
        def __call__(self, x):
            raise RuntimeError("DefaultCPUAllocator: out of memory")

    cfg = UNet3DConfig(width=2, levels=2)
    with pytest.raises(ResourceError, match="smallest halo-crop tile"):
        run_patches(np.ones((1, 8, 8, 8), np.float32), Never(_net(cfg), _spec(cfg)), (1, 1, 1),
                    EngineConfig(memory_budget=1 << 20))
