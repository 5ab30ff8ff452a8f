"""Halo-crop tiling: exact, cheap inference of fully convolutional networks.

A predictor that declares a :class:`~SuperResMoELib.engine.windows.HaloSpec`
(attribute ``halo_spec``: its receptive field's reach, the multiple its sizes
must have, its memory per voxel) is run on tiles as large as the memory budget
allows - the whole volume when it fits.  Each tile is read with a halo of the
receptive field's reach around its core and only the core's output is kept,
so every kept voxel saw exactly the input a whole-volume pass would have shown
it: the result equals one whole-volume pass to float tolerance, and costs it
plus the halos (nothing when the volume fits).

Geometry (KJI order): the input ``(C, K, J, I)`` is first padded by edge
replication to multiples of ``spec.multiple`` (as a whole-volume pass of such a
network must be); tiles start at multiples of it, so they see the same pooling
cells as the whole volume.  Input core ``[a, b)`` maps to output ``[a*z, b*z)``
for the integer zoom ``z``; the padding is cropped from the result.

Out of memory: the budget is halved and the tiles planned again (each event
noted); when even the smallest tile fails on a GPU the run continues on the
CPU; on the CPU it stops with :class:`~SuperResMoELib.core.errors.ResourceError`.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
import torch.nn.functional as F

from SuperResMoELib.core.errors import InputError
from SuperResMoELib.core.progress import CancelToken, ProgressCallback
from SuperResMoELib.engine.devices import (
    autocast_context,
    free_device_memory,
    move_predictor,
    recover_from_out_of_memory,
    to_device,
)
from SuperResMoELib.engine.windows import EngineConfig, HaloSpec, Tile, default_memory_budget, plan_tiles

log = logging.getLogger("superresmoe.inference")


def describe_tiles(tiles: list[Tile], spec: HaloSpec, budget: int) -> str:
    """One sentence: how many tiles, how large, with which halo, within which budget."""
    if len(tiles) == 1 and tiles[0].read_start == tiles[0].core_start and tiles[0].read_stop == tiles[0].core_stop:
        return f"the whole volume ({'x'.join(map(str, tiles[0].read_shape))} voxels) in one pass"
    largest = max(tiles, key=lambda t: math.prod(t.read_shape)).read_shape
    return (f"{len(tiles)} tiles of up to {'x'.join(map(str, largest))} voxels with a halo of "
            f"{'x'.join(map(str, spec.halo))} (memory budget {budget / 2**20:.0f} MiB)")


def _tile_voxels(budget: int, spec: HaloSpec, items: int) -> int:
    return max(1, int(budget / (spec.bytes_per_voxel * max(1, items))))


def run_halo(
    x: torch.Tensor,
    predictor: Any,
    zoom: tuple[int, int, int],
    spec: HaloSpec,
    config: EngineConfig,
    device: torch.device,
    progress: ProgressCallback,
    cancel: CancelToken | None,
    stage: str,
    reason: str,
) -> Any:
    """Run ``predictor`` over ``x`` in halo-crop tiles (see the module docstring).

    Args:
        x: ``(C, K, J, I)`` float32 CPU input (not modified); the ``C``
            channels go through the predictor together, as one ``(1, C, ...)``
            window.
        predictor: ``(1, C, k, j, i) -> (1, C_out, k*zk, j*zj, i*zi)`` for any
            sizes that are multiples of ``spec.multiple`` (or ``(output, aux)``
            with ``(1,)``/``(1, A)`` values, painted over each tile's core).
        zoom: integer ``(zk, zj, zi)``.
        spec: the predictor's :class:`HaloSpec`.
        config: ``memory_budget``, ``mixed_precision``, ``amp_dtype``.
        reason: why this strategy runs (for :attr:`EngineOutput.tiling`).

    Returns:
        :class:`~SuperResMoELib.engine.sliding.EngineOutput`.
    """
    from SuperResMoELib.engine.sliding import EngineOutput

    cancel = cancel or CancelToken()
    true_shape = tuple(int(n) for n in x.shape[1:])
    pad = [(-n) % m for n, m in zip(true_shape, spec.multiple)]
    if any(pad):
        x = F.pad(x[None], (0, pad[2], 0, pad[1], 0, pad[0]), mode="replicate")[0]
    shape = tuple(int(n) for n in x.shape[1:])
    items = int(x.shape[0])
    budget = config.memory_budget or default_memory_budget(device.type, free_device_memory(device))
    events: list[str] = []
    out: torch.Tensor | None = None
    maps: dict[str, torch.Tensor] = {}
    flat: set[str] = set()
    move_predictor(predictor, device)
    dev = device
    while True:
        tiles = plan_tiles(shape, spec, _tile_voxels(budget, spec, items))  # type: ignore[arg-type]
        described = describe_tiles(tiles, spec, budget)
        progress(stage, 0.0, f"{described} on {dev}")
        try:
            with torch.inference_mode():
                for n, tile in enumerate(tiles):
                    cancel.check()
                    region = tuple(slice(a, b) for a, b in zip(tile.read_start, tile.read_stop))
                    with autocast_context(dev, config.mixed_precision, config.amp_dtype):
                        res = predictor(to_device(x[(slice(None),) + region][None], dev))
                    y, aux = res if isinstance(res, tuple) else (res, {})
                    want = tuple(s * z for s, z in zip(tile.read_shape, zoom))
                    if tuple(y.shape[-3:]) != want or y.shape[0] != 1:
                        raise ValueError(f"predictor returned {tuple(y.shape)} for a tile of {tile.read_shape}; "
                                         f"expected (1, C_out) + {want}")
                    if out is None:
                        out = torch.empty((int(y.shape[1]),) + tuple(s * z for s, z in zip(shape, zoom)),
                                          dtype=torch.float32)
                    src = tuple(slice((c0 - r0) * z, (c1 - r0) * z) for c0, c1, r0, z in
                                zip(tile.core_start, tile.core_stop, tile.read_start, zoom))
                    dst = tuple(slice(c0 * z, c1 * z) for c0, c1, z in zip(tile.core_start, tile.core_stop, zoom))
                    out[(slice(None),) + dst] = y[0][(slice(None),) + src].to("cpu", torch.float32)
                    for name, v in aux.items():
                        if v.ndim == 1:
                            flat.add(name)
                        v = v.detach().reshape(-1).to("cpu", torch.float32)
                        m = maps.setdefault(name, torch.zeros((v.shape[0],) + out.shape[1:]))
                        m[(slice(None),) + dst] = v[:, None, None, None]
                    progress(stage, (n + 1) / len(tiles), f"{n + 1}/{len(tiles)} tiles")
            break
        except Exception as exc:  # noqa: BLE001 - only out-of-memory is handled
            def smaller_tiles() -> str | None:
                nonlocal budget
                smallest = len(tiles) > 1 and all(
                    (b - a) <= m for t in tiles for a, b, m in zip(t.core_start, t.core_stop, spec.multiple))
                try:
                    if smallest:
                        return None
                    plan_tiles(shape, spec, _tile_voxels(budget // 2, spec, items))  # type: ignore[arg-type]
                except InputError:
                    return None
                budget //= 2
                return f"out of memory on {dev}: retrying with a memory budget of {budget / 2**20:.0f} MiB"

            before = dev
            dev, note = recover_from_out_of_memory(exc, dev, predictor, smaller_tiles, "the smallest halo-crop tile",
                                                   "free memory or use the sliding strategy with a smaller patch size")
            del exc
            if dev != before:
                budget = config.memory_budget or default_memory_budget("cpu")
            events.append(note)
            log.warning(events[-1])
            progress(stage, 0.0, events[-1])
    assert out is not None
    crop = tuple(slice(0, n * z) for n, z in zip(true_shape, zoom))
    image = out[(slice(None),) + crop].numpy()
    maps_np = {k: (v[0] if k in flat else v)[(Ellipsis,) + crop].numpy() for k, v in maps.items()}
    return EngineOutput(image, maps_np, str(dev), 1, len(tiles), events, "halo", f"{reason}: {described}")
