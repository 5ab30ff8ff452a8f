"""Training losses for 3D super-resolution (REMIx, paper 002 section 2).

Every function takes ``pred`` and ``target`` of shape ``(B, C, K, J, I)`` in
the network's (normalised) intensity units and returns a scalar tensor that is
0 for a perfect prediction:

* :func:`mae` - mean absolute error;
* :func:`ssim_loss` - ``1 - SSIM`` with a separable Gaussian window (the SSIM of
  :func:`SuperResMoELib.evaluation.metrics.ssim3d`, differentiable, per patch);
* :func:`gradient_mae` - mean absolute error of the forward differences along
  K, J and I (edges must match, not only intensities);
* :func:`correlation_loss` - ``1 - Pearson correlation`` per patch (the
  intensity-independent structure term).

:class:`CompositeLoss` sums them with weights taken from a config.
"""

from __future__ import annotations

import math
from typing import Mapping

import torch
import torch.nn.functional as F

#: Loss terms a :class:`CompositeLoss` may weight.
TERMS: tuple[str, ...] = ("mae", "ssim", "gradient", "correlation")
#: Default SSIM constants (Wang et al. 2004) for images in ``[0, data_range]``.
SSIM_K1, SSIM_K2 = 0.01, 0.03
#: Default SSIM Gaussian window: sigma 1.5 voxels, truncated at 3 sigma (side 11).
SSIM_SIGMA: float = 1.5
SSIM_TRUNCATE: float = 3.0
#: Guards divisions by a vanishing variance.
EPS: float = 1e-8


def _check(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape or pred.ndim != 5:
        raise ValueError(f"losses need pred and target of one (B, C, K, J, I) shape, got "
                         f"{tuple(pred.shape)} and {tuple(target.shape)}")


def mae(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over all voxels."""
    _check(pred, target)
    return (pred - target).abs().mean()


def _gaussian_1d(sigma: float, truncate: float, device, dtype) -> torch.Tensor:
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    return g / g.sum()


def _blur(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter of ``(B, C, K, J, I)`` ('valid': no padding)."""
    c = x.shape[1]
    n = g.numel()
    for axis in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = n
        x = F.conv3d(x, g.view(shape).expand(c, 1, *shape[2:]).contiguous(), groups=c)
    return x


def ssim(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0,
         sigma: float = SSIM_SIGMA, truncate: float = SSIM_TRUNCATE) -> torch.Tensor:
    """Mean SSIM over the valid window positions of every patch (scalar).

    Each spatial side must be at least the window side ``2 int(truncate sigma
    + 0.5) + 1`` (11 by default).
    """
    _check(pred, target)
    g = _gaussian_1d(sigma, truncate, pred.device, pred.dtype)
    if min(pred.shape[2:]) < g.numel():
        raise ValueError(f"SSIM window of {g.numel()} voxels does not fit patches of {tuple(pred.shape[2:])}")
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    mu_p, mu_t = _blur(pred, g), _blur(target, g)
    var_p = _blur(pred * pred, g) - mu_p ** 2
    var_t = _blur(target * target, g) - mu_t ** 2
    cov = _blur(pred * target, g) - mu_p * mu_t
    num = (2 * mu_p * mu_t + c1) * (2 * cov + c2)
    den = (mu_p ** 2 + mu_t ** 2 + c1) * (var_p + var_t + c2)
    return (num / den).mean()


def ssim_loss(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """``1 - ssim(pred, target)``."""
    return 1.0 - ssim(pred, target, data_range)


def gradient_mae(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the three axes of the MAE between forward differences."""
    _check(pred, target)
    total = pred.new_zeros(())
    for dim in (2, 3, 4):
        dp = torch.diff(pred, dim=dim)
        dt = torch.diff(target, dim=dim)
        total = total + (dp - dt).abs().mean()
    return total / 3.0


def correlation_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``1 -`` the Pearson correlation of each patch, averaged over the batch.
    A constant patch (no variance) counts as uncorrelated with anything but
    contributes no gradient blow-up (variances are guarded by :data:`EPS`)."""
    _check(pred, target)
    p = pred.flatten(1)
    t = target.flatten(1)
    p = p - p.mean(dim=1, keepdim=True)
    t = t - t.mean(dim=1, keepdim=True)
    r = (p * t).sum(1) / torch.sqrt((p * p).sum(1) * (t * t).sum(1) + EPS)
    return (1.0 - r).mean()


_FUNCTIONS = {"mae": mae, "ssim": ssim_loss, "gradient": gradient_mae, "correlation": correlation_loss}


class CompositeLoss:
    """``sum_t weight[t] * term_t(pred, target)`` over the configured terms.

    Args:
        weights: term name (:data:`TERMS`) -> non-negative weight; terms with
            weight 0 are not computed.

    Calling it returns ``(total, {term: value})`` (values detached floats).
    """

    def __init__(self, weights: Mapping[str, float]) -> None:
        unknown = sorted(set(weights) - set(TERMS))
        if unknown:
            raise ValueError(f"unknown loss term(s) {unknown}; choose from {', '.join(TERMS)}")
        bad = {k: v for k, v in weights.items() if not (math.isfinite(float(v)) and float(v) >= 0)}
        if bad:
            raise ValueError(f"loss weights must be finite and >= 0, got {bad}")
        self.weights = {k: float(v) for k, v in weights.items() if float(v) > 0}
        if not self.weights:
            raise ValueError("at least one loss term needs a positive weight")

    def __call__(self, pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        total = pred.new_zeros(())
        parts: dict[str, float] = {}
        for name, w in self.weights.items():
            value = _FUNCTIONS[name](pred, target)
            parts[name] = float(value.detach())
            total = total + w * value
        return total, parts
