"""Tissue segmentation (3-class Gaussian mixture), brain mask and Dice."""

from __future__ import annotations

import numpy as np
import pytest

from SuperResMoELib.core.errors import InputError
from SuperResMoELib.evaluation.segmentation import brain_mask, dice, fit_gmm, segment_tissues


def phantom(noise: float = 0.03, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Nested spheres: WM core (1.0), GM shell (0.6), CSF shell (0.25), zero outside."""
    k, j, i = np.meshgrid(*[np.arange(40.0)] * 3, indexing="ij")
    r = np.sqrt((k - 19.5) ** 2 + (j - 19.5) ** 2 + (i - 19.5) ** 2)
    labels = np.zeros(r.shape, np.uint8)
    labels[r < 18] = 1
    labels[r < 15] = 2
    labels[r < 9] = 3
    img = np.choose(labels, [0.0, 0.25, 0.6, 1.0]).astype(np.float32)
    img += np.random.default_rng(seed).normal(0, noise, img.shape).astype(np.float32) * (labels > 0)
    return img, labels


def test_gmm_recovers_the_class_means() -> None:
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(m, 0.05, n) for m, n in ((0.2, 3000), (0.6, 6000), (1.0, 4000))])
    mu, var, w = fit_gmm(x)
    np.testing.assert_allclose(mu, [0.2, 0.6, 1.0], atol=0.01)
    np.testing.assert_allclose(np.sqrt(var), 0.05, atol=0.01)
    np.testing.assert_allclose(w, np.array([3, 6, 4]) / 13, atol=0.02)


def test_segmentation_of_a_phantom_and_its_dice() -> None:
    img, truth = phantom()
    mask = brain_mask(img)
    assert (mask == (truth > 0)).mean() > 0.999
    seg = segment_tissues(img, mask)
    d = dice(truth, seg)
    assert min(d["CSF"], d["GM"], d["WM"]) > 0.97 and d["mean"] > 0.98
    # blur mixes tissues at their borders: the overlap falls
    from scipy import ndimage

    blurred = ndimage.gaussian_filter(img, 2.0)
    assert dice(truth, segment_tissues(blurred, mask))["mean"] < d["mean"] - 0.02


def test_dice_by_hand() -> None:
    a = np.array([0, 1, 1, 2, 2, 3])
    b = np.array([0, 1, 2, 2, 2, 0])
    d = dice(a, b)
    assert d["CSF"] == pytest.approx(2 * 1 / 3)
    assert d["GM"] == pytest.approx(2 * 2 / 5)
    assert d["WM"] == pytest.approx(0.0)
    assert d["mean"] == pytest.approx((2 / 3 + 4 / 5 + 0) / 3)
    assert dice(np.zeros(4), np.zeros(4))["mean"] == 1.0  # absent everywhere


def test_bad_inputs() -> None:
    with pytest.raises(InputError, match="no voxel"):
        brain_mask(np.zeros((4, 4, 4)))
    with pytest.raises(InputError, match="one shape"):
        dice(np.zeros(3), np.zeros(4))
    with pytest.raises(InputError, match="at least"):
        fit_gmm(np.ones(5))
