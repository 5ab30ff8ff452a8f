"""The out-of-generator evaluation set: heads and acquisitions made without
the project's sample-data generator (:mod:`SuperResMoELib.sample_data`) or its
training degradations, to see whether a mixture's edge over its own single
network survives data the training generator did not make.

What differs from the generator, and what does not:

* **Anatomy**: the MNI152 2009 GM/WM probability maps, read from the nilearn
  wheel directly (:mod:`.head`) -- the *same* template brain the generator
  warps; there is no other anatomy offline.  Honest reading: this set moves
  the pose, scale, shape, tissue model, contrast, bias, noise and
  acquisitions away from the generator, not the brain itself.
* **Pose, scale and shape** (:data:`.head.HEADS`): a rigid rotation of
  7-13 degrees about every axis, an anisotropic scale of 0.93-1.06, a
  translation, and a smooth polynomial shape change -- where the generator
  uses a velocity-field warp of the template in its own pose.
* **T1 head** (:mod:`.t1`): an inversion-recovery signal computed from
  tissue fractions with its own T1/PD values (the generator's T1 subjects are
  the template's own intensities), intra-tissue texture, a tilted quadratic
  bias field, Gaussian noise; four LR scans (1x1x5, 1x4x1, 2x2x2 and 1x1x3 mm)
  acquired with a trapezoid slice profile and decimation -- not the training
  degradations (Gaussian profiles, gaps, oblique grids, cubic back).
* **qMRI head** (:mod:`.qmri`): other tissue values (T1, T2*, ADC, PD, FA),
  fibre directions from the WM map's structure tensor, another acquisition
  table (other b-values, TE, TI and directions inside the training ranges),
  a 2.5 mm HR grid in another pose; the LR made by a Gaussian point-spread
  function and decimation -- not the Super MUDI block average.
* **qMRI validation head** (:data:`.qmri.QMRI_SETS` ``"validation"``): the same
  model in another pose with other tissue values, directions, noise and a
  trapezoid slice profile, for model selection in training
  (``library.validation = "outgen"``); never reported as a test.

Every number here is fixed data (no run-time draw beyond the seeded noise),
so the set is the same on every machine.  Subjects of one head are not
independent samples for a significance test: say so beside every table.
"""

from __future__ import annotations

#: Bumped when anything here changes the generated images.
OUTGEN_VERSION = "1"
#: The note beside every out-of-generator table.
OUTGEN_NOTE = ("out-of-generator set (training/outgen): the MNI152 tissue maps in another pose, scale and shape, "
               "with their own tissue model, contrast, bias, noise and acquisitions; the anatomy is still the one "
               "template brain, so this measures robustness to the generator's choices, not to a new population")
