"""What the methods that refine a cubic resampling share (REMIx, MoEDiff-SR):
the target grid, and each frame resampled onto it and normalised.

The target grid: ``options.extra["target_grid"]`` (a :class:`Grid`, e.g. a
reference scan's) when given; else the input's axes and extent with
``target_spacing`` mm voxels (default ``default_spacing``), or ``scale`` when
given.  Intensities: each frame is divided by its robust maximum (the
``percentile`` of its positive voxels after resampling), as in training; the
scales are returned so that the method multiplies them back.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from SuperResMoELib.core.errors import InputError
from SuperResMoELib.core.progress import CancelToken, ProgressCallback
from SuperResMoELib.core.volume import Grid, Volume
from SuperResMoELib.methods.base import EnhanceOptions, output_grid


def target_grid(volume: Volume, options: EnhanceOptions | None, default_spacing: float) -> Grid:
    """The grid the input is resampled onto (see the module docstring).

    Raises:
        InputError: a ``target_grid`` that is not a :class:`Grid`.
    """
    opts = options or EnhanceOptions()
    given = opts.extra.get("target_grid") if opts.extra else None
    if given is not None:
        if not isinstance(given, Grid):
            raise InputError(f"target_grid must be a Grid, got {type(given).__name__}")
        return given
    if opts.target_spacing is None and opts.scale is None:
        opts = dataclasses.replace(opts, target_spacing=default_spacing)
    return output_grid(volume.grid, opts)


def normalised_on_target(frames: np.ndarray, source: Grid, target: Grid, percentile: float,
                         progress: ProgressCallback, cancel: CancelToken) -> tuple[np.ndarray, list[float], list[str]]:
    """Each frame resampled (cubic) onto ``target`` and divided by its robust maximum.

    Args:
        frames: ``(N, K, J, I)`` voxels on ``source`` (user units).

    Returns:
        ``(resampled (N, K', J', I') float32, scales (N,), events)``; a frame
        without positive voxels keeps its resampling (scale 0, an event says so).
    """
    from SuperResMoELib.core.geometry import resample_array
    from SuperResMoELib.core.intensity import robust_max
    from SuperResMoELib.methods.driver import frame_prefix

    n_frames = len(frames)
    resampled = np.empty((n_frames,) + target.shape, np.float32)
    scales: list[float] = []
    events: list[str] = []
    for n, frame in enumerate(frames):
        cancel.check()
        prefix = frame_prefix([n], n_frames)
        progress("resample", n / n_frames, prefix + "cubic resampling to the target grid")
        resampled[n] = resample_array(frame, source, target, "cubic")
        scales.append(robust_max(resampled[n], percentile))
        if scales[-1] > 0:
            resampled[n] /= scales[-1]
        else:
            events.append(f"{prefix}no positive voxels: the cubic resampling is returned unchanged")
    progress("resample", 1.0, f"{n_frames} frame(s) on the target grid")
    return resampled, scales, events
