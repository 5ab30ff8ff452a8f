"""Reading and writing volumes: NIfTI (``.nii``, ``.nii.gz``), NRRD (``.nrrd``)
and MetaImage (``.mha``), plus Super MUDI acquisition tables.

This is the only place where file conventions meet the library's:

* NIfTI stores data in ``(i, j, k[, t])`` order and an IJK->RAS affine
  (sform, else qform): the array is transposed to ``(t,) k, j, i``.
* NRRD and MetaImage describe geometry in LPS: the first two world rows are
  negated to get RAS.
* Geometry is written in float64 where the format allows it (NRRD, MetaImage);
  NIfTI stores its sform in float32, so NIfTI round trips are exact to float32
  precision (about 1e-5 mm at typical coordinates).

All writers are atomic (temporary file + rename) and never modify the volume.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from SuperResMoELib.io.atomic import atomic_path, write_text_atomic
from SuperResMoELib.core.errors import InputError
from SuperResMoELib.core.volume import ACQUISITION_COLUMNS, AcquisitionTable, Volume

#: File endings this module reads and writes (lower case).
SUPPORTED_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".mha")

#: dtypes written unchanged; anything else is written as float32.
WRITABLE_DTYPES: tuple[str, ...] = ("uint8", "int16", "uint16", "int32", "float32", "float64")

_LPS_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


#: Output compression names -> zlib level: ``fast`` (the default; a few percent
#: larger files, several times faster to write) or ``max``.
COMPRESSION_LEVELS: dict[str, int] = {"fast": 1, "max": 9}


def volume_suffix(path: str | os.PathLike) -> str:
    """The recognised suffix of ``path`` (e.g. ``".nii.gz"``) or an :class:`InputError`."""
    name = Path(path).name.lower()
    for suffix in SUPPORTED_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    raise InputError(
        f"{Path(path).name}: unknown image format; use one of {', '.join(SUPPORTED_SUFFIXES)}"
    )


def is_volume_file(path: str | os.PathLike) -> bool:
    """True when ``path`` has a supported image suffix."""
    try:
        volume_suffix(path)
        return True
    except InputError:
        return False


def volume_stem(path: str | os.PathLike) -> str:
    """File name without the image suffix (``"a.nii.gz"`` -> ``"a"``)."""
    name = Path(path).name
    return name[: -len(volume_suffix(path))]


# --------------------------------------------------------------------- reading
def read_volume(path: str | os.PathLike, table: str | os.PathLike | None = None) -> Volume:
    """Read a 3D or 4D image.

    Args:
        path: ``.nii``, ``.nii.gz``, ``.nrrd`` or ``.mha`` file.
        table: optional acquisition table for a 4D image (Super MUDI
            ``parameters_new.txt``: one row ``gx gy gz b TI TE`` per frame).

    Returns:
        A :class:`Volume` with the file's dtype (``(K, J, I)`` or ``(N, K, J, I)``).

    Raises:
        InputError: missing or unreadable file, unknown format, a 2D or 5D
            image, an empty image, a table whose length does not match.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: file not found")
    if p.is_dir():
        raise InputError(f"{p}: is a folder, expected an image file")
    suffix = volume_suffix(p)
    try:
        if suffix in (".nii", ".nii.gz"):
            array, matrix = _read_nifti(p)
        elif suffix == ".nrrd":
            array, matrix = _read_nrrd(p)
        else:
            array, matrix = _read_mha(p)
    except InputError:
        raise
    except Exception as exc:  # format libraries raise many types
        raise InputError(f"{p.name}: cannot read the file ({type(exc).__name__}: {exc})") from exc
    if array.ndim == 2:
        raise InputError(f"{p.name}: this is a 2D image {array.shape}; a 3D volume is needed")
    if array.ndim > 4:
        raise InputError(
            f"{p.name}: {array.ndim}D images are not supported (shape {array.shape}); "
            "use a 3D volume or a 4D stack of volumes"
        )
    acquisition = read_acquisition_table(table) if table is not None else None
    return Volume(array, matrix, acquisition, name=volume_stem(p))


def _read_nifti(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    img: Any = nib.load(str(path))  # a NIfTI image (nibabel's stubs type it as the base class)
    data = np.asanyarray(img.dataobj)
    if data.ndim == 5 and data.shape[3] == 1:  # NIfTI vector image: (i, j, k, 1, c)
        data = data[:, :, :, 0, :]
    if data.ndim in (3, 4):  # (i, j, k[, t]) -> ([t,] k, j, i): reverse every axis
        data = np.ascontiguousarray(data.T)
    return data, np.asarray(img.affine, dtype=np.float64)


def _read_nrrd(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import nrrd

    data, header = nrrd.read(str(path), index_order="C")
    directions = header.get("space directions")
    if directions is None:
        raise InputError(f"{path.name}: NRRD has no 'space directions'; geometry unknown")
    rows = [None if d is None or not np.all(np.isfinite(np.asarray(d, dtype=float))) else np.asarray(d, float)
            for d in directions]
    spatial = [n for n, d in enumerate(rows) if d is not None]  # NRRD axis order (fastest first)
    if len(spatial) != 3:
        return data, np.eye(4)  # let the caller report the dimensionality
    m = np.eye(4)
    for col, axis in enumerate(spatial):
        m[:3, col] = rows[axis]
    origin = header.get("space origin")
    m[:3, 3] = np.zeros(3) if origin is None else np.asarray(origin, dtype=float)
    space = str(header.get("space", "left-posterior-superior")).lower()
    if space in ("left-posterior-superior", "lps"):
        m = _LPS_RAS @ m
    elif space not in ("right-anterior-superior", "ras"):
        raise InputError(f"{path.name}: NRRD space {space!r} is not supported (use RAS or LPS)")
    nonspatial = [n for n, d in enumerate(rows) if d is None]
    if nonspatial:  # C order reverses NRRD axes: NRRD axis a is array axis ndim-1-a
        frame_axis = data.ndim - 1 - nonspatial[0]
        data = np.moveaxis(data, frame_axis, 0)
    return data, m


def _read_mha(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import SimpleITK as sitk

    img = sitk.ReadImage(str(path))
    data = sitk.GetArrayFromImage(img)  # (k, j, i[, components])
    dim = img.GetDimension()
    if img.GetNumberOfComponentsPerPixel() > 1:
        data = np.moveaxis(data, -1, 0)
    if dim != 3:
        return data, np.eye(4)
    m = np.eye(4)
    direction = np.asarray(img.GetDirection(), dtype=np.float64).reshape(3, 3)
    m[:3, :3] = direction * np.asarray(img.GetSpacing(), dtype=np.float64)
    m[:3, 3] = img.GetOrigin()
    return data, _LPS_RAS @ m


def read_acquisition_table(path: str | os.PathLike) -> AcquisitionTable:
    """Read a Super MUDI style table: one row ``gx gy gz b TI TE`` per frame,
    whitespace or comma separated; an optional header line naming the columns."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: acquisition table not found")
    lines = [ln.strip() for ln in p.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    if lines and not _is_numeric_row(lines[0]):
        lines = lines[1:]
    try:
        values = np.array([[float(x) for x in ln.replace(",", " ").split()] for ln in lines])
    except ValueError as exc:
        raise InputError(f"{p.name}: acquisition table has a non-numeric entry ({exc})") from exc
    if values.ndim != 2 or values.shape[1] != len(ACQUISITION_COLUMNS):
        raise InputError(
            f"{p.name}: acquisition table needs {len(ACQUISITION_COLUMNS)} columns "
            f"({' '.join(ACQUISITION_COLUMNS)}) on every row"
        )
    return AcquisitionTable(values)


def _is_numeric_row(line: str) -> bool:
    try:
        [float(x) for x in line.replace(",", " ").split()]
        return True
    except ValueError:
        return False


def write_acquisition_table(table: AcquisitionTable, path: str | os.PathLike) -> Path:
    """Write ``table`` as whitespace-separated rows (Super MUDI layout, no header)."""
    text = "\n".join(" ".join(f"{v:.10g}" for v in row) for row in table.values) + "\n"
    write_text_atomic(path, text)
    return Path(path)


# --------------------------------------------------------------------- writing
def _output_array(volume: Volume, dtype: str | np.dtype | None) -> np.ndarray:
    arr = np.asarray(volume.array)
    if dtype is not None:
        return arr.astype(dtype)
    if arr.dtype.name in WRITABLE_DTYPES:
        return arr
    return arr.astype(np.float32)


def write_volume(
    volume: Volume,
    path: str | os.PathLike,
    dtype: str | np.dtype | None = None,
    table: bool = True,
    compression: str = "fast",
) -> Path:
    """Write ``volume`` atomically; the format follows the suffix of ``path``.

    Args:
        volume: 3D or 4D volume (4D NIfTI/NRRD only).
        path: output file (``.nii``, ``.nii.gz``, ``.nrrd``, ``.mha``).
        dtype: cast before writing (default: keep common types, else float32).
        table: for a 4D volume with an acquisition table, also write it next to
            the image as ``<stem>_parameters.txt``.
        compression: :data:`COMPRESSION_LEVELS` key: the zlib level of
            ``.nii.gz``, gzip NRRD and compressed MetaImage files.

    Returns:
        The written path.
    """
    p = Path(path)
    suffix = volume_suffix(p)
    if compression not in COMPRESSION_LEVELS:
        raise InputError(f"compression must be one of {', '.join(COMPRESSION_LEVELS)}, got {compression!r}")
    level = COMPRESSION_LEVELS[compression]
    arr = _output_array(volume, dtype)
    with atomic_path(p) as tmp:
        if suffix in (".nii", ".nii.gz"):
            _write_nifti(arr, volume.ijk_to_ras, tmp, level)
        elif suffix == ".nrrd":
            _write_nrrd(arr, volume.ijk_to_ras, tmp, level)
        else:
            if arr.ndim != 3:
                raise InputError(f"{p.name}: MetaImage output supports 3D volumes only; use .nii.gz or .nrrd")
            _write_mha(arr, volume.ijk_to_ras, tmp, level)
    if table and volume.is_4d and volume.acquisition is not None:
        write_acquisition_table(volume.acquisition, p.with_name(volume_stem(p) + "_parameters.txt"))
    return p


def _write_nifti(arr: np.ndarray, matrix: np.ndarray, path: Path, level: int) -> None:
    import nibabel as nib
    from nibabel.openers import Opener

    data = arr.T  # ([t,] k, j, i) -> (i, j, k[, t])
    img = nib.Nifti1Image(np.ascontiguousarray(data), matrix)
    img.header.set_xyzt_units("mm", "sec")
    img.set_sform(matrix, code=1)
    img.set_qform(matrix, code=1)
    img.header.set_data_dtype(arr.dtype)
    saved = Opener.default_compresslevel
    Opener.default_compresslevel = level  # nibabel's only handle on the gzip level
    try:
        nib.save(img, str(path))
    finally:
        Opener.default_compresslevel = saved


def _write_nrrd(arr: np.ndarray, matrix: np.ndarray, path: Path, level: int) -> None:
    import nrrd

    lps = _LPS_RAS @ matrix
    directions = [lps[:3, c].tolist() for c in range(3)]
    kinds = ["domain"] * 3
    if arr.ndim == 4:  # frames slowest (first in C order) = last NRRD axis
        directions = directions + [[float("nan")] * 3]
        kinds = kinds + ["list"]
    header = {
        "space": "left-posterior-superior",
        "space directions": directions,
        "space origin": lps[:3, 3].tolist(),
        "kinds": kinds,
        "encoding": "gzip",
    }
    nrrd.write(str(path), np.ascontiguousarray(arr), header, index_order="C", compression_level=level)


def _write_mha(arr: np.ndarray, matrix: np.ndarray, path: Path, level: int) -> None:
    import SimpleITK as sitk

    lps = _LPS_RAS @ matrix
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    img = sitk.GetImageFromArray(np.ascontiguousarray(arr))
    img.SetSpacing(spacing.tolist())
    img.SetDirection((lps[:3, :3] / spacing).ravel().tolist())
    img.SetOrigin(lps[:3, 3].tolist())
    sitk.WriteImage(img, str(path), useCompression=True, compressionLevel=level)


def list_volume_files(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name (no recursion)."""
    p = Path(folder)
    if not p.is_dir():
        raise InputError(f"{p}: not a folder")
    return sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith(".") and is_volume_file(f))


def volume_files(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Expand files and folders into a list of image files."""
    out: list[Path] = []
    for path in paths:
        p = Path(path)
        out.extend(list_volume_files(p) if p.is_dir() else [p])
    return out
