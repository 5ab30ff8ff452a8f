"""REMIx training losses: each term by hand or by an independent computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.remix.losses import CompositeLoss, correlation_loss, gradient_mae, mae, ssim, ssim_loss


def rand(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, generator=g)


def test_every_term_is_zero_for_a_perfect_prediction() -> None:
    x = rand(2, 1, 12, 12, 12)
    for fn in (mae, ssim_loss, gradient_mae, correlation_loss):
        assert float(fn(x, x.clone())) == pytest.approx(0.0, abs=1e-6)


def test_mae_by_hand() -> None:
    t = torch.zeros(1, 1, 2, 2, 2)
    p = t.clone()
    p[0, 0, 0, 0, 0] = 4.0
    p[0, 0, 1, 1, 1] = -2.0
    assert float(mae(p, t)) == pytest.approx(6.0 / 8)


def test_gradient_mae_ignores_offsets_but_not_edges() -> None:
    t = rand(1, 1, 8, 8, 8)
    assert float(gradient_mae(t + 3.0, t)) == pytest.approx(0.0, abs=1e-6)
    # a ramp along I only: differences 1 along I, 0 elsewhere -> mean over axes = (1 + 0 + 0) / 3
    ramp = torch.arange(8.0).expand(1, 1, 8, 8, 8)
    assert float(gradient_mae(ramp, torch.zeros_like(ramp))) == pytest.approx(1.0 / 3)


def test_correlation_is_invariant_to_gain_and_offset() -> None:
    t = rand(3, 1, 8, 8, 8)
    assert float(correlation_loss(2.5 * t + 7.0, t)) == pytest.approx(0.0, abs=1e-5)
    assert float(correlation_loss(-t, t)) == pytest.approx(2.0, abs=1e-5)
    # independent numpy Pearson
    p = rand(1, 1, 8, 8, 8, seed=1)
    r = np.corrcoef(p.numpy().ravel(), t[:1].numpy().ravel())[0, 1]
    assert float(correlation_loss(p, t[:1])) == pytest.approx(1 - r, abs=1e-5)


def test_ssim_matches_a_direct_computation_and_falls_with_noise() -> None:
    from scipy import ndimage

    t = rand(1, 1, 16, 16, 16)
    p = t + 0.1 * rand(1, 1, 16, 16, 16, seed=3)
    # direct computation: Gaussian sigma 1.5 truncated at 3 sigma (radius 5), valid region only
    def blur(a):
        return ndimage.gaussian_filter(a, 1.5, truncate=3.0, mode="constant")[5:-5, 5:-5, 5:-5]
    a, b = t.numpy()[0, 0].astype(np.float64), p.numpy()[0, 0].astype(np.float64)
    mu_a, mu_b = blur(a), blur(b)
    va, vb, cov = blur(a * a) - mu_a ** 2, blur(b * b) - mu_b ** 2, blur(a * b) - mu_a * mu_b
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    ref = ((2 * mu_a * mu_b + c1) * (2 * cov + c2) / ((mu_a ** 2 + mu_b ** 2 + c1) * (va + vb + c2))).mean()
    assert float(ssim(p, t)) == pytest.approx(ref, abs=1e-4)
    noisier = t + 0.3 * rand(1, 1, 16, 16, 16, seed=3)
    assert float(ssim_loss(noisier, t)) > float(ssim_loss(p, t)) > 0


def test_ssim_refuses_patches_smaller_than_its_window() -> None:
    with pytest.raises(ValueError, match="window"):
        ssim(rand(1, 1, 8, 8, 8), rand(1, 1, 8, 8, 8))


def test_composite_loss_weights_and_gradients() -> None:
    t = rand(2, 1, 12, 12, 12)
    p = (t + 0.2 * rand(2, 1, 12, 12, 12, seed=5)).requires_grad_(True)
    loss = CompositeLoss({"mae": 2.0, "ssim": 1.0, "gradient": 0.5, "correlation": 0.0})
    total, parts = loss(p, t)
    assert set(parts) == {"mae", "ssim", "gradient"}  # zero weight: not computed
    assert float(total.detach()) == pytest.approx(2 * parts["mae"] + parts["ssim"] + 0.5 * parts["gradient"], rel=1e-5)
    total.backward()
    assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


@pytest.mark.parametrize("weights", [{"mse": 1.0}, {"mae": -1.0}, {"mae": 0.0}, {"mae": float("nan")}])
def test_bad_weights_are_refused(weights) -> None:
    with pytest.raises(ValueError):
        CompositeLoss(weights)


def test_shape_mismatch_is_refused() -> None:
    with pytest.raises(ValueError, match="shape"):
        mae(rand(1, 1, 4, 4, 4), rand(1, 1, 4, 4, 5))
