"""Forward models of MRI acquisition: low-resolution simulation, slice profiles, clinical grids, noise and bias.

Every function takes and returns :class:`~SuperResMoELib.core.volume.Volume`
objects (3D ``array[k, j, i]`` or 4D ``array[n, k, j, i]``; 4D volumes are
processed frame by frame with the same parameters), never modifies its input,
and returns float32 arrays.  Each docstring states what happens to the geometry.

Axis arguments are given in **IJK** terms: ``axis=0`` is i (the *last* array
axis), ``1`` is j, ``2`` is k (the *first* spatial array axis).  Per-axis
factors are likewise listed in ``(i, j, k)`` order.

Randomness always comes from an explicit :class:`numpy.random.Generator`
(argument ``rng``); no global random state is used.

Modules:

* :mod:`.lowres` — :func:`simulate_low_resolution` by integer factors
  (boxcar, Gaussian, k-space), for SR evaluation.
* :mod:`.acquisition` — :func:`simulate_acquisition` on any (oblique) LR grid
  and :func:`degrade_and_restore` (back onto the HR grid).
* :mod:`.clinical_grids` — orientations, :func:`covering_grid`,
  :func:`random_clinical_grid`.
* :mod:`.profiles` — slice-profile kernels, :func:`slice_profile_blur`,
  :func:`slice_grid`, :func:`acquire_slices`.
* :mod:`.kspace` — :func:`kspace_truncate`.
* :mod:`.noise` — :func:`rician_noise`, :func:`bias_field_map`, :func:`bias_field`.
* :mod:`.block_mean` — :func:`block_mean` (integer blocks) and
  :func:`area_average` (non-integer cells), on plain arrays.
* :mod:`.tolerances` — shared numerical tolerances; ``_checks`` holds the
  private argument validators.
"""

from SuperResMoELib.simulation.acquisition import (
    INTERMEDIATE_INTERPOLATION,
    INTERMEDIATE_MARGIN,
    degrade_and_restore,
    simulate_acquisition,
)
from SuperResMoELib.simulation.block_mean import area_average, block_mean, crop_to_blocks
from SuperResMoELib.simulation.clinical_grids import (
    BASE_DIRECTIONS,
    BASE_ORIENTATIONS,
    ORIENTATIONS,
    RANDOM_ORIENTATIONS,
    covering_grid,
    random_clinical_grid,
)
from SuperResMoELib.simulation.kspace import kspace_truncate
from SuperResMoELib.simulation.lowres import INTEGER_FACTOR_TOLERANCE, LR_METHODS, simulate_low_resolution
from SuperResMoELib.simulation.noise import BIAS_MIN_CONTROL_POINTS, bias_field, bias_field_map, rician_noise
from SuperResMoELib.simulation.profiles import (
    BLUR_MODE,
    FWHM_PER_SIGMA,
    GAUSSIAN_TRUNCATE,
    PROFILES,
    SAMPLING_INTERPOLATION,
    acquire_slices,
    profile_kernel,
    slice_grid,
    slice_profile_blur,
)
from SuperResMoELib.simulation.tolerances import COVER_TOLERANCE, RELATIVE_TOLERANCE

__all__ = [
    "BASE_DIRECTIONS", "BASE_ORIENTATIONS", "BIAS_MIN_CONTROL_POINTS", "BLUR_MODE", "COVER_TOLERANCE",
    "FWHM_PER_SIGMA", "GAUSSIAN_TRUNCATE", "INTEGER_FACTOR_TOLERANCE", "INTERMEDIATE_INTERPOLATION",
    "INTERMEDIATE_MARGIN", "LR_METHODS", "ORIENTATIONS", "PROFILES", "RANDOM_ORIENTATIONS", "RELATIVE_TOLERANCE",
    "SAMPLING_INTERPOLATION", "acquire_slices", "area_average", "bias_field", "bias_field_map", "block_mean",
    "covering_grid", "crop_to_blocks", "degrade_and_restore", "kspace_truncate", "profile_kernel",
    "random_clinical_grid", "rician_noise", "simulate_acquisition", "simulate_low_resolution", "slice_grid",
    "slice_profile_blur",
]
