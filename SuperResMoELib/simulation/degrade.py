"""Simulated low-resolution MRI acquisitions from a high-resolution volume.

Every function takes and returns :class:`~SuperResMoELib.volume.Volume` objects
(3D ``array[k, j, i]`` or 4D ``array[n, k, j, i]``; 4D volumes are processed
frame by frame with the same parameters), never modifies its input, and
returns float32 arrays.  Each docstring states what happens to the geometry.

Axis arguments are given in **IJK** terms: ``axis=0`` is i (the *last* array
axis), ``1`` is j, ``2`` is k (the *first* spatial array axis).  Per-axis
factors are likewise listed in ``(i, j, k)`` order.

Randomness always comes from an explicit :class:`numpy.random.Generator`
(argument ``rng``); no global random state is used.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import scipy.fft
from scipy import ndimage
from scipy.interpolate import make_interp_spline

from SuperResMoELib.core.errors import InputError
from SuperResMoELib.core.geometry import resample, resample_array, scaled_grid
from SuperResMoELib.core.volume import Grid, Volume

#: Slice profiles accepted by :func:`slice_profile_blur` and friends.
PROFILES: tuple[str, ...] = ("gaussian", "boxcar")

#: Orientations accepted by :func:`random_clinical_grid`.
ORIENTATIONS: tuple[str, ...] = ("axial", "coronal", "sagittal", "oblique", "random")

#: Orientations a "random" draw chooses from (uniformly).
RANDOM_ORIENTATIONS: tuple[str, ...] = ("axial", "coronal", "sagittal", "oblique")

#: Base orientations an "oblique" draw tilts (uniformly chosen).
BASE_ORIENTATIONS: tuple[str, ...] = ("axial", "coronal", "sagittal")

#: Direction matrices (columns = unit i, j, k axes in RAS) of the base
#: orientations; the k column is the through-plane axis (S, A, R).
BASE_DIRECTIONS: dict[str, np.ndarray] = {
    "axial": np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]),  # i=R j=A k=S
    "coronal": np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]]),  # i=R j=S k=A
    "sagittal": np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]),  # i=A j=S k=R
}

#: Methods accepted by :func:`simulate_low_resolution`.
LR_METHODS: tuple[str, ...] = ("boxcar", "gaussian", "kspace")

#: FWHM = this factor * sigma for a Gaussian (2 sqrt(2 ln 2)).
FWHM_PER_SIGMA: float = 2.0 * math.sqrt(2.0 * math.log(2.0))

#: Gaussian slice profiles are truncated at this many sigmas.
GAUSSIAN_TRUNCATE: float = 4.0

#: Boundary handling of the profile convolution (scipy.ndimage mode):
#: "nearest" extends the edge voxels, so constant images stay constant.
BLUR_MODE: str = "nearest"

#: Interpolation used when sampling a blurred image at slice / LR centres.
SAMPLING_INTERPOLATION: str = "linear"

#: Interpolation used to bring the HR image onto the intermediate (rotated)
#: grid of an oblique acquisition in :func:`simulate_acquisition`.
INTERMEDIATE_INTERPOLATION: str = "linear"

#: Margin (in units of the LR spacing) added on each side of the intermediate
#: grid of an oblique acquisition, so the profile sees real data at the edges.
INTERMEDIATE_MARGIN: float = 2.0

#: Relative tolerance for "spacing exceeds" and "axes are parallel" tests.
RELATIVE_TOLERANCE: float = 1e-6

#: Tolerance (in voxels) when counting how many voxels cover an extent, so an
#: exact multiple does not gain an extra voxel through rounding noise.
COVER_TOLERANCE: float = 1e-6

#: Minimum number of spline control points per axis of a bias field.
BIAS_MIN_CONTROL_POINTS: int = 4

#: Tolerance on integer scale factors in :func:`simulate_low_resolution`.
INTEGER_FACTOR_TOLERANCE: float = 1e-9


# ---------------------------------------------------------------- validation
def _check_volume(volume: Volume) -> None:
    if not isinstance(volume, Volume):
        raise InputError(f"expected a Volume, got {type(volume).__name__}")


def _check_axis(axis: int) -> int:
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or not 0 <= int(axis) <= 2:
        raise InputError(f"axis must be 0 (i), 1 (j) or 2 (k), got {axis!r}")
    return int(axis)


def _check_profile(profile: str) -> str:
    if profile not in PROFILES:
        raise InputError(f"unknown slice profile {profile!r}; choose one of {list(PROFILES)}")
    return profile


def _check_number(value: float, what: str, allow_zero: bool = False) -> float:
    """``value`` as a finite float that is positive (or non-negative)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise InputError(f"{what} must be {'zero or ' if allow_zero else ''}positive, got {value!r}")
    return v


def _check_positive(value: float, what: str) -> float:
    return _check_number(value, what)


def _check_non_negative(value: float, what: str) -> float:
    return _check_number(value, what, allow_zero=True)


def _check_rng(rng: np.random.Generator) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise InputError(
            f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), got "
            f"{type(rng).__name__}"
        )
    return rng


def _factors3(factors: float | Sequence[float], what: str = "factors") -> np.ndarray:
    f = np.asarray(factors, dtype=np.float64).ravel()
    if f.size == 1:
        f = np.repeat(f, 3)
    if f.size != 3:
        raise InputError(f"{what} must be one number or three (i, j, k), got {list(f)}")
    if not np.all(np.isfinite(f)):
        raise InputError(f"{what} must be finite numbers, got {list(f)}")
    return f


def _array_axis(ndim: int, axis: int) -> int:
    """Array axis of IJK ``axis`` in a KJI (3D) or NKJI (4D) array."""
    return ndim - 1 - axis


def _float32(volume: Volume) -> np.ndarray:
    return np.asarray(volume.array, dtype=np.float32)


# ------------------------------------------------------------------ k-space
def kspace_truncate(volume: Volume, factors: float | Sequence[float]) -> Volume:
    """Low-pass a volume by truncating its k-space (Fourier domain).

    Along every IJK axis with factor ``s > 1`` the discrete Fourier transform
    keeps the central ``1/s`` of k-space, i.e. the frequencies with
    ``|f| <= 1 / (2 s)`` cycles per voxel (``|index| <= n / (2 s)``; the kept
    band is symmetric, so a real input gives a real result), and zeroes the
    rest; the inverse transform's real part is returned (no magnitude is
    taken, so signs are kept).  Factor 1 leaves that axis untouched (exactly).

    Geometry: same grid.  Shapes: ``(K, J, I)`` -> ``(K, J, I)`` or
    ``(N, K, J, I)`` -> ``(N, K, J, I)`` (each frame separately), float32.

    Args:
        volume: input volume.
        factors: one factor for all axes or ``(s_i, s_j, s_k)``, each ``>= 1``.

    Raises:
        InputError: a factor below 1 or not finite.
    """
    _check_volume(volume)
    f = _factors3(factors, "k-space truncation factors")
    if np.any(f < 1.0):
        raise InputError(f"k-space truncation factors must be >= 1, got {list(f)}")
    arr = _float32(volume)
    axes = [_array_axis(arr.ndim, a) for a in range(3) if f[a] > 1.0]
    if not axes:
        return volume.with_array(arr.copy())
    spectrum = scipy.fft.fftn(arr, axes=axes)
    for a in range(3):
        if f[a] <= 1.0:
            continue
        ax = _array_axis(arr.ndim, a)
        n = arr.shape[ax]
        freq = np.abs(scipy.fft.fftfreq(n))
        keep = (freq <= 0.5 / f[a] + RELATIVE_TOLERANCE / n).astype(spectrum.real.dtype)
        shape = [1] * arr.ndim
        shape[ax] = n
        spectrum *= keep.reshape(shape)
    out = scipy.fft.ifftn(spectrum, axes=axes).real.astype(np.float32)
    return volume.with_array(out)


# ------------------------------------------------------------ slice profiles
def profile_kernel(width_voxels: float, profile: str = "gaussian") -> np.ndarray:
    """The normalised 1D kernel (odd length, centred) of a slice profile.

    * ``"gaussian"``: samples of a Gaussian with FWHM ``width_voxels`` at integer
      offsets, truncated at :data:`GAUSSIAN_TRUNCATE` sigmas.
    * ``"boxcar"``: the exact box ``[-w/2, w/2]`` integrated over each voxel
      cell ``[m - 1/2, m + 1/2]``: interior weights ``1/w``, fractional end
      weights, so ``sum / max == w`` for ``w >= 1``.

    Returns:
        float64 weights summing to 1.
    """
    w = _check_positive(width_voxels, "profile width")
    _check_profile(profile)
    if profile == "gaussian":
        sigma = w / FWHM_PER_SIGMA
        radius = max(1, int(math.ceil(GAUSSIAN_TRUNCATE * sigma)))
        x = np.arange(-radius, radius + 1, dtype=np.float64)
        kernel = np.exp(-0.5 * (x / sigma) ** 2)
    else:
        half = 0.5 * w
        radius = max(0, int(math.ceil(half + 0.5)) - 1)
        x = np.arange(-radius, radius + 1, dtype=np.float64)
        kernel = np.clip(np.minimum(x + 0.5, half) - np.maximum(x - 0.5, -half), 0.0, None)
    return kernel / kernel.sum()


def _blur_array(array: np.ndarray, axis: int, width_voxels: float, profile: str) -> np.ndarray:
    """Convolve a KJI / NKJI float32 array along IJK ``axis``."""
    kernel = profile_kernel(width_voxels, profile)
    if kernel.size == 1:
        return np.array(array, dtype=np.float32, copy=True)
    return ndimage.convolve1d(
        np.asarray(array, dtype=np.float32), kernel, axis=_array_axis(array.ndim, axis), mode=BLUR_MODE
    )


def slice_profile_blur(
    volume: Volume, axis: int, thickness_mm: float, profile: str = "gaussian"
) -> Volume:
    """Blur along one axis with a slice profile of a given physical thickness.

    The thickness is converted to voxels with the volume's spacing along IJK
    ``axis`` (``thickness_mm / spacing[axis]``), then a 1D convolution along
    that axis only is applied (see :func:`profile_kernel`): ``"gaussian"``
    has FWHM = thickness, ``"boxcar"`` is an exact box of width = thickness
    with fractional end weights.  Kernels sum to 1 (intensity sums are kept);
    edges are extended (:data:`BLUR_MODE`), so a constant image stays constant.

    Geometry: same grid.  Shapes: unchanged (``(K, J, I)`` or ``(N, K, J, I)``),
    float32.  ``axis=0`` (i) acts on the last array axis, ``axis=2`` (k) on the
    first spatial array axis.

    Raises:
        InputError: ``axis`` not in 0..2, non-positive thickness, unknown profile.
    """
    _check_volume(volume)
    axis = _check_axis(axis)
    thickness = _check_positive(thickness_mm, "slice thickness (mm)")
    _check_profile(profile)
    width = thickness / float(volume.spacing[axis])
    return volume.with_array(_blur_array(_float32(volume), axis, width, profile))


def slice_grid(grid: Grid, axis: int, spacing_mm: float) -> Grid:
    """The grid of slices ``spacing_mm`` apart along IJK ``axis`` of ``grid``.

    The first slice's outer edge equals the first edge of ``grid``; the number
    of slices is ``max(1, floor(extent / spacing_mm))`` with ``extent = n *
    spacing[axis]``; other axes and the direction are unchanged.
    """
    axis = _check_axis(axis)
    d = _check_positive(spacing_mm, "slice spacing (mm)")
    s = float(grid.spacing[axis])
    n_old = grid.size_ijk[axis]
    n_new = max(1, int(math.floor(n_old * s / d + COVER_TOLERANCE)))
    ratio = d / s
    # new index m -> old continuous index -0.5 + (m + 0.5) * ratio
    new_to_old = np.eye(4)
    new_to_old[axis, axis] = ratio
    new_to_old[axis, 3] = -0.5 + 0.5 * ratio
    size = list(grid.size_ijk)
    size[axis] = n_new
    return Grid((size[2], size[1], size[0]), grid.ijk_to_ras @ new_to_old)


def acquire_slices(
    volume: Volume,
    axis: int,
    thickness_mm: float,
    gap_mm: float = 0.0,
    profile: str = "gaussian",
) -> Volume:
    """Simulate a 2D multi-slice acquisition along one axis.

    :func:`slice_profile_blur` with ``thickness_mm`` along IJK ``axis``, then
    sampling (linear interpolation) at slice centres ``thickness + gap`` mm
    apart.  A negative ``gap_mm`` (overlapping slices) is allowed as long as
    ``thickness + gap > 0``.

    Geometry: a NEW grid (:func:`slice_grid`): spacing along ``axis`` =
    ``thickness + gap``, the first slice's outer edge at the input's first
    edge, ``max(1, floor(extent / (thickness + gap)))`` slices, other axes and
    the direction unchanged.  Shapes: the ``axis`` size changes (array axis
    ``-1 - axis``), 4D frames are kept; float32.

    Raises:
        InputError: bad axis, thickness, gap or profile.
    """
    _check_volume(volume)
    axis = _check_axis(axis)
    thickness = _check_positive(thickness_mm, "slice thickness (mm)")
    try:
        gap = float(gap_mm)
    except (TypeError, ValueError):
        raise InputError(f"slice gap must be a number, got {gap_mm!r}") from None
    if not math.isfinite(gap) or thickness + gap <= 0:
        raise InputError(
            f"slice thickness + gap must be positive, got {thickness} + {gap_mm!r} mm"
        )
    _check_profile(profile)
    blurred = slice_profile_blur(volume, axis, thickness, profile)
    target = slice_grid(volume.grid, axis, thickness + gap)
    return resample(blurred, target, SAMPLING_INTERPOLATION)


# -------------------------------------------------------------------- noise
def rician_noise(volume: Volume, sigma: float, rng: np.random.Generator) -> Volume:
    """Add Rician noise: ``|x + n1 + i n2|`` with ``n1, n2 ~ N(0, sigma^2)`` i.i.d.

    ``sigma`` is in the volume's intensity units.  For zero signal the result
    is Rayleigh distributed (mean ``sigma * sqrt(pi / 2)``); for a large signal
    ``A`` its mean tends to ``sqrt(A^2 + sigma^2)``.  The result is never
    negative.  Deterministic for a given generator state.

    Geometry: same grid.  Shapes: unchanged, float32 (4D: independent noise
    in every frame).

    Raises:
        InputError: non-positive ``sigma`` or ``rng`` not a Generator.
    """
    _check_volume(volume)
    s = _check_positive(sigma, "noise sigma")
    _check_rng(rng)
    arr = _float32(volume)
    real = arr + s * rng.standard_normal(arr.shape, dtype=np.float32)
    imag = s * rng.standard_normal(arr.shape, dtype=np.float32)
    return volume.with_array(np.hypot(real, imag).astype(np.float32))


# --------------------------------------------------------------- bias field
def _spline_weights(positions: np.ndarray, knots: np.ndarray) -> np.ndarray:
    """``(len(positions), len(knots))`` cubic-spline interpolation matrix."""
    spline = make_interp_spline(knots, np.eye(knots.size), k=3)
    return np.asarray(spline(positions), dtype=np.float64)


def bias_field_map(
    grid: Grid, strength: float, rng: np.random.Generator, smoothness_mm: float = 60.0
) -> np.ndarray:
    """A smooth random multiplicative bias field ``exp(f)`` on ``grid``.

    ``f`` is built from i.i.d. standard normal values on a lattice of control
    points spaced ``smoothness_mm`` apart along the grid's own i, j, k axes
    (centred on the grid, at least :data:`BIAS_MIN_CONTROL_POINTS` per axis,
    so small volumes see a slowly varying part of a larger field), interpolated
    to the voxel centres with cubic splines (separably), made zero-mean and
    scaled so that ``max |f| == strength`` exactly (``f = 0`` for strength 0).

    Returns:
        ``exp(f)`` as a float32 ``(K, J, I)`` array (KJI order), values in
        ``[exp(-strength), exp(strength)]``.

    Raises:
        InputError: negative strength, non-positive smoothness, bad ``rng``.
    """
    strength = _check_non_negative(strength, "bias field strength")
    smooth = _check_positive(smoothness_mm, "bias field smoothness (mm)")
    _check_rng(rng)
    weights = []  # in (i, j, k) order
    for a in range(3):
        n = grid.size_ijk[a]
        s = float(grid.spacing[a])
        extent = n * s
        n_ctrl = max(BIAS_MIN_CONTROL_POINTS, int(math.ceil(extent / smooth - COVER_TOLERANCE)) + 1)
        knots = 0.5 * extent + (np.arange(n_ctrl) - 0.5 * (n_ctrl - 1)) * smooth
        centres = (np.arange(n) + 0.5) * s
        weights.append(_spline_weights(centres, knots))
    coeffs = rng.standard_normal((weights[2].shape[1], weights[1].shape[1], weights[0].shape[1]))
    field = np.einsum("abc,ka->kbc", coeffs, weights[2])
    field = np.einsum("kbc,jb->kjc", field, weights[1])
    field = np.einsum("kjc,ic->kji", field, weights[0])
    field -= field.mean()
    peak = float(np.abs(field).max())
    if strength == 0.0 or peak == 0.0:
        return np.ones(grid.shape, dtype=np.float32)
    return np.exp(field * (strength / peak)).astype(np.float32)


def bias_field(
    volume: Volume, strength: float, rng: np.random.Generator, smoothness_mm: float = 60.0
) -> Volume:
    """Multiply the volume by a smooth random bias field ``exp(f)``, ``max|f| = strength``.

    The field is :func:`bias_field_map` ``(volume.grid, strength, rng,
    smoothness_mm)`` (so the same generator state gives the same field); a 4D
    volume gets the same field in every frame (a coil property).

    Geometry: same grid.  Shapes: unchanged, float32.
    """
    _check_volume(volume)
    field = bias_field_map(volume.grid, strength, rng, smoothness_mm)
    return volume.with_array(_float32(volume) * field)


# ------------------------------------------------------- acquisition grids
def _rotation(axis: np.ndarray, angle_rad: float) -> np.ndarray:
    a = np.asarray(axis, dtype=np.float64)
    a = a / np.linalg.norm(a)
    k = np.array([[0.0, -a[2], a[1]], [a[2], 0.0, -a[0]], [-a[1], a[0], 0.0]])
    return np.eye(3) + math.sin(angle_rad) * k + (1.0 - math.cos(angle_rad)) * (k @ k)


def covering_grid(grid: Grid, direction: np.ndarray, spacing: Sequence[float]) -> Grid:
    """A grid with orthonormal ``direction`` (columns i, j, k) and IJK ``spacing``
    centred on, and covering, the RAS bounding box of ``grid``'s corners
    (``ceil(extent / spacing)`` voxels per axis, at least 1)."""
    d = np.asarray(direction, dtype=np.float64)
    sp = np.asarray(spacing, dtype=np.float64)
    bounds = grid.bounds()
    box = np.array([[x, y, z] for x in bounds[0] for y in bounds[1] for z in bounds[2]])
    centre = bounds.mean(axis=1)
    proj = (box - centre) @ d  # coordinates along the new axes
    extent = proj.max(axis=0) - proj.min(axis=0)
    n = np.maximum(1, np.ceil(extent / sp - COVER_TOLERANCE)).astype(int)
    m = np.eye(4)
    m[:3, :3] = d * sp
    m[:3, 3] = centre - d @ (0.5 * (n - 1) * sp)
    return Grid((int(n[2]), int(n[1]), int(n[0])), m)


def random_clinical_grid(
    grid: Grid,
    voxel_volume_mm3: float,
    rng: np.random.Generator,
    orientation: str = "random",
    max_tilt_deg: float = 15.0,
    in_plane_range_mm: tuple[float, float] = (0.8, 1.3),
    gap_fraction: float = 0.0,
) -> tuple[Grid, dict]:
    """Draw a clinical-looking low-resolution acquisition grid.

    * Orientation: ``"axial"``, ``"coronal"``, ``"sagittal"`` put the
      through-plane (k) axis along S, A, R respectively (in-plane axes:
      axial i=R j=A; coronal i=R j=S; sagittal i=A j=S — see
      :data:`BASE_DIRECTIONS`; the coronal frame has determinant -1).
      ``"oblique"`` picks one of those three uniformly and rotates it by a
      random rotation (axis uniform on the sphere, angle uniform in
      ``[0, max_tilt_deg]``).  ``"random"`` picks one of the four uniformly.
    * Spacing: in-plane ``p ~ U(in_plane_range_mm)``, thickness
      ``t = voxel_volume / p^2``.  If that gives ``t < p`` the draw is
      **clamped** to isotropic voxels ``p = t = voxel_volume^(1/3)`` (so the
      voxel volume is always exact and thickness >= in-plane).
    * Extent: the grid is centred on, and covers, the RAS bounding box of
      ``grid``'s corners (``ceil(extent / spacing)`` voxels per axis).
    * Slice gap: ``gap_fraction`` in ``[0, 1)`` of the slice spacing ``t`` is
      a gap between slices; the slices are ``(1 - gap_fraction) * t`` thick
      (the grid spacing, hence the voxel volume, is unchanged).  Pass
      ``info["slice_thickness_mm"]`` to :func:`simulate_acquisition`.

    Returns:
        ``(lr_grid, info)``: ``lr_grid`` with spacing ``(p, p, t)`` and its k
        axis through-plane; ``info`` = ``{"orientation": drawn orientation
        (never "random"), "base_orientation": axial/coronal/sagittal,
        "in_plane_mm": p, "thickness_mm": t (the slice spacing),
        "slice_thickness_mm": t minus the gap, "gap_mm": the gap,
        "voxel_volume_mm3": p*p*t, "tilt_deg": rotation angle (0 unless
        oblique)}``.

    Raises:
        InputError: unknown orientation, non-positive voxel volume or spacings,
        negative tilt, gap fraction outside ``[0, 1)``, bad ``rng``.
    """
    if not isinstance(grid, Grid):
        raise InputError(f"expected a Grid, got {type(grid).__name__}")
    volume_mm3 = _check_positive(voxel_volume_mm3, "voxel volume (mm^3)")
    _check_rng(rng)
    if orientation not in ORIENTATIONS:
        raise InputError(f"unknown orientation {orientation!r}; choose one of {list(ORIENTATIONS)}")
    tilt_max = _check_non_negative(max_tilt_deg, "maximum tilt (degrees)")
    try:
        lo, hi = (float(x) for x in in_plane_range_mm)
    except (TypeError, ValueError):
        raise InputError(f"in-plane range must be two numbers (mm), got {in_plane_range_mm!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo <= 0 or hi < lo:
        raise InputError(f"in-plane range must satisfy 0 < low <= high, got {in_plane_range_mm!r}")

    gap = _check_non_negative(gap_fraction, "gap fraction")
    if gap >= 1.0:
        raise InputError(f"gap fraction must be below 1 (a fraction of the slice spacing), got {gap_fraction!r}")

    chosen = orientation
    if chosen == "random":
        chosen = RANDOM_ORIENTATIONS[int(rng.integers(len(RANDOM_ORIENTATIONS)))]
    base = chosen
    if chosen == "oblique":
        base = BASE_ORIENTATIONS[int(rng.integers(len(BASE_ORIENTATIONS)))]
    p = float(rng.uniform(lo, hi))
    t = volume_mm3 / (p * p)
    if t < p:
        p = t = volume_mm3 ** (1.0 / 3.0)
    direction = BASE_DIRECTIONS[base].copy()
    tilt = 0.0
    if chosen == "oblique":
        rot_axis = rng.standard_normal(3)
        while np.linalg.norm(rot_axis) < RELATIVE_TOLERANCE:  # practically never
            rot_axis = rng.standard_normal(3)
        tilt = float(rng.uniform(0.0, tilt_max))
        direction = _rotation(rot_axis, math.radians(tilt)) @ direction
    lr = covering_grid(grid, direction, (p, p, t))
    info = {
        "orientation": chosen,
        "base_orientation": base,
        "in_plane_mm": p,
        "thickness_mm": t,
        "slice_thickness_mm": t * (1.0 - gap),
        "gap_mm": t * gap,
        "voxel_volume_mm3": p * p * t,
        "tilt_deg": tilt,
    }
    return lr, info


# ------------------------------------------------------ full acquisitions
def _aligned_axes(hr: Grid, lr: Grid) -> list[int] | None:
    """For each lr IJK axis, the parallel hr IJK axis; None if not all parallel."""
    cos = np.abs(hr.direction.T @ lr.direction)  # [hr axis, lr axis]
    match = [int(np.argmax(cos[:, a])) for a in range(3)]
    if len(set(match)) != 3 or np.any(cos[match, range(3)] < 1.0 - RELATIVE_TOLERANCE):
        return None
    return match


def _intermediate_grid(lr: Grid, hr: Grid, blur: np.ndarray) -> Grid:
    """A grid aligned with ``lr`` at (at most) the finest HR spacing, covering
    ``lr``'s extent plus :data:`INTERMEDIATE_MARGIN` LR voxels on blurred axes."""
    p = lr.spacing
    h = np.minimum(p, float(hr.spacing.min()))
    margin = np.where(blur, INTERMEDIATE_MARGIN * p, 0.0)
    n_lr = np.array(lr.size_ijk, dtype=np.float64)
    n = np.maximum(1, np.ceil((n_lr * p + 2 * margin) / h - COVER_TOLERANCE)).astype(int)
    # intermediate index u -> lr continuous index -0.5 + (-margin + (u + 0.5) h) / p
    to_lr = np.eye(4)
    to_lr[:3, :3] = np.diag(h / p)
    to_lr[:3, 3] = -0.5 + (-margin + 0.5 * h) / p
    return Grid((int(n[2]), int(n[1]), int(n[0])), lr.ijk_to_ras @ to_lr)


def _profile_widths(lr_grid: Grid, thickness_mm: float | Sequence[float] | None) -> np.ndarray:
    """IJK slice-profile widths: the LR spacing, or the given thickness."""
    if thickness_mm is None:
        return lr_grid.spacing
    t = np.asarray(thickness_mm, dtype=np.float64).ravel()
    if t.size == 1:
        widths = lr_grid.spacing.copy()
        widths[2] = float(t[0])
    elif t.size == 3:
        widths = t.copy()
    else:
        raise InputError(f"slice thickness must be one number (k) or three (i, j, k) in mm, got {thickness_mm!r}")
    if not np.all(np.isfinite(widths)) or np.any(widths <= 0):
        raise InputError(f"slice thickness must be positive, got {thickness_mm!r}")
    return widths


def simulate_acquisition(
    volume: Volume,
    lr_grid: Grid,
    profile: str = "gaussian",
    noise_sigma: float = 0.0,
    rng: np.random.Generator | None = None,
    thickness_mm: float | Sequence[float] | None = None,
) -> Volume:
    """Simulate acquiring the HR ``volume`` on the (possibly oblique) ``lr_grid``.

    Every ``lr_grid`` axis whose profile width exceeds the HR spacing along it
    gets a slice profile (``profile``) of that width (FWHM for Gaussian, width
    for boxcar); the width is the LR spacing unless ``thickness_mm`` (one
    number for the k axis, or ``(i, j, k)``) says otherwise, e.g. thinner
    slices with a gap.  The blurred image is sampled at the LR voxel centres
    with linear interpolation; then, if ``noise_sigma > 0``, Rician noise is
    added (:func:`rician_noise`).

    * If each LR axis is parallel to an HR axis, the blur is applied directly
      on the HR grid along the matching HR axes.
    * Otherwise (oblique), the HR image is first resampled (linear) onto an
      intermediate grid aligned with ``lr_grid`` at the finest HR spacing
      (covering ``lr_grid`` plus a margin), blurred along its axes there, and
      then sampled on ``lr_grid``.

    Outside the HR volume the edge values are extended.

    Geometry: the output is on ``lr_grid``.  Shapes: ``lr_grid.shape``
    (with the frame axis kept for 4D), float32.

    Args:
        rng: needed for noise; ``None`` uses a fresh unseeded
            ``np.random.default_rng()`` (not reproducible).

    Raises:
        InputError: unknown profile, negative noise sigma, non-positive
        thickness.
    """
    _check_volume(volume)
    if not isinstance(lr_grid, Grid):
        raise InputError(f"lr_grid must be a Grid, got {type(lr_grid).__name__}")
    _check_profile(profile)
    sigma = _check_non_negative(noise_sigma, "noise sigma")
    if sigma > 0:
        rng = np.random.default_rng() if rng is None else _check_rng(rng)
    hr = volume.grid
    p = _profile_widths(lr_grid, thickness_mm)
    match = _aligned_axes(hr, lr_grid)
    if match is not None:
        arr = _float32(volume)
        for a in range(3):
            b = match[a]
            if p[a] > hr.spacing[b] * (1.0 + RELATIVE_TOLERANCE):
                arr = _blur_array(arr, b, p[a] / hr.spacing[b], profile)
        out = resample_array(arr, hr, lr_grid, SAMPLING_INTERPOLATION)
    else:
        h = np.minimum(lr_grid.spacing, float(hr.spacing.min()))
        blur = p > h * (1.0 + RELATIVE_TOLERANCE)
        mid = _intermediate_grid(lr_grid, hr, blur)
        arr = resample_array(volume.array, hr, mid, INTERMEDIATE_INTERPOLATION)
        for a in range(3):
            if blur[a]:
                arr = _blur_array(arr, a, p[a] / mid.spacing[a], profile)
        out = resample_array(arr, mid, lr_grid, SAMPLING_INTERPOLATION)
    lr = volume.with_array(out, lr_grid.ijk_to_ras)
    if sigma > 0:
        lr = rician_noise(lr, sigma, rng)  # type: ignore[arg-type]
    return lr


def degrade_and_restore(
    volume: Volume,
    lr_grid: Grid,
    profile: str = "gaussian",
    noise_sigma: float = 0.0,
    rng: np.random.Generator | None = None,
    interpolation: str = "cubic",
) -> tuple[Volume, Volume]:
    """Simulate an LR acquisition and interpolate it back onto the HR grid.

    Returns:
        ``(lr, back)``: ``lr`` = :func:`simulate_acquisition` on ``lr_grid``;
        ``back`` = ``lr`` resampled (``interpolation``: nearest / linear /
        cubic, edges extended) onto ``volume.grid`` — same grid and shape as
        the input (REMIx's training input).  Both float32.
    """
    lr = simulate_acquisition(volume, lr_grid, profile, noise_sigma, rng)
    back = resample(lr, volume.grid, interpolation)
    return lr, back


def _integer_factors(factors: float | Sequence[float]) -> np.ndarray:
    f = _factors3(factors, "downsampling factors")
    r = np.round(f)
    if np.any(np.abs(f - r) > INTEGER_FACTOR_TOLERANCE) or np.any(r < 1):
        raise InputError(
            f"downsampling factors must be integers >= 1 (i, j, k), got {list(f)}"
        )
    return r.astype(int)


def simulate_low_resolution(
    volume: Volume,
    factors: float | Sequence[float],
    method: str = "boxcar",
    noise_sigma: float = 0.0,
    rng: np.random.Generator | None = None,
) -> tuple[Volume, Volume]:
    """Make an LR volume from an HR one by integer factors, for SR evaluation.

    The HR volume is first cropped at the high-index end of each axis so each
    IJK size is a multiple of the integer factor along it (origin and matrix
    unchanged).  The LR grid is :func:`~SuperResMoELib.geometry.scaled_grid`
    ``(cropped.grid, 1 / f)``: spacing ``f * s``, same physical extent, LR
    voxel ``m`` covering HR voxels ``m f .. m f + f - 1``.  Methods:

    * ``"boxcar"``: the exact mean of each block of ``f_i x f_j x f_k`` voxels.
    * ``"gaussian"``: Gaussian profile of FWHM = LR spacing along each axis
      with ``f > 1``, then linear sampling at the LR centres.
    * ``"kspace"``: :func:`kspace_truncate` by ``f``, then linear sampling at
      the LR centres.

    Then optional Rician noise (``noise_sigma > 0``; ``rng=None`` uses a fresh
    unseeded generator).

    Returns:
        ``(lr, hr_cropped)``, both float32, with
        ``scaled_grid(lr.grid, f).same_as(hr_cropped.grid)``.  Shapes:
        ``hr_cropped`` ``(K', J', I')`` with ``K' = f_k * (K // f_k)`` etc.,
        ``lr`` ``(K' / f_k, J' / f_j, I' / f_i)`` (4D frames kept).

    Raises:
        InputError: non-integer or < 1 factors, a size smaller than its
        factor, unknown method, negative noise sigma.
    """
    _check_volume(volume)
    f = _integer_factors(factors)
    if method not in LR_METHODS:
        raise InputError(f"unknown downsampling method {method!r}; choose one of {list(LR_METHODS)}")
    sigma = _check_non_negative(noise_sigma, "noise sigma")
    if sigma > 0:
        rng = np.random.default_rng() if rng is None else _check_rng(rng)
    size = np.array(volume.grid.size_ijk)
    if np.any(size < f):
        raise InputError(
            f"volume size (i, j, k) = {tuple(int(x) for x in size)} is smaller than the "
            f"downsampling factors {tuple(int(x) for x in f)}"
        )
    keep = (size // f) * f  # (i, j, k)
    arr = _float32(volume)[..., : keep[2], : keep[1], : keep[0]]
    hr = volume.with_array(np.ascontiguousarray(arr))
    lr_grid = scaled_grid(hr.grid, 1.0 / f)
    if method == "boxcar":
        lead = arr.shape[:-3]
        blocks = arr.reshape(lead + (keep[2] // f[2], f[2], keep[1] // f[1], f[1], keep[0] // f[0], f[0]))
        d = len(lead)
        out = blocks.mean(axis=(d + 1, d + 3, d + 5), dtype=np.float64).astype(np.float32)
    elif method == "gaussian":
        blurred = arr
        for a in range(3):
            if f[a] > 1:
                blurred = _blur_array(blurred, a, float(f[a]), "gaussian")
        out = resample_array(blurred, hr.grid, lr_grid, SAMPLING_INTERPOLATION)
    else:
        low = kspace_truncate(hr, f.astype(np.float64))
        out = resample_array(low.array, hr.grid, lr_grid, SAMPLING_INTERPOLATION)
    lr = hr.with_array(out, lr_grid.ijk_to_ras)
    if sigma > 0:
        lr = rician_noise(lr, sigma, rng)  # type: ignore[arg-type]
    return lr, hr
