"""The experts' task losses of MoEDiff-SR (paper 003, Eq. 10-12), on latents
``(B, C, h, w)`` (the ground truth ``z0`` against an expert's estimate).

* E1 (Eq. 10): latent MSE plus a perceptual term ``||phi(z0) - phi(z0_hat)||^2``
  through a fixed feature extractor ``phi``.  The paper's pretrained VGG-16
  cannot be downloaded here; the caller passes a frozen network that runs
  offline (the plan: the project's own trained VQ-VAE decoder followed by
  its encoder's first stages), see :func:`perceptual_loss`.
* E2 (Eq. 11): Sobel gradients and Fourier spectra.  Both compare
  *amplitudes*: a complex spectrum difference equals the plain MSE by
  Parseval's theorem, so only amplitude (and gradient-magnitude) differences
  add emphasis on edges and high frequencies.
* E3 (Eq. 12): multi-scale STFT: Hann-windowed ``s x s`` windows (half
  overlapping) at ``s`` in (8, 16, 32), amplitude spectra compared per window;
  a window larger than the latent is skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

#: The paper's STFT window sizes (latent pixels).
STFT_WINDOWS: tuple[int, ...] = (8, 16, 32)


def _check(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(f"latents must both be (B, C, h, w) of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")


def sobel(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, h, w)`` Sobel gradient magnitude per channel (edge-replicated borders)."""
    k = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=x.dtype, device=x.device)
    c = x.shape[1]
    kx = k.expand(c, 1, 3, 3)
    ky = k.t().expand(c, 1, 3, 3)
    p = F.pad(x, (1, 1, 1, 1), mode="replicate")
    gx, gy = F.conv2d(p, kx, groups=c), F.conv2d(p, ky, groups=c)
    return torch.sqrt(gx ** 2 + gy ** 2 + 1e-12)


def amplitude(x: torch.Tensor) -> torch.Tensor:
    """``|FFT2(x)|`` per channel (orthonormal scaling)."""
    return torch.fft.fft2(x, norm="ortho").abs()


def sobel_fourier_loss(z0: torch.Tensor, z0_hat: torch.Tensor) -> torch.Tensor:
    """E2, Eq. 11: ``mse(sobel(z0), sobel(z0_hat)) + mse(|F z0|, |F z0_hat|)``."""
    _check(z0, z0_hat)
    return F.mse_loss(sobel(z0_hat), sobel(z0)) + F.mse_loss(amplitude(z0_hat), amplitude(z0))


def _windows(x: torch.Tensor, size: int) -> torch.Tensor:
    """``(B, C, n, size, size)`` Hann-weighted windows, stride ``size // 2``."""
    b, c = x.shape[:2]
    stride = max(1, size // 2)
    patches = x.unfold(2, size, stride).unfold(3, size, stride)  # (B, C, nh, nw, size, size)
    hann = torch.hann_window(size, periodic=False, dtype=x.dtype, device=x.device)
    return (patches * (hann[:, None] * hann[None, :])).reshape(b, c, -1, size, size)


def stft_loss(z0: torch.Tensor, z0_hat: torch.Tensor, windows: Sequence[int] = STFT_WINDOWS) -> torch.Tensor:
    """E3, Eq. 12: the sum over window sizes of the mean squared amplitude
    difference of the windows' 2D spectra (sizes above ``min(h, w)`` skipped;
    at least one size must fit)."""
    _check(z0, z0_hat)
    h, w = z0.shape[-2:]
    terms = [F.mse_loss(amplitude(_windows(z0_hat, s)), amplitude(_windows(z0, s))) for s in windows if s <= min(h, w)]
    if not terms:
        raise ValueError(f"no STFT window of {tuple(windows)} fits a {h}x{w} latent")
    return torch.stack(terms).sum()


def perceptual_loss(z0: torch.Tensor, z0_hat: torch.Tensor,
                    features: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """E1, Eq. 10: ``mse(z0, z0_hat) + mse(phi(z0), phi(z0_hat))`` with ``phi =
    features`` a frozen network (gradients flow through it to ``z0_hat`` only)."""
    _check(z0, z0_hat)
    with torch.no_grad():
        target = features(z0)
    return F.mse_loss(z0_hat, z0) + F.mse_loss(features(z0_hat), target)
