"""The per-frame driver: frames share engine calls, an out-of-memory error
shrinks the items per call down to one before the engine falls back, counts
and messages are per frame."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from SuperResMoELib.core.errors import ResourceError
from SuperResMoELib.core.progress import CancelToken
from SuperResMoELib.engine.windows import EngineConfig
from SuperResMoELib.methods.driver import frame_prefix, run_frames


class Doubler:
    """``2 x`` per item; raises a (CPU) out-of-memory error above ``limit`` items per call."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit
        self.calls: list[int] = []

    def to(self, device) -> None:
        pass

    def __call__(self, items: torch.Tensor, frames: torch.Tensor):
        self.calls.append(int(items.shape[0]))
        if self.limit is not None and items.shape[0] > self.limit:
            raise RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 1 GB (out of memory)")
        return items * 2, {"frame": frames.to(torch.float32)}


def frames(n: int = 20) -> np.ndarray:
    return np.random.default_rng(0).random((n, 12, 12, 12)).astype(np.float32)


def run(x: np.ndarray, predictor, items: int = 64, **kw):
    cfg = EngineConfig(8, 0.5, items)
    return run_frames(x, predictor, (1, 1, 1), cfg, torch.device("cpu"), lambda *a: None, CancelToken(), **kw)


def test_frames_share_calls_and_counts_are_per_frame() -> None:
    x = frames(6)
    p = Doubler()
    res = run(x, p, items=64)
    np.testing.assert_allclose(res.image, 2 * x, rtol=1e-6)
    assert res.groups == [6] and res.n_patches == 8 * 6  # 8 windows of 8^3 in 12^3, for every frame
    for f in range(6):  # the per-patch value map knows which frame each item came from
        assert np.all(res.maps["frame"][f] == f)
    assert run(x, Doubler(), items=2).n_patches == res.n_patches  # independent of the batch


def test_out_of_memory_splits_the_items_before_any_fallback() -> None:
    """A group of 20 frames at 3 windows per batch is 60 items; the network
    takes 8: the items are split (60 -> 30 -> 15 -> 7) instead of failing on the CPU."""
    x = frames(20)
    p = Doubler(limit=8)
    res = run(x, p, items=64)
    np.testing.assert_allclose(res.image, 2 * x, rtol=1e-6)
    assert p.calls[:4] == [60, 30, 15, 7] and all(n <= 7 for n in p.calls[3:])
    assert res.events[0] == "frames 1-20/20: out of memory with 60 network items per call on cpu: retrying with 30"
    assert res.batch_items <= 8  # carried over
    with pytest.raises(ResourceError, match="smaller patch size"):
        run(x, Doubler(limit=0), items=64)  # not even one item fits: the engine's own last resort


def test_frame_prefixes() -> None:
    assert frame_prefix([0], 1) == ""
    assert frame_prefix([2], 8) == "frame 3/8: "
    assert frame_prefix([2, 3], 8) == "frames 3-4/8: "
    assert frame_prefix([0, 2], 3) == "frames 1,3/3: "  # a skipped frame in between
