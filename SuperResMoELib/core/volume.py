"""The volume data type: a voxel array in KJI order plus its IJK->RAS matrix.

Conventions (the same as 3D Slicer's):

* ``array`` is indexed ``array[k, j, i]`` (slice, row, column), the order of
  ``slicer.util.arrayFromVolume`` and SimpleITK.  A multi-contrast (4D) volume
  is a stack ``array[n, k, j, i]`` of ``n`` frames that share one geometry, with
  an optional :class:`AcquisitionTable` holding one row per frame.
* ``ijk_to_ras`` is a 4x4 homogeneous matrix mapping the continuous voxel index
  ``(i, j, k, 1)`` of a voxel *centre* to world coordinates in RAS millimetres.
* Spacing, origin and direction are derived from the matrix; spacing is listed
  in **IJK** order ``(s_i, s_j, s_k)`` while shapes are in **KJI** order.
  LPS<->RAS conversion and axis re-ordering happen only in :mod:`.io`.

Volumes are immutable: the array is stored as a read-only view, so no function
in the library can modify a caller's data in place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from SuperResMoELib.core.errors import InputError

#: Column names of a Super MUDI style acquisition table.
ACQUISITION_COLUMNS: tuple[str, ...] = ("gx", "gy", "gz", "b", "TI", "TE")


def _readonly(array: np.ndarray) -> np.ndarray:
    view = np.asarray(array).view()
    view.flags.writeable = False
    return view


def _check_matrix(matrix: np.ndarray) -> np.ndarray:
    m = np.array(matrix, dtype=np.float64)
    if m.shape == (3, 4):
        m = np.vstack([m, [0.0, 0.0, 0.0, 1.0]])
    if m.shape != (4, 4):
        raise InputError(f"IJK->RAS matrix must be 4x4, got shape {m.shape}")
    if not np.all(np.isfinite(m)):
        raise InputError("IJK->RAS matrix contains NaN or Inf")
    if not np.allclose(m[3], [0.0, 0.0, 0.0, 1.0]):
        raise InputError(f"IJK->RAS matrix must have last row 0 0 0 1, got {m[3].tolist()}")
    if abs(np.linalg.det(m[:3, :3])) < 1e-12:
        raise InputError("IJK->RAS matrix is singular (zero spacing or degenerate axes)")
    return m


def format_ijk(values: Sequence[float] | np.ndarray) -> str:
    """``(197, 233, 189)`` -> ``"197x233x189"``; floats rounded to 4 decimals."""
    return "x".join(f"{round(float(v), 4):g}" for v in values)


@dataclass(frozen=True, eq=False)
class Grid:
    """A voxel grid: a shape in KJI order and an IJK->RAS matrix.

    Attributes:
        shape: ``(n_k, n_j, n_i)``.
        ijk_to_ras: ``(4, 4)`` float64 matrix, voxel centre index -> RAS mm.
    """

    shape: tuple[int, int, int]
    ijk_to_ras: np.ndarray

    def __post_init__(self) -> None:
        shape = tuple(int(n) for n in self.shape)
        if len(shape) != 3 or min(shape) < 1:
            raise InputError(f"grid shape must be three positive sizes, got {self.shape}")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "ijk_to_ras", _readonly(_check_matrix(self.ijk_to_ras)))

    # ------------------------------------------------------------------ derived
    @property
    def size_ijk(self) -> tuple[int, int, int]:
        """Number of voxels along ``(i, j, k)``: the order every message and report uses
        (the same as :attr:`spacing`; :attr:`shape` is the array's KJI order)."""
        return (self.shape[2], self.shape[1], self.shape[0])

    @property
    def spacing(self) -> np.ndarray:
        """Voxel spacing in mm along ``(i, j, k)``: column norms of the 3x3 part."""
        return np.linalg.norm(self.ijk_to_ras[:3, :3], axis=0)

    @property
    def origin(self) -> np.ndarray:
        """RAS position (mm) of the centre of voxel ``(0, 0, 0)``."""
        return self.ijk_to_ras[:3, 3].copy()

    @property
    def direction(self) -> np.ndarray:
        """``(3, 3)`` matrix whose columns are the unit i, j, k axes in RAS."""
        return self.ijk_to_ras[:3, :3] / self.spacing

    @property
    def ras_to_ijk(self) -> np.ndarray:
        """Inverse of :attr:`ijk_to_ras`."""
        return np.linalg.inv(self.ijk_to_ras)

    @property
    def voxel_volume(self) -> float:
        """Volume of one voxel in mm^3 (``|det|`` of the 3x3 part)."""
        return float(abs(np.linalg.det(self.ijk_to_ras[:3, :3])))

    def index_to_ras(self, ijk: np.ndarray) -> np.ndarray:
        """Map ``(..., 3)`` continuous indices ``(i, j, k)`` to ``(..., 3)`` RAS mm."""
        ijk = np.asarray(ijk, dtype=np.float64)
        return ijk @ self.ijk_to_ras[:3, :3].T + self.ijk_to_ras[:3, 3]

    def ras_to_index(self, ras: np.ndarray) -> np.ndarray:
        """Map ``(..., 3)`` RAS mm to ``(..., 3)`` continuous indices ``(i, j, k)``."""
        inv = self.ras_to_ijk
        return np.asarray(ras, dtype=np.float64) @ inv[:3, :3].T + inv[:3, 3]

    def corners(self) -> np.ndarray:
        """``(8, 3)`` RAS positions of the outer voxel *edges* (the physical extent)."""
        n_i, n_j, n_k = self.size_ijk
        lo, hi = -0.5, np.array([n_i, n_j, n_k], dtype=np.float64) - 0.5
        pts = np.array(
            [[i, j, k] for i in (lo, hi[0]) for j in (lo, hi[1]) for k in (lo, hi[2])]
        )
        return self.index_to_ras(pts)

    def bounds(self) -> np.ndarray:
        """``(3, 2)`` axis-aligned RAS bounding box ``[[r0, r1], [a0, a1], [s0, s1]]``."""
        c = self.corners()
        return np.stack([c.min(axis=0), c.max(axis=0)], axis=1)

    def describe(self) -> str:
        """``"size 197x233x189, spacing 1x1x1 mm (i, j, k), origin [r, a, s] (RAS)"`` for messages:
        size and spacing in one order (IJK)."""
        return (f"size {format_ijk(self.size_ijk)}, spacing {format_ijk(self.spacing)} mm (i, j, k), "
                f"origin {np.round(self.origin, 4).tolist()} (RAS)")

    def same_as(self, other: "Grid", atol: float = 1e-4) -> bool:
        """True when shape matches and matrices agree within ``atol`` (mm)."""
        return self.shape == other.shape and bool(
            np.allclose(self.ijk_to_ras, other.ijk_to_ras, atol=atol, rtol=0.0)
        )

    @classmethod
    def from_spacing(
        cls,
        shape: Sequence[int],
        spacing: Sequence[float] = (1.0, 1.0, 1.0),
        origin: Sequence[float] = (0.0, 0.0, 0.0),
        direction: np.ndarray | None = None,
    ) -> "Grid":
        """Build a grid from KJI ``shape``, IJK ``spacing``, RAS ``origin`` and a
        ``(3, 3)`` direction whose columns are the i, j, k axes (identity by default)."""
        d = np.eye(3) if direction is None else np.asarray(direction, dtype=np.float64)
        m = np.eye(4)
        m[:3, :3] = d * np.asarray(spacing, dtype=np.float64)
        m[:3, 3] = origin
        return cls(tuple(shape), m)  # type: ignore[arg-type]


@dataclass(frozen=True, eq=False)
class AcquisitionTable:
    """One row of acquisition parameters per frame of a 4D volume.

    Attributes:
        values: ``(n_frames, n_columns)`` float64.
        columns: column names, by default :data:`ACQUISITION_COLUMNS`
            (gradient direction gx gy gz, b-value in s/mm^2, TI and TE in ms).
    """

    values: np.ndarray
    columns: tuple[str, ...] = ACQUISITION_COLUMNS

    def __post_init__(self) -> None:
        v = np.array(self.values, dtype=np.float64)
        if v.ndim == 1:
            v = v[None, :]
        if v.ndim != 2 or v.shape[1] != len(self.columns):
            raise InputError(
                f"acquisition table must have {len(self.columns)} columns "
                f"({' '.join(self.columns)}), got shape {np.shape(self.values)}"
            )
        if not np.all(np.isfinite(v)):
            raise InputError("acquisition table contains NaN or Inf")
        object.__setattr__(self, "values", _readonly(v))
        object.__setattr__(self, "columns", tuple(self.columns))

    def __len__(self) -> int:
        return int(self.values.shape[0])

    def column(self, name: str) -> np.ndarray:
        """The ``(n_frames,)`` values of one column."""
        return self.values[:, self.columns.index(name)]

    def rows(self, index: Sequence[int] | np.ndarray | slice) -> "AcquisitionTable":
        """A table holding the selected rows."""
        return AcquisitionTable(self.values[index], self.columns)


@dataclass(frozen=True, eq=False)
class Volume:
    """An image with geometry.

    Attributes:
        array: ``(K, J, I)`` or ``(N, K, J, I)`` voxel values (read-only view;
            any numeric dtype, the user's intensity units).
        ijk_to_ras: ``(4, 4)`` voxel-centre index -> RAS mm.
        acquisition: optional table with one row per frame (4D only).
        name: a label for messages and output file names.
    """

    array: np.ndarray
    ijk_to_ras: np.ndarray
    acquisition: AcquisitionTable | None = None
    name: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        arr = np.asarray(self.array)
        if arr.ndim not in (3, 4):
            raise InputError(
                f"{self._label()}expected a 3D volume or a 4D stack of volumes, got a "
                f"{arr.ndim}D array of shape {arr.shape}"
            )
        if arr.size == 0:
            raise InputError(f"{self._label()}the image is empty (shape {arr.shape})")
        object.__setattr__(self, "array", _readonly(arr))
        object.__setattr__(self, "ijk_to_ras", _readonly(_check_matrix(self.ijk_to_ras)))
        if self.acquisition is not None:
            if arr.ndim != 4 and len(self.acquisition) != 1:
                raise InputError(
                    f"{self._label()}a 3D volume takes one acquisition row, got "
                    f"{len(self.acquisition)}"
                )
            if arr.ndim == 4 and len(self.acquisition) != arr.shape[0]:
                raise InputError(
                    f"{self._label()}the acquisition table has {len(self.acquisition)} rows "
                    f"but the volume has {arr.shape[0]} frames"
                )

    def _label(self) -> str:
        return f"{self.name}: " if self.name else ""

    # ------------------------------------------------------------------ derived
    @property
    def grid(self) -> Grid:
        """The spatial grid (shape without the frame axis)."""
        return Grid(self.array.shape[-3:], self.ijk_to_ras)  # type: ignore[arg-type]

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        """``(K, J, I)``."""
        return tuple(self.array.shape[-3:])  # type: ignore[return-value]

    @property
    def is_4d(self) -> bool:
        return self.array.ndim == 4

    @property
    def n_frames(self) -> int:
        return int(self.array.shape[0]) if self.is_4d else 1

    @property
    def spacing(self) -> np.ndarray:
        return self.grid.spacing

    @property
    def origin(self) -> np.ndarray:
        return self.grid.origin

    @property
    def direction(self) -> np.ndarray:
        return self.grid.direction

    def frames(self) -> list["Volume"]:
        """The 3D frames of a 4D volume (a one-element list for a 3D volume)."""
        if not self.is_4d:
            return [self]
        return [self.frame(n) for n in range(self.n_frames)]

    def frame(self, n: int) -> "Volume":
        """Frame ``n`` of a 4D volume as a 3D volume (with its acquisition row)."""
        if not self.is_4d:
            if n != 0:
                raise IndexError(f"a 3D volume has only frame 0, asked for {n}")
            return self
        acq = self.acquisition.rows([n]) if self.acquisition is not None else None
        return Volume(self.array[n], self.ijk_to_ras, acq, f"{self.name}[{n}]", dict(self.meta))

    def with_array(
        self,
        array: np.ndarray,
        ijk_to_ras: np.ndarray | None = None,
        name: str | None = None,
        acquisition: AcquisitionTable | None | str = "keep",
    ) -> "Volume":
        """A new volume sharing this one's metadata, with a new array (and grid)."""
        acq = self.acquisition if acquisition == "keep" else acquisition
        return Volume(
            array,
            self.ijk_to_ras if ijk_to_ras is None else ijk_to_ras,
            acq,  # type: ignore[arg-type]
            self.name if name is None else name,
            dict(self.meta),
        )

    @classmethod
    def on_grid(cls, array: np.ndarray, grid: Grid, **kwargs) -> "Volume":
        """A volume with ``array`` (``(K, J, I)`` or ``(N, K, J, I)``) on ``grid``."""
        if tuple(np.shape(array)[-3:]) != grid.shape:
            raise InputError(f"array shape {np.shape(array)} does not fit grid {grid.shape}")
        return cls(array, grid.ijk_to_ras, **kwargs)

    @classmethod
    def stack(cls, volumes: Sequence["Volume"], name: str = "") -> "Volume":
        """Stack 3D volumes sharing one grid into a 4D volume (tables concatenated)."""
        if not volumes:
            raise InputError("cannot stack zero volumes")
        grid = volumes[0].grid
        for v in volumes[1:]:
            if not v.grid.same_as(grid):
                raise InputError("cannot stack volumes with different grids")
        arr = np.stack([np.asarray(v.array) for v in volumes])
        tables = [v.acquisition for v in volumes]
        acq = None
        if all(t is not None for t in tables):
            acq = AcquisitionTable(np.concatenate([t.values for t in tables]), tables[0].columns)  # type: ignore[union-attr]
        return cls(arr, grid.ijk_to_ras, acq, name or volumes[0].name)
