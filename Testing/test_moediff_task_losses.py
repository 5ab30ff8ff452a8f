"""MoEDiff-SR task losses: zero for identical latents, sensitive to what each expert is for."""

from __future__ import annotations

import pytest
import torch

from training.moediff.task_losses import perceptual_loss, sobel, sobel_fourier_loss, stft_loss


def latent(seed: int = 0, shape=(2, 4, 32, 32)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def test_zero_for_identical_latents_and_positive_otherwise() -> None:
    z = latent()
    for loss in (sobel_fourier_loss, stft_loss):
        assert float(loss(z, z)) == pytest.approx(0.0, abs=1e-10)
        assert float(loss(z, latent(1))) > 0.1
    assert float(perceptual_loss(z, z, torch.tanh)) == pytest.approx(0.0, abs=1e-12)


def test_sobel_of_a_ramp_and_a_constant() -> None:
    x = torch.arange(8.0).repeat(1, 1, 8, 1)  # a ramp of slope 1 along w
    g = sobel(x)
    torch.testing.assert_close(g[..., 2:-2, 2:-2], torch.full((1, 1, 4, 4), 8.0))  # Sobel gain 8 on a unit slope
    assert float(sobel(torch.ones(1, 1, 6, 6)).max()) < 1e-5


def test_amplitude_losses_ignore_a_circular_shift_the_mse_does_not() -> None:
    """Amplitude spectra are shift-invariant: the Fourier term of E2 sees texture, not position."""
    z = latent()
    shifted = torch.roll(z, shifts=(3, 5), dims=(2, 3))
    amp_part = sobel_fourier_loss(z, shifted) - torch.nn.functional.mse_loss(sobel(shifted), sobel(z))
    assert float(amp_part) == pytest.approx(0.0, abs=1e-9)
    assert float(torch.nn.functional.mse_loss(shifted, z)) > 1.0


def test_stft_windows_that_do_not_fit_are_skipped() -> None:
    small = latent(shape=(1, 2, 12, 12))
    assert float(stft_loss(small, latent(2, (1, 2, 12, 12)))) > 0  # only the 8-pixel windows fit
    with pytest.raises(ValueError, match="fits"):
        stft_loss(latent(shape=(1, 1, 6, 6)), latent(3, (1, 1, 6, 6)))
    with pytest.raises(ValueError, match="one shape"):
        stft_loss(small, latent())


def test_perceptual_gradient_reaches_only_the_estimate() -> None:
    z = latent()
    est = latent(4).requires_grad_(True)
    weight = torch.randn(4, 4, 1, 1, requires_grad=True)
    loss = perceptual_loss(z, est, lambda x: torch.nn.functional.conv2d(x, weight))
    loss.backward()
    assert est.grad is not None and float(est.grad.abs().sum()) > 0
