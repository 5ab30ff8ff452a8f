"""A tissue segmentation the project can run anywhere: a three-class Gaussian
mixture on T1 intensities (CSF < GM < WM) inside a brain mask.

REMIx evaluates reconstructions by the Dice overlap of a segmentation of the
SR image with a segmentation of the HR image (paper 002 used SynthSeg, which
cannot be installed here).  This classifier is deliberately simple: each image
is segmented on its own (the mixture is fitted to that image), so blur that
mixes tissues shows up as lost overlap, exactly what the evaluation measures.

Labels: 0 outside the mask, 1 CSF, 2 GM, 3 WM (:data:`TISSUE_LABELS`).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from SuperResMoELib.core.errors import InputError
from SuperResMoELib.core.intensity import robust_max

#: Label value -> tissue name.
TISSUE_LABELS: dict[int, str] = {1: "CSF", 2: "GM", 3: "WM"}
#: The class means start evenly spaced between these quantiles of the masked
#: intensities (robust to classes of very different sizes).
INIT_QUANTILES: tuple[float, float] = (0.02, 0.98)
#: EM iterations (at most) and the convergence tolerance on the log-likelihood.
EM_ITERATIONS: int = 100
EM_TOLERANCE: float = 1e-7
#: Histogram bins of the EM fit.
HISTOGRAM_BINS: int = 4096
#: Brain mask: voxels above this fraction of the robust maximum (then filled).
MASK_FRACTION: float = 0.05
#: Smallest variance of a class, relative to the intensity variance.
MIN_VARIANCE_FRACTION: float = 1e-4


def brain_mask(array: np.ndarray, fraction: float = MASK_FRACTION) -> np.ndarray:
    """``(K, J, I)`` bool: voxels above ``fraction`` x the robust maximum of a
    skull-stripped T1, holes filled, largest connected component kept."""
    a = np.asarray(array, dtype=np.float32)
    if a.ndim != 3:
        raise InputError(f"brain_mask needs a 3D array, got shape {a.shape}")
    m = a > fraction * robust_max(a)
    if not m.any():
        raise InputError("brain_mask: the image has no voxel above the threshold (empty or non-positive image)")
    lab, n = ndimage.label(m)
    if n > 1:
        sizes = ndimage.sum_labels(m, lab, index=np.arange(1, n + 1))
        m = lab == (1 + int(np.argmax(sizes)))
    return ndimage.binary_fill_holes(m)


def fit_gmm(values: np.ndarray, n_classes: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """EM fit of a 1D Gaussian mixture.

    The EM runs on a histogram of :data:`HISTOGRAM_BINS` bins (each bin centre
    weighted by its count): the same fixed point as on the raw voxels up to
    the bin width, and independent of the number of voxels in time.

    Args:
        values: ``(N,)`` intensities.

    Returns:
        ``(means, variances, weights)``, each ``(n_classes,)``, sorted by mean.
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size < 10 * n_classes:
        raise InputError(f"a {n_classes}-class mixture needs at least {10 * n_classes} voxels, got {x.size}")
    lo, hi = np.quantile(x, INIT_QUANTILES)
    mu = np.linspace(lo, hi, n_classes)
    counts, edges = np.histogram(x, bins=HISTOGRAM_BINS)
    keep = counts > 0
    c = 0.5 * (edges[:-1] + edges[1:])[keep]
    h = counts[keep].astype(np.float64)
    total = float(h.sum())
    floor = max(MIN_VARIANCE_FRACTION * float(x.var()), 1e-12)
    var = np.full(n_classes, max(float(x.var()) / n_classes ** 2, floor))
    w = np.full(n_classes, 1.0 / n_classes)
    last = -np.inf
    for _ in range(EM_ITERATIONS):
        logp = -0.5 * ((c[:, None] - mu) ** 2 / var + np.log(2 * np.pi * var)) + np.log(w)
        mx = logp.max(axis=1, keepdims=True)
        post = np.exp(logp - mx)
        s = post.sum(axis=1, keepdims=True)
        ll = float((h * (mx[:, 0] + np.log(s[:, 0]))).sum() / total)
        post *= h[:, None] / s
        nk = post.sum(axis=0) + 1e-12
        w = nk / nk.sum()
        mu = (post * c[:, None]).sum(axis=0) / nk
        var = np.maximum((post * (c[:, None] - mu) ** 2).sum(axis=0) / nk, floor)
        if abs(ll - last) < EM_TOLERANCE * max(1.0, abs(ll)):
            break
        last = ll
    order = np.argsort(mu)
    return mu[order], var[order], w[order]


def segment_tissues(array: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``(K, J, I)`` uint8 labels (:data:`TISSUE_LABELS`) of a T1 image: a
    three-class mixture fitted to the voxels in ``mask``, each voxel given the
    class of highest posterior."""
    a = np.asarray(array, dtype=np.float64)
    m = np.asarray(mask, dtype=bool)
    if a.shape != m.shape or a.ndim != 3:
        raise InputError(f"segment_tissues needs a 3D image and a mask of one shape, got {a.shape} and {m.shape}")
    x = a[m]
    mu, var, w = fit_gmm(x, 3)
    logp = -0.5 * ((x[:, None] - mu) ** 2 / var + np.log(var)) + np.log(w)
    out = np.zeros(a.shape, dtype=np.uint8)
    out[m] = (np.argmax(logp, axis=1) + 1).astype(np.uint8)
    return out


def dice(reference: np.ndarray, prediction: np.ndarray, labels: dict[int, str] | None = None) -> dict[str, float]:
    """Dice ``2|A∩B| / (|A|+|B|)`` per label (name -> value) and their mean
    (``"mean"``); a label absent from both images scores 1."""
    ref = np.asarray(reference)
    pred = np.asarray(prediction)
    if ref.shape != pred.shape:
        raise InputError(f"dice needs label images of one shape, got {ref.shape} and {pred.shape}")
    labels = labels or TISSUE_LABELS
    out: dict[str, float] = {}
    for value, name in labels.items():
        a, b = ref == value, pred == value
        denom = int(a.sum()) + int(b.sum())
        out[name] = 1.0 if denom == 0 else 2.0 * int((a & b).sum()) / denom
    out["mean"] = float(np.mean([out[n] for n in labels.values()]))
    return out
