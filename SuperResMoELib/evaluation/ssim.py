"""Structural similarity on the torch side: separable Gaussian windows, the
same numbers as :func:`skimage.metrics.structural_similarity` with
``gaussian_weights=True, use_sample_covariance=False`` (to 1e-4; tested), in
a fraction of its time and memory.

scikit-image filters with ``mode="reflect"`` and then averages the SSIM map
without the ``(window - 1) / 2`` voxels at each border, exactly the voxels whose
window reaches past the edge; so a *valid* convolution (no padding) gives the
same averaged map.  Variances and the covariance are computed on intensities
centred by their global means (``E[(x-c)^2] - E[x-c]^2`` does not depend on
``c``), which keeps float32 accurate; means keep their offset.

Shapes: a 3D pair ``(K, J, I)``, or a batch of 2D slices ``(N, H, W)`` whose
per-slice means are returned.
"""

from __future__ import annotations

import math

import numpy as np

#: scikit-image's SSIM constants.
K1, K2 = 0.01, 0.03


def gaussian_kernel(sigma: float, truncate: float) -> np.ndarray:
    """scipy's 1D Gaussian taps: radius ``int(truncate * sigma + 0.5)``, normalised to sum 1."""
    radius = int(truncate * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def _blur_valid(x, kernel, axes: tuple[int, ...]):
    """Separable valid Gaussian of ``x (1, C, K, J, I)`` along the spatial ``axes``
    (0, 1, 2 = K, J, I), per channel (grouped 3D convolutions: a 2D stack of slices
    is blurred along J and I only, on the same fast path)."""
    import torch.nn.functional as F

    c = x.shape[1]
    length = kernel.numel()
    for axis in axes:
        shape = [1, 1, 1]
        shape[axis] = length
        w = kernel.reshape(1, 1, *shape).expand(c, 1, *shape).contiguous()
        x = F.conv3d(x, w, groups=c)
    return x


def ssim_map_mean(reference: np.ndarray, prediction: np.ndarray, data_range: float, sigma: float,
                  truncate: float, ndim: int) -> np.ndarray:
    """Mean SSIM (scikit-image's definition) over the interior: one value for a
    3D pair (``ndim=3``), one per slice for ``(N, H, W)`` stacks (``ndim=2``).

    Args:
        reference, prediction: same-shape float arrays.
        data_range: the intensity range ``R`` (``C1 = (K1 R)^2``, ``C2 = (K2 R)^2``).
    """
    import torch

    def tensor(a: np.ndarray):
        a = np.asarray(a, dtype=np.float64)
        return torch.from_numpy(a if a.flags.writeable else a.copy())

    with torch.no_grad():
        x, y = tensor(reference), tensor(prediction)
        cx, cy = float(x.mean()), float(y.mean())
        x, y = x - cx, y - cy
        scale = max(float(x.abs().max()), float(y.abs().max()), 1e-30)
        # unit-sized, centred float32; C1, C2 and the means are scaled by the same factor
        x, y = (x / scale).float(), (y / scale).float()
        x, y = x[None, None], y[None, None]  # (1, 1, K, J, I); slices: K = N
        kernel = torch.from_numpy(gaussian_kernel(sigma, truncate).astype(np.float32))
        stack = torch.cat([x, y, x * x, y * y, x * y], dim=1)
        del x, y
        m = _blur_valid(stack, kernel, (0, 1, 2) if ndim == 3 else (1, 2))
        del stack
        mx, my, mxx, myy, mxy = m[0].unbind(dim=0)
        vx = mxx - mx * mx
        vy = myy - my * my
        vxy = mxy - mx * my
        ux = mx + cx / scale
        uy = my + cy / scale
        r = data_range / scale
        c1, c2 = (K1 * r) ** 2, (K2 * r) ** 2
        s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
        if ndim == 2:
            return s.reshape(s.shape[0], -1).double().mean(dim=1).numpy()
        return s.double().mean().reshape(1).numpy()


def valid_size(shape: tuple[int, ...], sigma: float, truncate: float) -> bool:
    """Whether every axis is at least the window (the interior is not empty)."""
    return min(shape) >= 2 * int(truncate * sigma + 0.5) + 1 and math.prod(shape) > 0
