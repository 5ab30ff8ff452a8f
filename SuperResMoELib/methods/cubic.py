"""The baseline every method is compared with: cubic B-spline interpolation
(scipy ``ndimage``, order 3, prefiltered, edges extended) onto the SR grid."""

from __future__ import annotations

import time

import numpy as np

from SuperResMoELib.core.geometry import resample_array
from SuperResMoELib.core.progress import CancelToken, ProgressCallback, no_progress
from SuperResMoELib.core.volume import Volume
from SuperResMoELib.methods.base import EnhanceOptions, Method, Result, grid_info, prepare_array


class CubicMethod(Method):
    name = "cubic"
    title = "Cubic spline"
    description = "Cubic B-spline interpolation onto the finer grid (baseline, no training)."
    sample_kind = "any"

    def enhance(
        self,
        volume: Volume,
        options: EnhanceOptions | None = None,
        device: str = "auto",
        progress: ProgressCallback = no_progress,
        cancel: CancelToken | None = None,
    ) -> Result:
        """Interpolate each frame onto :func:`~.base.output_grid`; runs on the CPU."""
        opts = options or EnhanceOptions()
        cancel = cancel or CancelToken()
        t0 = time.perf_counter()
        arr = prepare_array(volume, opts.nonfinite)
        target = self.output_grid(volume, opts)
        frames = arr.reshape((-1,) + volume.spatial_shape)
        out = np.empty((frames.shape[0],) + target.shape, np.float32)
        for n, frame in enumerate(frames):
            cancel.check()
            out[n] = resample_array(frame, volume.grid, target, "cubic")
            progress("enhance", (n + 1) / len(frames), f"frame {n + 1}/{len(frames)}")
        out = out.reshape(arr.shape[:-3] + target.shape)
        sr = volume.with_array(out, target.ijk_to_ras, name=f"{volume.name}_cubic" if volume.name else "cubic")
        info = {"method": self.name, "device": "cpu", "seconds": time.perf_counter() - t0,
                **grid_info(volume.grid, target)}
        return Result(sr, {}, info)
