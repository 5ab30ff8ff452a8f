"""How T1 subjects differ from the template besides the warp: a smooth bias field and a global contrast jitter."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from SuperResMoELib.sample_data.fields import _coarse_shape, _smooth_noise
from SuperResMoELib.sample_data.seeds import _rng

#: Gaussian smoothing (sigma, mm) of the log bias field of T1 subjects.
BIAS_SMOOTHNESS_MM: float = 40.0
#: Largest ``|log gain|`` of the T1 bias field (0.1 = about +-10 %).
BIAS_STRENGTH: float = 0.10
#: T1 subjects: intensity -> gain * intensity ** gamma with gamma uniform in
#: ``1 +- CONTRAST_JITTER`` and gain uniform in ``1 +- GAIN_JITTER``.
CONTRAST_JITTER: float = 0.08
GAIN_JITTER: float = 0.05


def _bias_log_field(seed: int, subject: int, shape: Sequence[int]) -> np.ndarray:
    """``(*coarse_shape)`` smooth log gain, largest magnitude :data:`BIAS_STRENGTH`."""
    f = _smooth_noise(_rng(seed, subject, "t1_bias"), _coarse_shape(shape), 1, BIAS_SMOOTHNESS_MM)[0]
    return f * (BIAS_STRENGTH / float(np.abs(f).max()))


def _contrast_jitter(seed: int, subject: int) -> tuple[float, float]:
    """``(gamma, gain)`` of a T1 subject: ``gamma`` uniform in ``1 +- CONTRAST_JITTER``,
    then ``gain`` uniform in ``1 +- GAIN_JITTER`` (stream ``"t1_contrast"``)."""
    rng = _rng(seed, subject, "t1_contrast")
    gamma = 1.0 + CONTRAST_JITTER * float(rng.uniform(-1.0, 1.0))
    gain = 1.0 + GAIN_JITTER * float(rng.uniform(-1.0, 1.0))
    return gamma, gain
