"""The out-of-generator qMRI head (see :mod:`training.outgen`): maps, its own
acquisition table, and the SS-MoE task pairs, as a data source the SS-MoE
evaluation reads like the sample subjects (``--data outgen``).

Maps on the ``qmri`` head's 2.5 mm grid (:mod:`.head`): tissue values
:data:`TISSUE_QMRI` mixed by fraction (PD and mean diffusivity by fraction,
T1 and T2* by relaxation *rate*); FA = the WM value times the WM fraction;
fibre direction = the least-varying axis (smallest eigenvector) of the WM
fraction's structure tensor.  Signal per row ``(g, b, TI, TE)``:
``SCALE PD |1 - 2 exp(-TI/T1) + exp(-TR/T1)| exp(-TE/T2*) exp(-b D(g))``
with the cylindrical tensor ``D(g) = l_perp + (l_par - l_perp) (g . v)^2``
(``l_par``, ``l_perp`` from MD and FA).  HR: Rician noise of 2.5 % of
white matter's reference signal inside the brain, 0 outside.  LR: the
noise-free signal through a Gaussian PSF of FWHM = the factor and sampled at
the block centres (:mod:`.acquisition`), Rician noise scaled by
``1 / sqrt(block voxels)`` (what averaging noisy voxels would leave).

Two sets (:data:`QMRI_SETS`) share this model: ``test`` (the ``qmri`` head,
:data:`TISSUE_QMRI`, a Gaussian PSF; the set every table reports) and
``validation`` (the ``qmri_validation`` head in its own pose, its own tissue
values, table directions and noise, and the trapezoid slice profile), which
training may use for model selection (``library.validation = "outgen"``).
The validation set is not independent of the test set's *model* (the same
code, anatomy and signal equation), only of its values: say so beside any
table of a selected checkpoint.
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import numpy as np

from SuperResMoELib.core.geometry import scaled_grid
from SuperResMoELib.core.tasks import sr_task
from SuperResMoELib.core.volume import AcquisitionTable, Grid, Volume

from dataclasses import dataclass
from typing import Callable

from .acquisition import crop_whole, gaussian, sample_slices, trapezoid
from .head import head_fractions

#: Tissue values of this set (3 T; PD relative to CSF, ms, mm^2/s) - other than the generator's.
TISSUE_QMRI: dict[str, dict[str, float]] = {
    "gm": {"PD": 0.78, "T1": 1550.0, "T2s": 60.0, "MD": 0.86e-3},
    "wm": {"PD": 0.66, "T1": 1000.0, "T2s": 48.0, "MD": 0.72e-3},
    "csf": {"PD": 1.00, "T1": 4300.0, "T2s": 400.0, "MD": 3.0e-3},
}
FA_WM = 0.5
TR_MS = 6000.0
#: The acquisition set: shells, echo times, inversion times (inside the training ranges, other values).
B_VALUES: tuple[float, ...] = (750.0, 1500.0, 2500.0)
TE_MS: tuple[float, ...] = (90.0, 115.0)
TI_MS: tuple[float, ...] = tuple(float(v) for v in np.round(np.geomspace(60.0, 6500.0, 12), 1))
N_DIRECTIONS = 36
NOISE_FRACTION = 0.025
SEED = 20261202
#: The validation set's tissue values: other than the test set's and the generator's.
TISSUE_VALIDATION: dict[str, dict[str, float]] = {
    "gm": {"PD": 0.83, "T1": 1250.0, "T2s": 72.0, "MD": 0.76e-3},
    "wm": {"PD": 0.72, "T1": 780.0, "T2s": 58.0, "MD": 0.66e-3},
    "csf": {"PD": 1.00, "T1": 3800.0, "T2s": 600.0, "MD": 3.1e-3},
}


@dataclass(frozen=True)
class QmriSet:
    """One qMRI head of this model (module docstring)."""

    head: str
    tissues: dict[str, dict[str, float]]
    fa_wm: float
    seed: int
    noise_fraction: float
    profile: Callable[[int], np.ndarray]


QMRI_SETS: dict[str, QmriSet] = {
    "test": QmriSet("qmri", TISSUE_QMRI, FA_WM, SEED, NOISE_FRACTION, gaussian),
    "validation": QmriSet("qmri_validation", TISSUE_VALIDATION, 0.42, SEED + 7, 0.018, trapezoid),
}


def acquisition_table(name: str = "test") -> AcquisitionTable:
    """96 rows ``gx gy gz b TI TE``: per (TE, TI) one b = 0 row and one row per
    shell, directions from 36 seeded uniform unit vectors in turn (the set's seed)."""
    rng = np.random.default_rng([QMRI_SETS[name].seed, 0])
    d = rng.standard_normal((N_DIRECTIONS, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    rows, c = [], 0
    for te in TE_MS:
        for ti in TI_MS:
            rows.append([0.0, 0.0, 0.0, 0.0, ti, te])
            for b in B_VALUES:
                g = d[c % N_DIRECTIONS]
                rows.append([g[0], g[1], g[2], b, ti, te])
                c += 1
    return AcquisitionTable(np.asarray(rows, np.float64))


def _reference_wm(tissues: dict[str, dict[str, float]] = TISSUE_QMRI) -> float:
    wm = tissues["wm"]
    ti, te = max(TI_MS), min(TE_MS)
    return wm["PD"] * abs(1 - 2 * math.exp(-ti / wm["T1"]) + math.exp(-TR_MS / wm["T1"])) * math.exp(-te / wm["T2s"])


#: Signal scale: white matter at b = 0, the longest TI and shortest TE near 600 (the data's units).
SCALE = 600.0 / _reference_wm()


@functools.lru_cache(maxsize=2)
def qmri_maps(name: str = "test") -> tuple[dict[str, np.ndarray], Grid]:
    """``{"PD", "T1", "T2s", "MD", "FA", "V1" (3, K, J, I) RAS}`` on the set's head's 2.5 mm grid."""
    from scipy import ndimage

    qset = QMRI_SETS[name]
    tissues = qset.tissues
    fr, grid = head_fractions(qset.head, 2.5)
    total = sum(fr.values())
    brain = total > 0.05
    w = {t: np.divide(fr[t], total, out=np.zeros_like(fr[t]), where=brain) for t in fr}
    maps = {"PD": sum(w[t] * tissues[t]["PD"] for t in w) * np.clip(total, 0, 1),
            "MD": sum(w[t] * tissues[t]["MD"] for t in w)}
    for key in ("T1", "T2s"):
        rate = sum(w[t] / tissues[t][key] for t in w)
        maps[key] = np.divide(1.0, rate, out=np.zeros_like(rate), where=brain)
    maps["FA"] = qset.fa_wm * w["wm"]
    grads = np.gradient(ndimage.gaussian_filter(fr["wm"].astype(np.float64), 1.0))  # along k, j, i
    g_ijk = np.stack(grads[::-1])  # along i, j, k (the grid is axis-aligned: RAS x, y, z up to sign)
    tensor = np.einsum("a...,b...->...ab", g_ijk, g_ijk)
    tensor = np.stack([ndimage.gaussian_filter(tensor[..., a, b], 1.5) for a in range(3) for b in range(3)],
                      -1).reshape(tensor.shape)
    _, vecs = np.linalg.eigh(tensor + 1e-12 * np.eye(3))
    v = vecs[..., :, 0] * np.sign(np.diag(grid.ijk_to_ras[:3, :3]))  # smallest: the least-varying axis
    maps["V1"] = np.moveaxis(v, -1, 0)
    for k in maps:
        maps[k] = np.where(brain, maps[k], 0.0).astype(np.float32)
    return maps, grid


def signal(rows: AcquisitionTable, maps: dict[str, np.ndarray], scale: float = SCALE) -> np.ndarray:
    """Noise-free ``(len(rows), K, J, I)`` float64 signal (module docstring)."""
    pd, t1, t2s, md, fa = (np.asarray(maps[k], np.float64) for k in ("PD", "T1", "T2s", "MD", "FA"))
    v = np.asarray(maps["V1"], np.float64)
    ok = pd > 0
    r1 = np.divide(1.0, t1, out=np.zeros_like(t1), where=ok)
    r2 = np.divide(1.0, t2s, out=np.zeros_like(t2s), where=ok)
    a = fa / np.sqrt(3.0 - 2.0 * fa**2)  # cylinder: l_par = MD (1 + 2a), l_perp = MD (1 - a)
    l_par, l_perp = md * (1 + 2 * a), md * (1 - a)
    out = np.empty((len(rows), *pd.shape))
    for n, (gx, gy, gz, b, ti, te) in enumerate(rows.values):
        cos2 = (gx * v[0] + gy * v[1] + gz * v[2]) ** 2
        d = l_perp + (l_par - l_perp) * cos2
        s = scale * pd * np.abs(1 - 2 * np.exp(-ti * r1) + np.exp(-TR_MS * r1)) * np.exp(-te * r2) * np.exp(-b * d)
        out[n] = np.where(ok, s, 0.0)
    return out


def _rician(clean: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    return np.hypot(clean + rng.normal(0.0, sigma, clean.shape), rng.normal(0.0, sigma, clean.shape))


class OutgenSource:
    """A qMRI set (:data:`QMRI_SETS`) as an SS-MoE data source (one subject, index 0, held out)."""

    n_subjects = 1
    held_out = 0

    def __init__(self, name: str = "test") -> None:
        self.name = name
        self.set = QMRI_SETS[name]
        self.description = f"out-of-generator qMRI head (training/outgen, {name} set)"
        self.scale = 600.0 / _reference_wm(self.set.tissues)

    def table(self) -> AcquisitionTable:
        return acquisition_table(self.name)

    def mask(self, subject: int = 0) -> np.ndarray:
        return qmri_maps(self.name)[0]["PD"] > 0

    def pair(self, subject: int, rows: Sequence[int], task: str) -> tuple[Volume, Volume]:
        """``(lr, hr)`` 4D of ``rows`` for an SS-MoE ``task`` (module docstring); tables attached."""
        maps, grid = qmri_maps(self.name)
        table = self.table().rows(np.asarray(rows))
        clean = signal(table, maps, self.scale)
        f_ijk = sr_task(task).factors
        f_kji = tuple(int(f) for f in f_ijk[::-1])
        mask = maps["PD"] > 0
        sigma = self.set.noise_fraction * 600.0
        profile = self.set.profile
        hr = np.empty(clean.shape, np.float32)
        lr_clean = sample_slices(crop_whole(clean, f_kji), f_kji, profile)  # type: ignore[arg-type]
        lr_mask = sample_slices(crop_whole(mask.astype(np.float64), f_kji), f_kji, profile) > 0.25  # type: ignore[arg-type]
        lr = np.empty(lr_clean.shape, np.float32)
        for n, r in enumerate(np.asarray(rows)):
            rng = np.random.default_rng([self.set.seed, 1, int(r)])
            hr[n] = np.where(mask, _rician(clean[n], sigma, rng), 0.0)
            lr[n] = np.where(lr_mask, _rician(lr_clean[n], sigma / math.sqrt(float(np.prod(f_kji))), rng), 0.0)
        hr_c = Volume(crop_whole(hr, f_kji), grid.ijk_to_ras, table, name=f"outgen_{self.set.head}_hr")  # type: ignore[arg-type]
        lr_grid = scaled_grid(hr_c.grid, tuple(1.0 / f for f in f_ijk))
        return Volume(lr, lr_grid.ijk_to_ras, table, name=f"outgen_{self.set.head}_lr_{task}"), hr_c
