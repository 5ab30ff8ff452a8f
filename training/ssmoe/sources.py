"""Where SS-MoE's multi-contrast data come from: the embedded MUDI-like sample
subjects, or a folder of real Super MUDI data.

A *source* gives, per subject, 4D LR/HR volume pairs for a task and the HR
brain mask, plus the shared acquisition table (one row ``gx gy gz b TI TE`` per
volume).  ``--data sample`` uses :mod:`SuperResMoELib.sample_data`;
``--data mudi:<folder>`` reads::

    <folder>/parameters_new.txt                 the acquisition table (shared)
    <folder>/<subject>/  one folder per subject, sorted by name, containing
        HR    hr.nii.gz   or *resized*.nii.gz    (4D, one volume per table row)
        LR    lr_<task>.nii.gz or *anisotropic*.nii.gz / *isotropic*.nii.gz
              (optional: block averages of the HR are used when absent)
        mask  *mask*.nii.gz (optional: else voxels where the first HR volume != 0)

The last subject is held out for evaluation, as the SS-MoE reference does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from SuperResMoELib import io
from SuperResMoELib.core.errors import InputError
from SuperResMoELib.core.geometry import scaled_grid
from SuperResMoELib.sample_data import MUDI_HELD_OUT, MUDI_SUBJECTS, MUDI_TASKS, mudi_downsample, mudi_subject
from SuperResMoELib.core.volume import AcquisitionTable, Volume

TABLE_NAMES = ("parameters_new.txt", "parameters.txt")
HR_PATTERNS = ("hr.nii.gz", "hr.nii", "*resized*.nii.gz", "*resized*.nii")
LR_PATTERNS = {"aniso": ("lr_aniso.nii.gz", "lr_aniso.nii", "*anisotropic*.nii.gz", "*anisotropic*.nii"),
               "iso": ("lr_iso.nii.gz", "lr_iso.nii", "*_isotropic*.nii.gz", "*_isotropic*.nii")}
MASK_PATTERNS = ("*mask*.nii.gz", "*mask*.nii")


class MudiSource(Protocol):
    """Multi-contrast subjects sharing one acquisition table."""

    description: str
    n_subjects: int
    held_out: int

    def table(self) -> AcquisitionTable: ...

    def mask(self, subject: int) -> np.ndarray: ...

    def pair(self, subject: int, rows: Sequence[int], task: str) -> tuple[Volume, Volume]: ...


class SampleSource:
    """The embedded MUDI-like subjects (:func:`SuperResMoELib.sample_data.mudi_subject`)."""

    def __init__(self, data_seed: int = 0, variation: str = "standard") -> None:
        self.data_seed = data_seed
        self.variation = variation
        extra = "" if variation == "standard" else f", {variation} variation"
        self.description = f"embedded MUDI-like sample subjects (seed {data_seed}{extra})"
        self.n_subjects = MUDI_SUBJECTS
        self.held_out = MUDI_HELD_OUT

    def _subject(self, subject: int):
        return mudi_subject(subject, self.data_seed, self.variation)

    def table(self) -> AcquisitionTable:
        return self._subject(0).table

    def mask(self, subject: int) -> np.ndarray:
        return self._subject(subject).mask

    def pair(self, subject: int, rows: Sequence[int], task: str) -> tuple[Volume, Volume]:
        return mudi_downsample(self._subject(subject).hr(list(rows)), task)


def _find(folder: Path, patterns: Sequence[str]) -> Path | None:
    for pattern in patterns:
        hits = sorted(folder.glob(pattern))
        if hits:
            return hits[0]
    return None


class FolderSource:
    """Real Super MUDI data laid out as in the module docstring."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise InputError(f"{self.folder}: Super MUDI folder not found")
        table = _find(self.folder, TABLE_NAMES)
        if table is None:
            raise InputError(f"{self.folder}: no {' or '.join(TABLE_NAMES)} (rows gx gy gz b TI TE)")
        self._table = io.read_acquisition_table(table)
        self.subjects = sorted(p for p in self.folder.iterdir() if p.is_dir() and _find(p, HR_PATTERNS))
        if len(self.subjects) < 2:
            raise InputError(f"{self.folder}: need at least 2 subject folders with an HR image, "
                             f"found {len(self.subjects)}")
        self.n_subjects = len(self.subjects)
        self.held_out = self.n_subjects - 1
        self.description = f"Super MUDI folder {self.folder} ({self.n_subjects} subjects)"
        self._cache: dict[tuple[int, str], Volume] = {}

    def table(self) -> AcquisitionTable:
        return self._table

    def _volume(self, subject: int, kind: str) -> Volume | None:
        key = (subject, kind)
        if key not in self._cache:
            folder = self.subjects[subject]
            patterns = HR_PATTERNS if kind == "hr" else LR_PATTERNS[kind] if kind in LR_PATTERNS else MASK_PATTERNS
            path = _find(folder, patterns)
            if path is None:
                return None
            vol = io.read_volume(path)
            if kind != "mask" and (not vol.is_4d or vol.n_frames != len(self._table)):
                raise InputError(f"{path}: expected a 4D image with {len(self._table)} volumes "
                                 f"(one per table row), got shape {vol.array.shape}")
            self._cache[key] = vol
        return self._cache[key]

    def mask(self, subject: int) -> np.ndarray:
        m = self._volume(subject, "mask")
        if m is not None:
            return np.asarray(m.array) > 0
        return np.asarray(self._volume(subject, "hr").array[0]) != 0  # type: ignore[union-attr]

    def pair(self, subject: int, rows: Sequence[int], task: str) -> tuple[Volume, Volume]:
        hr = self._volume(subject, "hr")
        assert hr is not None
        idx = np.asarray(rows)
        hr_rows = hr.with_array(np.asarray(hr.array[idx], np.float32), acquisition=self._table.rows(idx))
        lr = self._volume(subject, task)
        if lr is None:
            return mudi_downsample(hr_rows, task)
        fi, fj, fk = MUDI_TASKS[task]
        target = scaled_grid(lr.grid, (fi, fj, fk))
        k, j, i = target.shape
        arr = np.asarray(hr_rows.array)
        if arr.shape[1] < k or arr.shape[2] < j or arr.shape[3] < i:
            raise InputError(f"{self.subjects[subject]}: HR {arr.shape[1:]} smaller than LR x factors {target.shape}")
        hr_c = hr_rows.with_array(np.ascontiguousarray(arr[:, :k, :j, :i]))
        lr_rows = lr.with_array(np.asarray(lr.array[idx], np.float32), acquisition=self._table.rows(idx))
        return lr_rows, hr_c


def open_source(spec: str, data_seed: int = 0, variation: str = "standard") -> MudiSource:
    """``"sample"`` (its subjects of ``variation``,
    :data:`SuperResMoELib.sample_data.MUDI_VARIATIONS`), ``"mudi:<folder>"``,
    ``"outgen"`` (the out-of-generator qMRI test head,
    :mod:`training.outgen.qmri`; evaluation only) or ``"outgen-validation"``
    (its validation head: model selection only)."""
    if spec == "sample":
        return SampleSource(data_seed, variation)
    if spec in ("outgen", "outgen-validation"):
        from ..outgen.qmri import OutgenSource

        return OutgenSource("test" if spec == "outgen" else "validation")
    if spec.startswith("mudi:"):
        return FolderSource(spec[len("mudi:"):])
    raise InputError(f"unknown data {spec!r}; use 'sample', 'mudi:<folder>', 'outgen' or 'outgen-validation'")
