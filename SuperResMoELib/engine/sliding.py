"""Patch-wise inference engine shared by every 3D method.

The engine slides a window over a low-resolution array, sends batches of
patches through a *predictor* on the chosen device, and blends the (zoomed)
output patches into the high-resolution grid with Gaussian weights.

Shapes (KJI order throughout):

* input array ``(C, K, J, I)``; patches ``(B, C, pk, pj, pi)``;
* predictor output ``(B, C_out, pk*zk, pj*zj, pi*zi)`` for integer zoom
  ``(zk, zj, zi)``; the result is ``(C_out, K*zk, J*zj, I*zi)``.

Input patch ``[s, s+p)`` along an axis maps to output ``[s*z, (s+p)*z)``, which
is exactly the region those LR voxels cover on the grid made by
:func:`SuperResMoELib.core.geometry.scaled_grid` (edges aligned), so the engine is
geometry-neutral: the caller attaches the scaled grid to the result.

A predictor may also return ``(output, aux)`` where ``aux`` maps names to
``(B,)`` per-patch values (e.g. the expert a mixture-of-experts routed each
patch to), or ``(B, A)`` values (one per channel, e.g. per frame when frames
travel as channels); each becomes a map on the output grid, ``(K', J', I')``
or ``(A, K', J', I')``, where every voxel takes the value of the patch with the
largest blending weight there.

Stitching is vectorised: each batch is added with one ``index_add_`` into the
weighted sum (no Python loop per patch, which on a GPU would mean three kernel
launches per patch), and per-patch values are kept in a small table indexed by
window and painted once at the end (the window with the largest weight at a
voxel is, for separable weights on a Cartesian window layout, the product of
the per-axis best windows).

Fully convolutional predictors that declare a
:class:`~SuperResMoELib.engine.windows.HaloSpec` (attribute ``halo_spec``) are
run by the halo-crop tiler (:mod:`SuperResMoELib.engine.halo`) instead, unless
the configuration asks for sliding windows; :attr:`EngineOutput.strategy` says
which ran.

Robustness: volumes smaller than a patch are padded by edge replication and the
result cropped; progress is reported per batch and cancellation is checked
between batches; on out-of-memory the batch is halved and retried, and when a
batch of one still fails on a GPU the run continues on the CPU (each event is
logged and returned in :attr:`EngineOutput.events`).  Stitching buffers live
on the compute device only when they are small, else in CPU memory, so GPU
memory stays bounded by the batch, whatever the volume size.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from SuperResMoELib.engine.devices import autocast_context, move_predictor, recover_from_out_of_memory, to_device
from SuperResMoELib.engine.windows import EngineConfig, HaloSpec, window_starts
from SuperResMoELib.core.progress import CancelToken, ProgressCallback, no_progress

log = logging.getLogger("superresmoe.inference")

#: Stitching memory per output value, in float32 values: the weighted sum
#: itself plus the weight sum (one value per voxel, shared by the channels)
#: and the importance map, rounded up (``1.5`` x the output's bytes).
STITCH_MEMORY_FACTOR: float = 1.5

Predictor = Callable[[torch.Tensor], "torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]"]


@dataclass
class EngineOutput:
    """Result of :func:`run_patches`.

    Attributes:
        image: ``(C_out, K*zk, J*zj, I*zi)`` float32.
        patch_maps: per-patch auxiliary values painted on the output grid,
            ``(K*zk, J*zj, I*zi)`` float32 each (``(A, K*zk, J*zj, I*zi)`` for
            ``(B, A)`` values).
        device: the device that finished the work.
        batch_size: the batch size in use at the end.
        n_patches: number of windows.
        events: human-readable notes (out-of-memory retries, CPU fallback).
        strategy: ``"sliding"`` or ``"halo"``.
        tiling: one sentence: what ran and why (tiles, their size, the halo).
    """

    image: np.ndarray
    patch_maps: dict[str, np.ndarray] = field(default_factory=dict)
    device: str = "cpu"
    batch_size: int = 0
    n_patches: int = 0
    events: list[str] = field(default_factory=list)
    strategy: str = "sliding"
    tiling: str = ""


def blend_factors(shape: Sequence[int], blend: str = "gaussian", sigma_scale: float = 0.125) -> list[torch.Tensor]:
    """The per-axis float64 factors of :func:`blend_weights` (each peaking at 1)."""
    out = []
    for n in shape:
        if blend == "constant":
            out.append(torch.ones(n, dtype=torch.float64))
            continue
        x = torch.arange(n, dtype=torch.float64) - (n - 1) / 2.0
        out.append(torch.exp(-0.5 * (x / max(sigma_scale * n, 1e-6)) ** 2))
    return out


def blend_weights(shape: Sequence[int], blend: str = "gaussian", sigma_scale: float = 0.125) -> torch.Tensor:
    """``shape`` float32 importance map: separable Gaussian centred in the patch
    (floored at ``1e-20`` so every voxel keeps a positive weight while the
    weight ratios between overlapping patches survive at corners), or ones."""
    if blend == "constant":
        return torch.ones(tuple(shape), dtype=torch.float32)
    w = torch.ones((), dtype=torch.float64)
    for g in blend_factors(shape, blend, sigma_scale):
        w = w[..., None] * g
    w = w / w.max()
    return w.clamp_min(1e-20).to(torch.float32)


def _owners(size: int, starts: Sequence[int], zoom: int, factor: torch.Tensor) -> torch.Tensor:
    """``(size,)`` index into ``starts`` of the window with the largest weight
    at each output position along one axis (the first on ties); ``factor`` is
    the axis' blending factor over an output patch."""
    p = factor.shape[0]
    pos = torch.arange(size)[:, None] - torch.as_tensor(list(starts))[None, :] * zoom  # (size, W)
    inside = (pos >= 0) & (pos < p)
    w = torch.where(inside, factor[pos.clamp(0, p - 1)], torch.full(pos.shape, -1.0, dtype=torch.float64))
    return w.argmax(dim=1)


class _Stitcher:
    """Weighted accumulation of output patches; per-window auxiliary values.

    ``layout`` is the window starts per axis (the windows are their Cartesian
    product, in k-major order); ``shape`` is ``(C_out, K', J', I')``.
    """

    def __init__(self, shape: tuple[int, ...], device: torch.device, weights: torch.Tensor,
                 layout: tuple[list[int], list[int], list[int]], factors: list[torch.Tensor]) -> None:
        self.shape = shape
        self.device = device
        self.layout = layout
        self.factors = factors
        self.sum = torch.zeros(shape, dtype=torch.float32, device=device)
        self.wsum = torch.zeros(shape[1:], dtype=torch.float32, device=device)
        self.weights = weights.to(device)
        self._local: torch.Tensor | None = None  # (P,) flat offsets of an output patch's voxels
        self.table: dict[str, torch.Tensor] = {}  # name -> (A, nK, nJ, nI) per-window values
        self.flat: set[str] = set()  # names whose values came as (B,): maps without the A axis

    def to(self, device: torch.device) -> None:
        self.device = device
        self.sum, self.wsum, self.weights = self.sum.to(device), self.wsum.to(device), self.weights.to(device)
        self._local = None

    def _offsets(self, out_patch: tuple[int, int, int]) -> torch.Tensor:
        if self._local is None:
            _, kk, jj, ii = self.shape
            pk, pj, pi = out_patch
            d = self.device
            self._local = (torch.arange(pk, device=d)[:, None, None] * (jj * ii)
                           + torch.arange(pj, device=d)[None, :, None] * ii
                           + torch.arange(pi, device=d)[None, None, :]).reshape(-1)
        return self._local

    def add(self, out: torch.Tensor, starts: torch.Tensor, index: torch.Tensor, zoom: tuple[int, int, int],
            aux: dict[str, torch.Tensor]) -> None:
        """Add ``out (B, C_out, *out_patch)`` of the windows at LR ``starts (B, 3)``
        (their position ``index (B, 3)`` in the layout) and their ``aux`` values."""
        out = out.to(self.device, torch.float32)
        b, c = out.shape[:2]
        _, kk, jj, ii = self.shape
        st = starts.to(self.device)
        base = st[:, 0] * (zoom[0] * jj * ii) + st[:, 1] * (zoom[1] * ii) + st[:, 2] * zoom[2]  # (B,)
        pk, pj, pi = (int(n) for n in out.shape[2:])
        idx = (base[:, None] + self._offsets((pk, pj, pi))[None, :]).reshape(-1)  # (B*P,)
        w = self.weights.reshape(-1)
        vals = (out.reshape(b, c, -1) * w).permute(1, 0, 2).reshape(c, -1)
        self.sum.view(c, -1).index_add_(1, idx, vals)
        self.wsum.view(-1).index_add_(0, idx, w.repeat(b))
        for name, v in aux.items():
            if v.ndim == 1:
                self.flat.add(name)
            v = v.detach().reshape(b, -1).to("cpu", torch.float32)
            t = self.table.setdefault(name, torch.zeros((v.shape[1],) + tuple(len(a) for a in self.layout)))
            t[:, index[:, 0], index[:, 1], index[:, 2]] = v.T

    def result(self, zoom: tuple[int, int, int]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        maps = {}
        if self.table:
            owners = [_owners(n, starts, z, f) for n, starts, z, f in
                      zip(self.shape[1:], self.layout, zoom, self.factors)]
            grid = (owners[0][:, None, None], owners[1][None, :, None], owners[2][None, None, :])
            for name, t in self.table.items():
                m = t[(slice(None),) + grid]  # (A, K', J', I')
                maps[name] = m[0] if name in self.flat else m
        return self.sum / self.wsum.clamp_min(1e-12), maps


def run_patches(
    array: np.ndarray | torch.Tensor,
    predictor: Predictor,
    zoom: Sequence[int],
    config: EngineConfig | None = None,
    device: torch.device | str = "cpu",
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
    stage: str = "enhance",
) -> EngineOutput:
    """Run ``predictor`` over ``array`` patch by patch and stitch the result.

    Args:
        array: ``(C, K, J, I)`` input (any float dtype; not modified).
        predictor: maps ``(B, C, pk, pj, pi)`` to ``(B, C_out, pk*zk, pj*zj, pi*zi)``
            (or ``(output, aux)``, see the module docstring). If it has a ``to``
            method it is moved to the device (and to the CPU on fallback).
        zoom: integer output/input size ratio ``(zk, zj, zi)``.
        config: window, batch and blending settings (defaults if ``None``).
        device: where the predictor runs.
        progress: called with ``(stage, fraction, message)`` after each batch.
        cancel: polled before each batch.

    Returns:
        :class:`EngineOutput` with the ``(C_out, K*zk, J*zj, I*zi)`` image.
    """
    config = config or EngineConfig()
    config.validate()
    zoom_t = tuple(int(z) for z in zoom)
    if len(zoom_t) != 3 or min(zoom_t) < 1 or any(abs(z - float(zz)) > 0 for z, zz in zip(zoom_t, zoom)):
        raise ValueError(f"the patch engine needs integer zoom factors >= 1, got {tuple(zoom)}")
    x = torch.as_tensor(np.asarray(array) if not isinstance(array, torch.Tensor) else array)
    if x.ndim != 4:
        raise ValueError(f"engine input must be (C, K, J, I), got shape {tuple(x.shape)}")
    x = x.detach().to("cpu", torch.float32)
    found = getattr(predictor, "halo_spec", None)
    spec = found if isinstance(found, HaloSpec) else None
    strategy, reason = config.resolve_strategy(spec)
    if strategy == "halo" and spec is not None:
        from SuperResMoELib.engine.halo import run_halo

        return run_halo(x, predictor, zoom_t, spec, config, torch.device(device), progress, cancel, stage, reason)
    true_shape = tuple(x.shape[1:])
    patch = config.patch()
    pad = [max(0, p - n) for p, n in zip(patch, true_shape)]
    if any(pad):  # volume smaller than a patch: replicate edges, crop later
        x = F.pad(x[None], (0, pad[2], 0, pad[1], 0, pad[0]), mode="replicate")[0]
    shape = tuple(x.shape[1:])
    layout = ([*window_starts(shape[0], patch[0], config.overlap)], [*window_starts(shape[1], patch[1], config.overlap)],
              [*window_starts(shape[2], patch[2], config.overlap)])
    grid = torch.cartesian_prod(*[torch.arange(len(a)) for a in layout]).reshape(-1, 3)  # (W, 3) layout index
    starts_t = torch.stack([torch.as_tensor(layout[a])[grid[:, a]] for a in range(3)], dim=1)  # (W, 3) LR starts
    n_windows = int(grid.shape[0])
    dev = torch.device(device)
    batch = config.batch_for(dev.type)
    out_patch = tuple(p * z for p, z in zip(patch, zoom_t))
    weights = blend_weights(out_patch, config.blend, config.sigma_scale)
    factors = blend_factors(out_patch, config.blend, config.sigma_scale)
    events: list[str] = []
    stitcher: _Stitcher | None = None
    cancel = cancel or CancelToken()
    move_predictor(predictor, dev)
    done = 0
    progress(stage, 0.0, f"{n_windows} patches on {dev}")
    starts_list = starts_t.tolist()
    with torch.inference_mode():
        while done < n_windows:
            cancel.check()
            stop = min(done + batch, n_windows)
            chunk = starts_list[done:stop]
            patches = torch.stack([x[:, k:k + patch[0], j:j + patch[1], i:i + patch[2]] for k, j, i in chunk])
            try:
                with autocast_context(dev, config.mixed_precision, config.amp_dtype):
                    res = predictor(to_device(patches, dev))
                out, aux = res if isinstance(res, tuple) else (res, {})
                if tuple(out.shape[-3:]) != out_patch or out.shape[0] != len(chunk):
                    raise ValueError(  # a program error: the predictor does not fit the engine
                        f"predictor returned {tuple(out.shape)} for input {tuple(patches.shape)}; "
                        f"expected (B, C_out) + {out_patch}"
                    )
                if stitcher is None:
                    out_shape = (int(out.shape[1]),) + tuple(n * z for n, z in zip(shape, zoom_t))
                    nbytes = 4 * math.prod(out_shape) * STITCH_MEMORY_FACTOR
                    sdev = dev if dev.type != "cpu" and nbytes <= config.device_stitch_max_bytes else torch.device("cpu")
                    stitcher = _Stitcher(out_shape, sdev, weights, layout, factors)
                stitcher.add(out, starts_t[done:stop], grid[done:stop], zoom_t, aux)
            except Exception as exc:  # noqa: BLE001 - only out-of-memory is handled
                def smaller_batch() -> str | None:
                    nonlocal batch
                    if batch <= 1:
                        return None
                    batch = max(1, batch // 2)
                    return f"out of memory on {dev}: retrying with batch size {batch}"

                dev, note = recover_from_out_of_memory(exc, dev, predictor, smaller_batch, "batch size 1",
                                                       "use a smaller patch size")
                del exc
                events.append(note)
                if stitcher is not None and stitcher.device.type != "cpu" and dev.type == "cpu":
                    stitcher.to(dev)
                log.warning(events[-1])
                progress(stage, done / n_windows, events[-1])
                continue
            done = stop
            progress(stage, done / n_windows, f"{done}/{n_windows} patches")
    assert stitcher is not None
    image, maps = stitcher.result(zoom_t)
    crop = (slice(None),) + tuple(slice(0, n * z) for n, z in zip(true_shape, zoom_t))
    image_np = image[crop].cpu().numpy()
    maps_np = {k: v[(Ellipsis,) + crop[1:]].cpu().numpy() for k, v in maps.items()}
    tiling = (f"{reason}: {n_windows} windows of {'x'.join(map(str, patch))} voxels, overlap {config.overlap:g}, "
              f"{config.blend} blending")
    return EngineOutput(image_np, maps_np, str(dev), batch, n_windows, events, "sliding", tiling)
