"""MUDI-like subjects: :class:`MudiSubject` (maps, protocol, noisy HR and LR data) and its constructors."""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from SuperResMoELib.core.errors import InputError
from SuperResMoELib.core.geometry import scaled_grid
from SuperResMoELib.core.tasks import SR_TASKS
from SuperResMoELib.core.volume import AcquisitionTable, Grid, Volume
from SuperResMoELib.sample_data.cache import cached_arrays
from SuperResMoELib.sample_data.mudi_maps import _generate_mudi_maps, _mudi_layout, subject_draw
from SuperResMoELib.sample_data.mudi_physics import MUDI_NOISE_SIGMA, reference_wm_signal, signal_equation
from SuperResMoELib.sample_data.mudi_variation import MudiVariation, mudi_variation
from SuperResMoELib.sample_data.mudi_protocol import mudi_acquisition_table
from SuperResMoELib.sample_data.seeds import _check_index, _rng
from SuperResMoELib.simulation.block_mean import block_mean, crop_to_blocks

#: Number of MUDI-like subjects in the standard set; 0..3 train, 4 held out.
MUDI_SUBJECTS: int = 5
MUDI_HELD_OUT: int = 4
#: Super MUDI tasks -> integer block-average factors (i, j, k) (from
#: :data:`SuperResMoELib.core.tasks.SR_TASKS`).
MUDI_TASKS: dict[str, tuple[int, int, int]] = {n: t.factors for n, t in SR_TASKS.items()}
#: The maps of a MUDI-like subject (the cache stores exactly these).
MUDI_MAP_NAMES: tuple[str, ...] = ("PD", "T1", "T2s", "ADC", "FA", "V1")


@dataclass(eq=False)
class MudiSubject:
    """A MUDI-like diffusion-relaxometry subject (maps + protocol + noise level).

    Attributes:
        index: subject number (0 .. :data:`MUDI_SUBJECTS` - 1 in the standard set).
        maps: KJI float32 maps on ``grid``, 0 outside the brain mask:
            ``"PD"`` (relative, CSF ~ 1), ``"T1"`` and ``"T2s"`` (ms),
            ``"ADC"`` (mean diffusivity, mm^2/s), ``"FA"`` (0..1), and
            ``"V1"`` ``(3, K, J, I)``: unit WM fibre direction (RAS x, y, z).
        grid: the 2.5 mm isotropic HR grid (brain box + margin, even sizes).
        table: the acquisition table
            (:func:`~SuperResMoELib.sample_data.mudi_protocol.mudi_acquisition_table`).
        noise_sigma: Rician noise sigma of :meth:`hr` (scanner units).
        seed: the generation seed (noise streams are keyed by it).
        meta: generation info (seconds, cache hit or miss, cache file).
    """

    index: int
    maps: dict[str, np.ndarray]
    grid: Grid
    table: AcquisitionTable
    noise_sigma: float
    seed: int
    meta: dict = field(default_factory=dict)

    # ------------------------------------------------------------ geometry
    @property
    def mask(self) -> np.ndarray:
        """Boolean brain mask ``(K, J, I)``: where signal and noise live."""
        return self.maps["PD"] > 0

    def _rows(self, rows: Sequence[int] | slice | None) -> np.ndarray:
        n = len(self.table)
        if rows is None:
            return np.arange(n)
        if isinstance(rows, slice):
            return np.arange(n)[rows]
        idx = np.asarray(rows).ravel()
        if idx.size and (not np.issubdtype(idx.dtype, np.integer) or idx.min() < -n or idx.max() >= n):
            raise InputError(f"MUDI rows must be integers in 0..{n - 1}, got {list(idx[:8])}")
        return idx.astype(np.int64) % n if idx.size else idx.astype(np.int64)

    @functools.cached_property
    def _voxels(self) -> dict[str, np.ndarray]:
        """Per brain voxel: PD, rates, MD, anisotropy a, fibre direction."""
        m = self.mask
        fa = self.maps["FA"][m].astype(np.float64)
        return {
            "pd": self.maps["PD"][m].astype(np.float64),
            "t1": self.maps["T1"][m].astype(np.float64),
            "t2s": self.maps["T2s"][m].astype(np.float64),
            "md": self.maps["ADC"][m].astype(np.float64),
            # cylindrical tensor: l_par = MD (1 + 2a), l_perp = MD (1 - a); FA = sqrt(3) a / sqrt(1 + 2 a^2)
            "a": fa / np.sqrt(3.0 - 2.0 * fa**2),
            "v": self.maps["V1"][:, m].astype(np.float64),
        }

    def diffusivity(self, gradient: Sequence[float]) -> np.ndarray:
        """Apparent diffusivity ``(K, J, I)`` along unit ``gradient`` (RAS):
        ``MD [(1 - a) + 3 a (g . v)^2]`` (the ADC map when ``g`` is 0)."""
        out = np.zeros(self.grid.shape, dtype=np.float64)
        out[self.mask] = self._diffusivity(np.asarray(gradient, dtype=np.float64))
        return out

    def _diffusivity(self, g: np.ndarray) -> np.ndarray:
        vox = self._voxels
        norm = float(np.linalg.norm(g))
        if norm == 0.0:
            return vox["md"]
        cos2 = ((g / norm) @ vox["v"]) ** 2
        return vox["md"] * ((1.0 - vox["a"]) + 3.0 * vox["a"] * cos2)

    # ------------------------------------------------------------- signals
    def _masked_signal(self, idx: np.ndarray) -> np.ndarray:
        """``(len(idx), n_brain_voxels)`` float32 noise-free signal in the mask.

        The relaxation factor is computed once per distinct (TI, TE) among the
        requested rows; each row then only costs its diffusion factor.
        """
        vox = self._voxels
        out = np.empty((idx.size, vox["pd"].size), dtype=np.float32)
        cols = self.table.values
        relax: dict[tuple[float, float], np.ndarray] = {}
        zero = np.zeros_like(vox["md"])
        for n, r in enumerate(idx):
            gx, gy, gz, b, ti, te = cols[r]
            key = (float(ti), float(te))
            if key not in relax:
                relax[key] = signal_equation(vox["pd"], vox["t1"], vox["t2s"], zero, 0.0, ti, te)
            if b == 0.0:
                out[n] = relax[key]
            else:
                out[n] = relax[key] * np.exp(-b * self._diffusivity(np.array([gx, gy, gz])))
        return out

    def _scatter(self, values: np.ndarray) -> np.ndarray:
        out = np.zeros((values.shape[0], int(np.prod(self.grid.shape))), dtype=np.float32)
        flat = np.flatnonzero(self.mask)
        for n in range(values.shape[0]):
            out[n, flat] = values[n]
        return out.reshape((values.shape[0],) + self.grid.shape)

    def signal(self, rows: Sequence[int] | slice | None = None) -> np.ndarray:
        """Noise-free signal ``(n_rows, K, J, I)`` float32 for the given table rows.

        ``S = MUDI_SIGNAL_SCALE * PD * |1 - 2 exp(-TI/T1) + exp(-TR/T1)| *
        exp(-TE/T2*) * exp(-b D(g))`` (:func:`~.mudi_physics.signal_equation`) with ``D(g)``
        the apparent diffusivity along the row's gradient (:meth:`diffusivity`);
        0 outside the mask.  Only the requested rows are computed.
        """
        return self._scatter(self._masked_signal(self._rows(rows)))

    def _noisy(self, idx: np.ndarray) -> np.ndarray:
        values = self._masked_signal(idx)
        sigma = np.float32(self.noise_sigma)
        for n, r in enumerate(idx):
            rng = _rng(self.seed, self.index, "mudi_noise", int(r))
            noise = rng.standard_normal((2, values.shape[1]), dtype=np.float32)
            noise *= sigma
            values[n] = np.hypot(values[n] + noise[0], noise[1])
        return self._scatter(values)

    def hr(self, rows: Sequence[int] | slice | None = None) -> Volume:
        """The noisy 2.5 mm HR data: a 4D volume ``(n_rows, K, J, I)`` float32.

        Rician noise (sigma :attr:`noise_sigma`) inside the brain mask, exactly 0
        outside; the noise of row ``r`` comes from its own stream keyed by
        ``(seed, index, r)``, so it does not depend on the other rows asked for.
        The acquisition table rows are attached.
        """
        idx = self._rows(rows)
        return Volume(self._noisy(idx), self.grid.ijk_to_ras, self.table.rows(idx), name=f"mudi{self.index}_hr")

    def lr(self, rows: Sequence[int] | slice | None = None, task: str = "aniso") -> tuple[Volume, Volume]:
        """``(lr, hr)`` for a Super MUDI task: the block average (boxcar) of :meth:`hr`.

        ``"aniso"``: 2.5 x 2.5 x 5 mm (factor 2 along k); ``"iso"``: 5 mm
        (factor 2 along i, j, k).  ``hr`` is the HR cropped to whole LR blocks
        (the grid sizes are even, so nothing is cropped) and
        ``scaled_grid(lr.grid, factors).same_as(hr.grid)``.
        """
        return mudi_downsample(self.hr(rows), task)


def mudi_downsample(hr: Volume, task: str = "aniso") -> tuple[Volume, Volume]:
    """Block-average a (3D or 4D) HR volume for a Super MUDI ``task``
    (:data:`MUDI_TASKS`); returns ``(lr, hr_cropped)``, tables kept.

    ``hr_cropped`` is ``hr`` ``(..., K, J, I)`` cropped at the high-index end
    to whole blocks; ``lr`` ``(..., K / f_k, J / f_j, I / f_i)`` float32 is the
    :func:`~SuperResMoELib.simulation.block_mean.block_mean` of it, on
    ``scaled_grid(hr_cropped.grid, 1 / f)`` (same extent, voxel edges aligned).
    """
    if task not in MUDI_TASKS:
        raise InputError(f"unknown MUDI task {task!r}; choose one of {sorted(MUDI_TASKS)}")
    fi, fj, fk = MUDI_TASKS[task]
    arr = crop_to_blocks(np.asarray(hr.array, dtype=np.float32), (fi, fj, fk))
    low = block_mean(arr, (fi, fj, fk))
    hr_c = hr.with_array(np.ascontiguousarray(arr))
    grid = scaled_grid(hr_c.grid, (1.0 / fi, 1.0 / fj, 1.0 / fk))
    name = hr.name.removesuffix("_hr")
    lr = hr_c.with_array(low, grid.ijk_to_ras, name=f"{name}_lr_{task}")
    return lr, hr_c


def mudi_subject(index: int, seed: int = 0, variation: str | MudiVariation = "standard") -> MudiSubject:
    """A MUDI-like subject: tissue maps -> parameter maps at 2.5 mm (cached).

    Construction: the template GM / WM / CSF fractions are pulled back through
    a per-subject smooth diffeomorphic warp (as
    :func:`~SuperResMoELib.sample_data.t1.t1_subject`, its own random stream;
    every subject, 0 included, is warped), area-averaged exactly onto the
    shared 2.5 mm grid (:func:`~.mudi_maps._mudi_layout`), and mixed with the
    per-subject jittered (:data:`~.mudi_maps.MUDI_PARAM_JITTER`) literature
    values of :data:`~.mudi_physics.TISSUE_PARAMETERS`: ``PD = sum f_t PD_t``; ``1/T1``, ``1/T2*``,
    ``ADC`` and ``FA`` = means weighted by the renormalised fractions.  WM
    fibre directions come from the structure tensor of the WM fraction.
    Outside the mask (tissue fraction < :data:`~.mudi_maps.MUDI_MASK_THRESHOLD`)
    all maps are 0.  Noise sigma = :data:`~.mudi_physics.MUDI_NOISE_SIGMA` for
    every subject.  The maps (:data:`MUDI_MAP_NAMES`) are read-only KJI arrays
    on the 2.5 mm grid; the table is :func:`~.mudi_protocol.mudi_acquisition_table` ``(seed)``.

    ``variation`` (a name of :data:`~.mudi_variation.MUDI_VARIATIONS` or a
    :class:`~.mudi_variation.MudiVariation`): ``"standard"`` is the set
    above; ``"wide"`` varies pose, tissue parameters, mask, bias and noise
    per subject (:mod:`~.mudi_variation`), on a grid with a wider margin.
    A subject of another set is another subject: same index, other maps.
    """
    index = _check_index(index, "MUDI subject")
    seed = _check_index(seed, "seed")
    var = mudi_variation(variation)
    t0 = time.perf_counter()
    maps, status, path = cached_arrays(
        var.cache_kind(), index, seed, MUDI_MAP_NAMES,
        lambda: {**_generate_mudi_maps(index, seed, var), "ijk_to_ras": _mudi_layout(var.margin_mm)[0].ijk_to_ras},
    )
    grid = Grid(maps["PD"].shape, maps.pop("ijk_to_ras"))
    for a in maps.values():
        a.flags.writeable = False
    table = mudi_acquisition_table(seed)
    seconds = time.perf_counter() - t0
    meta = {"seconds": seconds, "cache": status, "cache_file": str(path) if path else None,
            "variation": var.name}
    sigma = MUDI_NOISE_SIGMA if var.is_standard else (
        subject_draw(index, seed, var).noise_fraction * reference_wm_signal())
    return MudiSubject(index, maps, grid, table, sigma, seed, meta)
