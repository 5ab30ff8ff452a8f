"""Shared fixtures: geometries that catch axis-order and sign mistakes."""

from __future__ import annotations

import os

import numpy as np
import pytest

from SuperResMoELib.core.volume import Grid, Volume


def rotation(axis: np.ndarray, angle_deg: float) -> np.ndarray:
    """``(3, 3)`` rotation about ``axis`` by ``angle_deg`` (Rodrigues)."""
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    t = np.deg2rad(angle_deg)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * k @ k


def make_matrix(kind: str) -> np.ndarray:
    """IJK->RAS matrices: ``axis`` (identity-like), ``oblique`` (rotated,
    anisotropic), ``flipped`` (negative determinant, LPS-like storage)."""
    m = np.eye(4)
    if kind == "axis":
        m[:3, :3] = np.diag([1.0, 1.0, 2.0])
        m[:3, 3] = [-10.0, -20.0, 5.0]
    elif kind == "oblique":
        m[:3, :3] = rotation([1.0, 2.0, 3.0], 27.0) @ np.diag([0.9, 1.1, 2.5])
        m[:3, 3] = [12.5, -40.25, 7.75]
    elif kind == "flipped":
        m[:3, :3] = rotation([0.0, 1.0, 1.0], 12.0) @ np.diag([-1.2, 0.8, 3.0])
        m[:3, 3] = [100.0, 3.0, -60.5]
    else:
        raise ValueError(kind)
    return m


GEOMETRIES = ("axis", "oblique", "flipped")


@pytest.fixture(params=GEOMETRIES)
def geom(request) -> str:
    return request.param


def smooth_volume(shape=(12, 14, 16), kind: str = "axis", seed: int = 0) -> Volume:
    """A smooth random-ish volume with a distinct value in every voxel."""
    rng = np.random.default_rng(seed)
    k, j, i = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    arr = 100 + 3 * i + 5 * j + 7 * k + rng.normal(0, 0.5, shape).astype(np.float32)
    return Volume(arr.astype(np.float32), make_matrix(kind), name="test")


@pytest.fixture
def grid_of():
    return lambda shape, kind: Grid(shape, make_matrix(kind))


#: A tiny MoEDiff-SR training config (32-pixel tiles, narrow networks): seconds on a CPU.
MOEDIFF_TINY = {
    "description": "tiny MoEDiff-SR test config", "seed": 0, "batch_size": 4,
    "library": {"subjects": [0], "crops_per_subject": 2, "slices_per_crop": 4, "crop": 48,
                "validation_fraction": 0.25, "intensity_jitter": 0.1},
    "degradation": {"factor": [1.8, 2.4], "thick_probability": 0.5, "thick_mm": [3.0, 5.0],
                    "thick_in_plane_factor": [1.0, 1.5], "noise_fraction": [0.005, 0.02],
                    "bias_strength": [0.0, 0.1], "warp_max_mm": [0.0, 1.0]},
    "architecture": {
        "vqvae": {"base_channels": 8, "channel_mults": [1, 2, 2], "num_res_blocks": 1, "latent_channels": 4,
                  "codebook_size": 32, "norm_groups": 4},
        "condition": {"patch_sizes": [16, 8, 4], "dim": 16, "depth": 1, "heads": 2, "in_channels": 1},
        "gating": {"dim": 16, "n_experts": 3},
        "expert": {"latent_channels": 4, "cond_channels": 16, "base_channels": 8, "channel_mults": [1, 2, 2],
                   "token_dim": 16, "time_embed_dim": 16, "groups": 4, "growth_rate": 4, "dense_layers": 2},
        "experts": [1, 2, 3],
        "schedules": [{"steps": 500}, {"steps": 2000}, {"steps": 1000}],
        "sampling": {"steps": 1000}, "gating_mode": "global", "extra_inputs": [], "tile": 32,
    },
    "vqvae": {"epochs": 1, "steps_per_epoch": 4, "lr": 0.002},
    "joint": {"epochs": 2, "steps_per_epoch": 3, "lr": 0.001, "validation_tiles": 4, "validation_steps": 2},
}


@pytest.fixture
def moediff_tiny() -> dict:
    """A fresh copy of :data:`MOEDIFF_TINY` to modify."""
    import copy

    return copy.deepcopy(MOEDIFF_TINY)


@pytest.fixture(scope="session")
def moediff_checkpoint(tmp_path_factory):
    """A tiny MoEDiff-SR checkpoint with untrained (seeded) weights: ``(path, manifest)``."""
    import torch

    from SuperResMoELib.checkpoints.store import save_checkpoint
    from SuperResMoELib.methods.moediff.checkpoint import moediff_manifest
    from SuperResMoELib.methods.moediff.model import MoEDiffArchitecture, MoEDiffSR
    from training.config import from_dict

    arch = from_dict(MoEDiffArchitecture, MOEDIFF_TINY["architecture"], "tiny")
    torch.manual_seed(0)
    net = MoEDiffSR(arch)
    with torch.no_grad():  # the zero-initialised heads would make every expert predict eps = 0
        for expert in net.experts:
            expert.out.weight.normal_(0.0, 0.01)
    net.latent_scale.fill_(2.0)
    path = tmp_path_factory.mktemp("moediff_ckpt") / "moediff_t1"
    manifest = moediff_manifest(arch, 2.0, description="tiny untrained MoEDiff-SR")
    save_checkpoint(path, net.state_dict(), manifest)
    return path, manifest


#: torch threads a test may use: both CI cores in one process, one in each of
#: the two pytest-xdist workers (``scripts/quickstart.sh test``), so the workers
#: never run four spinning threads on two cores.
XDIST_WORKER = bool(os.environ.get("PYTEST_XDIST_WORKER"))
TEST_THREADS = 1 if XDIST_WORKER else 2


def pytest_configure(config) -> None:
    """An xdist worker runs with one thread: torch's, OpenMP's (subprocesses
    inherit it) and the library's own (``SUPERRESMOE_THREADS``, which every
    ``enhance`` applies)."""
    if XDIST_WORKER:
        os.environ["OMP_NUM_THREADS"] = os.environ["SUPERRESMOE_THREADS"] = "1"
        import torch

        torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _one_thread_per_worker():
    """Under xdist, a test that changed torch's thread count leaves it at one."""
    yield
    if XDIST_WORKER:
        import torch

        if torch.get_num_threads() != 1:
            torch.set_num_threads(1)


@pytest.fixture
def one_torch_thread():
    """torch on one intra-op thread for the test, then as before: tiny
    networks run as fast on one, and a reference run trained on one."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
