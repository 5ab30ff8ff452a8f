"""MUDI-like tissue physics: literature tissue parameters, the signal equation and the noise level."""

from __future__ import annotations

import math

import numpy as np

from SuperResMoELib.sample_data.mudi_protocol import MUDI_TE_MS, MUDI_TI_MS, MUDI_TR_MS

#: Signal = MUDI_SIGNAL_SCALE * PD * (relaxation and diffusion factors):
#: puts b=0, long-TI, TE=80 ms white matter at about 620 and CSF at about 2800,
#: the raw scanner-unit range of Super MUDI.
MUDI_SIGNAL_SCALE: float = 4000.0
#: Rician noise sigma as a fraction of the reference white-matter signal
#: (b=0, longest TI, shortest TE, literature WM values): sigma ~ 12.
MUDI_NOISE_FRACTION: float = 0.02

#: Tissue parameters at 3 T. PD is relative (CSF = 1), T1 / T2* in ms, ADC
#: (mean diffusivity) in mm^2/s, FA of a coherent WM voxel.
TISSUE_PARAMETERS: dict[str, dict[str, float]] = {
    "gm": {"PD": 0.80, "T1": 1400.0, "T2s": 66.0, "ADC": 0.80e-3, "FA": 0.0},
    "wm": {"PD": 0.70, "T1": 900.0, "T2s": 53.0, "ADC": 0.70e-3, "FA": 0.45},
    "csf": {"PD": 1.00, "T1": 4000.0, "T2s": 500.0, "ADC": 3.00e-3, "FA": 0.0},
}

#: Where :data:`TISSUE_PARAMETERS` come from (representative values, rounded).
TISSUE_PARAMETER_NOTES: str = """\
T1 at 3 T: Wansapura et al., JMRI 9:531 (1999): GM 1331 ms, WM 832 ms; Stanisz et al.,
  MRM 54:507 (2005): GM 1820 ms, WM 1084 ms; Lu et al., JMRI 22:13 (2005): CSF ~4000 ms
  (4100-4300). Chosen: GM 1400, WM 900, CSF 4000 ms.
T2* at 3 T: Peters et al., MRI 25:748 (2007): frontal GM 66 ms, WM 53 ms; CSF T2* is long
  (several hundred ms, limited by field inhomogeneity): 500 ms.
ADC (mean diffusivity): GM ~0.8e-3, WM ~0.7e-3 mm^2/s (e.g. Pierpaoli et al., Radiology
  201:637, 1996); CSF = free water at 37 C, 3.0e-3 mm^2/s.
PD (water content relative to CSF): GM 0.8, WM 0.7, CSF 1.0 (as in the BrainWeb
  phantom, Kwan et al. 1999; water content GM ~0.8, WM ~0.7).
FA of coherent WM at 2.5 mm: 0.45 (typical deep-WM FA 0.4-0.7; partial volume and
  crossing fibres lower it). GM and CSF are isotropic.
Mixing: PD and ADC are fraction-weighted means; relaxation *rates* (1/T1, 1/T2*) are
  fraction-weighted means (fast exchange); weights = tissue fractions renormalised to 1.
"""


def reference_wm_signal() -> float:
    """Noise-free b=0 signal of pure literature WM at the longest TI and shortest TE."""
    wm = TISSUE_PARAMETERS["wm"]
    ti, te = max(MUDI_TI_MS), min(MUDI_TE_MS)
    t1 = abs(1.0 - 2.0 * math.exp(-ti / wm["T1"]) + math.exp(-MUDI_TR_MS / wm["T1"]))
    return MUDI_SIGNAL_SCALE * wm["PD"] * t1 * math.exp(-te / wm["T2s"])


#: Rician noise sigma of every MUDI-like subject (scanner units).
MUDI_NOISE_SIGMA: float = MUDI_NOISE_FRACTION * reference_wm_signal()


def signal_equation(
    pd: np.ndarray, t1: np.ndarray, t2s: np.ndarray, adc: np.ndarray, b: float, ti: float, te: float,
    tr: float = MUDI_TR_MS, scale: float = MUDI_SIGNAL_SCALE,
) -> np.ndarray:
    """``scale * PD * |1 - 2 exp(-TI/T1) + exp(-TR/T1)| * exp(-TE/T2*) * exp(-b ADC)``.

    Elementwise (float64); ``adc`` is the apparent diffusivity along the
    gradient.  Voxels with ``PD <= 0`` give 0 (no division by a zero T1).
    """
    pd, t1, t2s, adc = (np.asarray(x, dtype=np.float64) for x in (pd, t1, t2s, adc))
    ok = pd > 0
    r1 = np.divide(1.0, t1, out=np.zeros_like(t1), where=ok)
    r2 = np.divide(1.0, t2s, out=np.zeros_like(t2s), where=ok)
    s = scale * pd * np.abs(1.0 - 2.0 * np.exp(-ti * r1) + np.exp(-tr * r1)) * np.exp(-te * r2) * np.exp(-b * adc)
    return np.where(ok, s, 0.0)
