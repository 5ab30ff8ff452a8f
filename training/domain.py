"""The domain of the training inputs, written into every exported manifest
(:mod:`SuperResMoELib.checkpoints.domain`): inputs far outside it get a
warning at inference.

* SS-MoE: the LR inputs' voxel sizes and the per-frame robust maxima (the
  network keeps the user's units, so intensities matter) of the training
  subjects, read from the same source the patch library came from;
* REMIx (and MoEDiff-SR): the voxel sizes its drawn acquisitions can have (any axis,
  any orientation); intensities are normalised per image, so none is stored.

``python -m training domain --checkpoints DIR`` writes the domain into
manifests exported before domains existed (the bundled ones).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from SuperResMoELib.checkpoints.domain import describe_domain
from SuperResMoELib.core.intensity import robust_max

#: Frames per subject read to measure the intensity range (spread over the protocol).
DOMAIN_FRAMES_PER_SUBJECT: int = 16


def ssmoe_domain(source: Any, task: str, subjects: Sequence[int]) -> dict[str, Any]:
    """The domain of SS-MoE training inputs: the LR volumes of ``subjects`` for ``task``."""
    n_rows = len(source.table())
    rows = np.unique(np.linspace(0, n_rows - 1, min(DOMAIN_FRAMES_PER_SUBJECT, n_rows)).round().astype(int))
    spacings, maxima = [], []
    for s in subjects:
        lr, _ = source.pair(int(s), rows, task)
        spacings.append(lr.grid.spacing)
        maxima += [robust_max(np.asarray(f)) for f in np.asarray(lr.array).reshape((-1,) + lr.spatial_shape)]
    return describe_domain(spacings, maxima, dims=(3, 4),
                           note=f"LR inputs of {getattr(source, 'description', 'the training data')}, task {task}")


def remix_domain(degradation: Any) -> dict[str, Any]:
    """The voxel sizes REMIx's drawn acquisitions span (in-plane range, and
    slice spacings from the smallest to the largest voxel volume), on any axis."""
    lo_ip, hi_ip = (float(v) for v in degradation.in_plane_mm)
    v_min = float(degradation.min_voxel_volume)
    v_max = float(max(degradation.bins)) + float(degradation.bin_halfwidth)
    smallest = min(lo_ip, v_min / hi_ip ** 2)
    largest = max(hi_ip, v_max / lo_ip ** 2)
    return describe_domain([[smallest] * 3, [largest] * 3], None, dims=(3, 4),
                           note="drawn clinical acquisitions (any orientation); intensities normalised per image")


def moediff_domain(degradation: Any) -> dict[str, Any]:
    """The voxel sizes MoEDiff-SR's drawn 3T-like and thick-slice cases span
    (the HR sample grid is 1 mm, so a factor is a spacing), on any axis."""
    smallest = min(float(degradation.factor[0]), float(degradation.thick_in_plane_factor[0]))
    largest = max(float(degradation.factor[1]), float(degradation.thick_mm[1]))
    return describe_domain([[smallest] * 3, [largest] * 3], None, dims=(3, 4),
                           note="drawn 3T-like and thick-slice acquisitions of 1 mm sample subjects; "
                                "intensities normalised per image")
