"""Embedded sample data, built offline from the MNI152 template that ships with nilearn.

No scan can be downloaded, so every demo, test and bundled checkpoint is built
from four images inside the ``nilearn`` wheel: the MNI152 2009 T1 template
(skull-stripped, rescaled by nilearn to ``[0, 1]``), its GM and WM probability
maps and its brain mask (197 x 233 x 189 voxels of 1 mm, RAS axis-aligned).

Two kinds of data are derived from them:

* **T1 pairs** (REMIx, MoEDiff-SR): :func:`t1_subject` turns the template into
  distinct "subjects" (smooth diffeomorphic warp + smooth multiplicative bias +
  small global contrast jitter); :func:`t1_pair` degrades one into an LR
  volume with :func:`~SuperResMoELib.simulation.lowres.simulate_low_resolution`
  plus Rician noise.
* **MUDI-like qMRI** (SS-MoE): :func:`mudi_subject` maps warped tissue
  fractions to PD, T1, T2*, ADC (and FA / principal direction in WM) with the
  literature values of :data:`TISSUE_PARAMETERS`, at 2.5 mm; its
  :meth:`MudiSubject.signal` evaluates the diffusion-relaxometry signal for
  rows of the 1344-row :func:`mudi_acquisition_table` (Super MUDI marginals),
  :meth:`MudiSubject.hr` adds Rician noise, :meth:`MudiSubject.lr` block-averages
  to the two Super MUDI tasks (2.5 x 2.5 x 5 mm and 5 mm isotropic).

Randomness: every random quantity comes from its own
``numpy.random.SeedSequence([seed, subject, stream, ...])`` (see
:data:`RANDOM_STREAMS`), so results are identical from run to run (bit for
bit on one machine; BLAS differences between machines may change last bits),
and one quantity (e.g. the noise of one MUDI row) does not
depend on which others were asked for.

Caching: warped T1 subjects and MUDI parameter maps are stored as ``.npz`` in
``cache_dir() / "sample_data" / SAMPLE_DATA_VERSION``; the file name carries a
hash of every generation constant, the seed and the subject, so a change of a
constant never returns stale data.  A failed or unwritable cache only costs
time (a warning is logged), never correctness.  The first generation of each
item is logged (logger ``superresmoe.sample_data``) with its duration.

Modules:

* :mod:`.template` — the nilearn MNI152 images (:func:`mni_template`, :func:`tissue_maps`).
* :mod:`.seeds` — :data:`RANDOM_STREAMS` and the per-quantity generators.
* :mod:`.fields` — smooth random fields and diffeomorphic warp fields on a
  coarse lattice; :mod:`.warp` — pull-back warps of template images.
* :mod:`.t1_variation` — T1 bias field and contrast jitter; :mod:`.t1` —
  :func:`t1_subject`, :func:`t1_pair`.
* :mod:`.mudi_protocol` — the acquisition table; :mod:`.mudi_physics` —
  tissue parameters, :func:`signal_equation`, noise level; :mod:`.mudi_maps`
  — the 2.5 mm grid and parameter maps; :mod:`.mudi_variation` — how much
  subjects differ (``standard``, ``wide``); :mod:`.mudi` — :class:`MudiSubject`,
  :func:`mudi_subject`, :func:`mudi_downsample`.
* :mod:`.cache` — cache folder, keys, load and save; :mod:`.writer` —
  :func:`write_sample_data`.
"""

from SuperResMoELib.sample_data.cache import SAMPLE_DATA_VERSION, cache_dir
from SuperResMoELib.sample_data.fields import (
    FIELD_CONTROL_SPACING_MM,
    WARP_MAX_MM,
    WARP_SMOOTHNESS_MM,
    WARP_SQUARING_STEPS,
)
from SuperResMoELib.sample_data.mudi import (
    MUDI_HELD_OUT,
    MUDI_MAP_NAMES,
    MUDI_SUBJECTS,
    MUDI_TASKS,
    MudiSubject,
    mudi_downsample,
    mudi_subject,
)
from SuperResMoELib.sample_data.mudi_maps import (
    MUDI_GRADIENT_SIGMA,
    MUDI_MARGIN_MM,
    MUDI_MASK_THRESHOLD,
    MUDI_PARAM_JITTER,
    MUDI_SPACING_MM,
    MUDI_TENSOR_SIGMA,
)
from SuperResMoELib.sample_data.mudi_physics import (
    MUDI_NOISE_FRACTION,
    MUDI_NOISE_SIGMA,
    MUDI_SIGNAL_SCALE,
    TISSUE_PARAMETER_NOTES,
    TISSUE_PARAMETERS,
    signal_equation,
)
from SuperResMoELib.sample_data.mudi_variation import MUDI_VARIATIONS, MudiVariation, mudi_variation
from SuperResMoELib.sample_data.mudi_protocol import (
    MUDI_B_VALUES,
    MUDI_N_DIRECTIONS,
    MUDI_ROWS_PER_BLOCK,
    MUDI_TE_MS,
    MUDI_TI_MS,
    MUDI_TR_MS,
    mudi_acquisition_table,
)
from SuperResMoELib.sample_data.seeds import RANDOM_STREAMS
from SuperResMoELib.sample_data.t1 import T1_HELD_OUT, T1_SUBJECTS, t1_pair, t1_subject
from SuperResMoELib.sample_data.t1_variation import BIAS_SMOOTHNESS_MM, BIAS_STRENGTH, CONTRAST_JITTER, GAIN_JITTER
from SuperResMoELib.sample_data.template import mni_template, tissue_maps
from SuperResMoELib.sample_data.writer import SAMPLE_KINDS, write_sample_data

__all__ = [
    "BIAS_SMOOTHNESS_MM", "BIAS_STRENGTH", "CONTRAST_JITTER", "FIELD_CONTROL_SPACING_MM", "GAIN_JITTER",
    "MUDI_B_VALUES", "MUDI_GRADIENT_SIGMA", "MUDI_HELD_OUT", "MUDI_MAP_NAMES", "MUDI_MARGIN_MM",
    "MUDI_MASK_THRESHOLD", "MUDI_NOISE_FRACTION", "MUDI_NOISE_SIGMA", "MUDI_N_DIRECTIONS", "MUDI_PARAM_JITTER",
    "MUDI_ROWS_PER_BLOCK", "MUDI_SIGNAL_SCALE", "MUDI_SPACING_MM", "MUDI_SUBJECTS", "MUDI_TASKS",
    "MUDI_TENSOR_SIGMA", "MUDI_TE_MS", "MUDI_TI_MS", "MUDI_TR_MS", "MUDI_VARIATIONS", "MudiSubject", "MudiVariation", "RANDOM_STREAMS",
    "SAMPLE_DATA_VERSION", "SAMPLE_KINDS", "T1_HELD_OUT", "T1_SUBJECTS", "TISSUE_PARAMETERS",
    "TISSUE_PARAMETER_NOTES", "WARP_MAX_MM", "WARP_SMOOTHNESS_MM", "WARP_SQUARING_STEPS", "cache_dir",
    "mni_template", "mudi_acquisition_table", "mudi_downsample", "mudi_subject", "mudi_variation", "signal_equation",
    "t1_pair", "t1_subject", "tissue_maps", "write_sample_data",
]
