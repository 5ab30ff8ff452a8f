"""How much MUDI-like subjects differ from each other: the ``standard`` set
(the bundled checkpoints' training data) and the ``wide`` set (subject
variation across literature ranges, for training that must generalise beyond
this generator).

A :class:`MudiVariation` is fixed data; it enters the sample-data cache key
of every subject generated with it.  ``standard`` is exactly the generator as
it always was: tissue parameters jittered by 3 % (multiplicative, clipped at
2 SD), the template pose (only the smooth warp), a 0.5 tissue-fraction brain
mask, no intensity bias and Rician noise of 2 % of white matter's reference
signal.  ``wide`` draws per subject, each from its own random stream:

* every tissue parameter (PD, T1, T2*, ADC, FA) times ``exp(0.12 z)``, ``z``
  standard normal clipped at 2 (about +-27 %: 3 T literature values of GM T1
  range over 1300-1800 ms, WM T1 over 800-1100 ms, T2* and diffusivity over
  similar spreads);
* a pose: rotation uniform in +-10 deg about each axis, scale uniform in
  0.93-1.06 per axis, translation uniform in +-4 mm, about the brain centre
  (added to the smooth warp on its coarse lattice; the grid gets a wider
  margin so the turned brain stays inside);
* the mask's tissue-fraction threshold uniform in 0.1-0.5 (how tight a brain
  mask is);
* a smooth multiplicative intensity bias (a random quadratic polynomial of
  the position, largest ``|log gain|`` uniform in 0-0.15);
* the noise sigma uniform in 1-3.5 % of the reference white-matter signal.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import numpy as np

from SuperResMoELib.core.errors import InputError


@dataclass(frozen=True)
class MudiVariation:
    """The spread of one set of MUDI-like subjects (module docstring).

    Attributes:
        name: the set's name (:data:`MUDI_VARIATIONS`).
        param_log_sd: SD of the log factor of every tissue parameter (0:
            the standard set's linear 3 % jitter is used instead).
        rotation_deg: largest rotation about each axis (degrees).
        scale: per-axis scale range ``(low, high)``.
        translation_mm: largest translation along each axis (mm).
        margin_mm: grid margin around the template brain box (mm).
        mask_threshold: tissue-fraction threshold range of the brain mask.
        bias_log_max: range of the bias field's largest ``|log gain|``.
        noise_fraction: noise sigma range, as a fraction of the reference WM signal.
    """

    name: str
    param_log_sd: float
    rotation_deg: float
    scale: tuple[float, float]
    translation_mm: float
    margin_mm: float
    mask_threshold: tuple[float, float]
    bias_log_max: tuple[float, float]
    noise_fraction: tuple[float, float]

    @property
    def is_standard(self) -> bool:
        return self.name == "standard"

    def cache_kind(self) -> str:
        """The sample-data cache kind of its subjects: ``"mudi"`` for the
        standard set (its files stay valid), else ``"mudi-<name>-<8 hex of the values>"``."""
        if self.is_standard:
            return "mudi"
        digest = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:8]
        return f"mudi-{self.name}-{digest}"


#: The named sets; ``standard`` reproduces the bundled checkpoints' data.
MUDI_VARIATIONS: dict[str, MudiVariation] = {
    "standard": MudiVariation("standard", 0.0, 0.0, (1.0, 1.0), 0.0, 5.0, (0.5, 0.5), (0.0, 0.0), (0.02, 0.02)),
    "wide": MudiVariation("wide", 0.12, 10.0, (0.93, 1.06), 4.0, 16.0, (0.1, 0.5), (0.0, 0.15), (0.01, 0.035)),
}


def mudi_variation(name: str | MudiVariation) -> MudiVariation:
    """A :class:`MudiVariation` by name (or itself); ``InputError`` naming the known ones."""
    if isinstance(name, MudiVariation):
        return name
    if name not in MUDI_VARIATIONS:
        raise InputError(f"unknown MUDI-like variation {name!r}; choose one of {sorted(MUDI_VARIATIONS)}")
    return MUDI_VARIATIONS[name]


@dataclass(frozen=True)
class SubjectDraw:
    """What one subject of a non-standard set drew (module docstring).

    ``factors``: per tissue and parameter, the multiplicative factor;
    ``affine``: ``(3, 3)`` linear part ``M`` of the pull-back in 1 mm template
    index space (KJI), ``x_template = M (x - c) + c + t``; ``translation``
    ``t`` (KJI voxels); ``mask_threshold``; ``bias``: 10 polynomial
    coefficients (1, k, j, i, kk, jj, ii, kj, ki, ji of positions scaled to
    -1..1), already scaled to the drawn largest ``|log gain|`` over the grid
    corners' box; ``noise_fraction``.
    """

    factors: dict[str, dict[str, float]]
    affine: np.ndarray
    translation: np.ndarray
    mask_threshold: float
    bias: np.ndarray
    noise_fraction: float


def _rotation(angles_deg: np.ndarray) -> np.ndarray:
    ax, ay, az = np.radians(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def draw_subject(variation: MudiVariation, rng: np.random.Generator,
                 tissues: dict[str, dict[str, float]]) -> SubjectDraw:
    """One subject's draw from ``rng`` (its own stream), for ``tissues`` (name -> parameter -> value)."""
    v = variation
    factors = {t: {p: float(np.exp(v.param_log_sd * np.clip(rng.standard_normal(), -2.0, 2.0)))
                   for p in params} for t, params in tissues.items()}
    rot = _rotation(rng.uniform(-v.rotation_deg, v.rotation_deg, 3))
    scale = rng.uniform(v.scale[0], v.scale[1], 3)
    forward = rot @ np.diag(scale)
    translation = rng.uniform(-v.translation_mm, v.translation_mm, 3)
    threshold = float(rng.uniform(*v.mask_threshold))
    coeffs = rng.standard_normal(10)
    coeffs[0] = 0.0
    peak = float(np.abs(coeffs[1:4]).sum() + np.abs(coeffs[4:]).sum())  # bound of |poly| on [-1, 1]^3
    bias = coeffs * (float(rng.uniform(*v.bias_log_max)) / peak)
    noise = float(rng.uniform(*v.noise_fraction))
    return SubjectDraw(factors, np.linalg.inv(forward), translation, threshold, bias, noise)


def bias_field(coeffs: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """``exp(poly)`` ``(K, J, I)`` float64 of the 10 coefficients (see :class:`SubjectDraw`)."""
    k, j, i = (np.linspace(-1.0, 1.0, n) for n in shape)
    kk, jj, ii = np.meshgrid(k, j, i, indexing="ij")
    terms = (np.ones_like(kk), kk, jj, ii, kk * kk, jj * jj, ii * ii, kk * jj, kk * ii, jj * ii)
    return np.exp(sum(c * t for c, t in zip(coeffs, terms)))
