"""Round trips of every format keep values and world-space geometry."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from SuperResMoELib import io
from SuperResMoELib.core.errors import InputError
from SuperResMoELib.core.volume import AcquisitionTable, Volume

from conftest import make_matrix, smooth_volume

# NIfTI stores the sform in float32: positions agree to float32 precision.
ATOL_MM = {".nii": 1e-4, ".nii.gz": 1e-4, ".nrrd": 1e-9, ".mha": 1e-6}


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_round_trip_keeps_world_geometry(tmp_path: Path, suffix: str, geom: str) -> None:
    vol = smooth_volume((6, 7, 9), geom)
    path = io.write_volume(vol, tmp_path / f"v{suffix}")
    back = io.read_volume(path)
    assert back.array.shape == vol.array.shape
    np.testing.assert_array_equal(back.array, vol.array)
    tol = ATOL_MM[suffix]
    # A voxel with distinct value sits at the same RAS position after the round trip.
    ijk = np.array([[1, 2, 3], [8, 0, 5], [0, 6, 0]])
    np.testing.assert_allclose(back.grid.index_to_ras(ijk), vol.grid.index_to_ras(ijk), atol=tol)
    np.testing.assert_allclose(back.grid.corners(), vol.grid.corners(), atol=tol)
    assert np.sign(np.linalg.det(back.ijk_to_ras)) == np.sign(np.linalg.det(vol.ijk_to_ras))


def test_nifti_reads_as_kji_with_ras_affine(tmp_path: Path) -> None:
    """A file written by nibabel directly: data[i, j, k] lands at array[k, j, i]."""
    data = np.zeros((5, 6, 7), np.int16)  # (i, j, k)
    data[4, 1, 2] = 9
    affine = make_matrix("oblique")
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "d.nii.gz")
    vol = io.read_volume(tmp_path / "d.nii.gz")
    assert vol.array.shape == (7, 6, 5)
    assert vol.array[2, 1, 4] == 9
    assert vol.array.dtype == np.int16
    np.testing.assert_allclose(vol.ijk_to_ras, affine, atol=1e-5)


def test_nrrd_lps_is_converted_to_ras(tmp_path: Path) -> None:
    import nrrd

    data = np.zeros((4, 5, 6), np.float32)  # C order (k, j, i)
    data[3, 0, 5] = 1
    header = {"space": "left-posterior-superior", "space directions": np.diag([2.0, 3.0, 4.0]),
              "space origin": np.array([10.0, 20.0, 30.0]), "kinds": ["domain"] * 3}
    nrrd.write(str(tmp_path / "a.nrrd"), data, header, index_order="C")
    vol = io.read_volume(tmp_path / "a.nrrd")
    assert vol.array[3, 0, 5] == 1
    # voxel (i=5, j=0, k=3): LPS = (10+10, 20, 30+12) -> RAS = (-20, -20, 42)
    np.testing.assert_allclose(vol.grid.index_to_ras([5, 0, 3]), [-20.0, -20.0, 42.0])


def test_mha_matches_simpleitk_physical_points(tmp_path: Path) -> None:
    import SimpleITK as sitk

    vol = smooth_volume((5, 6, 7), "flipped")
    io.write_volume(vol, tmp_path / "a.mha")
    img = sitk.ReadImage(str(tmp_path / "a.mha"))
    lps = np.array(img.TransformIndexToPhysicalPoint((6, 2, 3)))
    ras = vol.grid.index_to_ras([6, 2, 3])
    np.testing.assert_allclose(lps * [-1, -1, 1], ras, atol=1e-6)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
def test_4d_round_trip_with_table(tmp_path: Path, suffix: str) -> None:
    frames = np.stack([smooth_volume((4, 5, 6), "oblique", s).array for s in range(3)])
    table = AcquisitionTable(np.array([[0, 0, 0, 0, 20, 80], [1, 0, 0, 500, 100, 105], [0, 1, 0, 1000, 7322.7, 130]]))
    vol = Volume(frames, make_matrix("oblique"), table, name="q")
    io.write_volume(vol, tmp_path / f"q{suffix}")
    back = io.read_volume(tmp_path / f"q{suffix}", table=tmp_path / "q_parameters.txt")
    assert back.array.shape == (3, 4, 5, 6)
    np.testing.assert_array_equal(back.array, frames)
    np.testing.assert_allclose(back.acquisition.values, table.values)
    np.testing.assert_allclose(back.ijk_to_ras, vol.ijk_to_ras, atol=1e-4)


def test_super_mudi_table_reads(tmp_path: Path) -> None:
    (tmp_path / "parameters_new.txt").write_text("0.1 0.2 0.97 500 20 80\n0 0 0 0 7322.7 130\n")
    t = io.read_acquisition_table(tmp_path / "parameters_new.txt")
    assert len(t) == 2 and t.column("TI")[1] == pytest.approx(7322.7) and t.column("b")[0] == 500


@pytest.mark.parametrize(
    "content, message",
    [("1 2 3\n", "6 columns"), ("a b c d e f\n1 2 3 4 x 6\n", "non-numeric")],
)
def test_bad_table(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "t.txt").write_text(content)
    with pytest.raises(InputError, match=message):
        io.read_acquisition_table(tmp_path / "t.txt")


def test_table_length_must_match_frames(tmp_path: Path) -> None:
    vol = Volume(np.zeros((2, 3, 3, 3), np.float32), np.eye(4))
    io.write_volume(vol, tmp_path / "a.nii.gz")
    (tmp_path / "t.txt").write_text("0 0 0 0 20 80\n")
    with pytest.raises(InputError, match="1 rows but the volume has 2 frames"):
        io.read_volume(tmp_path / "a.nii.gz", table=tmp_path / "t.txt")


def test_missing_unknown_2d_5d_empty(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="file not found"):
        io.read_volume(tmp_path / "nope.nii.gz")
    (tmp_path / "x.png").write_bytes(b"\x89PNG")
    with pytest.raises(InputError, match="unknown image format"):
        io.read_volume(tmp_path / "x.png")
    nib.save(nib.Nifti1Image(np.zeros((4, 5), np.float32), np.eye(4)), tmp_path / "two.nii")
    with pytest.raises(InputError, match="2D image"):
        io.read_volume(tmp_path / "two.nii")
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2, 2, 2), np.float32), np.eye(4)), tmp_path / "five.nii")
    with pytest.raises(InputError, match="5D images are not supported"):
        io.read_volume(tmp_path / "five.nii")
    (tmp_path / "bad.nii.gz").write_bytes(gzip.compress(b"not a nifti"))
    with pytest.raises(InputError, match="cannot read"):
        io.read_volume(tmp_path / "bad.nii.gz")
    with pytest.raises(InputError, match="empty"):
        Volume(np.zeros((0, 3, 3)), np.eye(4))


def test_write_is_atomic_and_leaves_nothing_on_failure(tmp_path: Path) -> None:
    vol = Volume(np.zeros((2, 3, 3, 3), np.float32), np.eye(4))
    with pytest.raises(InputError, match="3D volumes only"):
        io.write_volume(vol, tmp_path / "a.mha")
    assert list(tmp_path.iterdir()) == []
    good = smooth_volume((3, 3, 3))
    io.write_volume(good, tmp_path / "b.nii.gz")
    assert [p.name for p in tmp_path.iterdir()] == ["b.nii.gz"]


def test_writing_never_modifies_input(tmp_path: Path) -> None:
    vol = smooth_volume((4, 4, 4), "flipped")
    before = vol.array.copy(), vol.ijk_to_ras.copy()
    io.write_volume(vol, tmp_path / "a.nrrd", dtype="int16")
    np.testing.assert_array_equal(vol.array, before[0])
    np.testing.assert_array_equal(vol.ijk_to_ras, before[1])
    assert not vol.array.flags.writeable
    assert io.read_volume(tmp_path / "a.nrrd").array.dtype == np.int16


def test_folder_listing(tmp_path: Path) -> None:
    for name in ("b.nii.gz", "a.nrrd", "c.txt", ".hidden.nii"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in io.list_volume_files(tmp_path)] == ["a.nrrd", "b.nii.gz"]


def test_outputs_get_normal_permissions(tmp_path: Path) -> None:
    import os
    import stat

    io.write_volume(smooth_volume((3, 3, 3)), tmp_path / "p.nii.gz")
    mode = stat.S_IMODE(os.stat(tmp_path / "p.nii.gz").st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_compression_levels_write_the_same_voxels(tmp_path, suffix) -> None:
    """``fast`` (zlib 1, the default) and ``max`` (zlib 9) give identical voxels;
    ``max`` gives the smaller file; an unknown level is refused."""
    rng = np.random.default_rng(0)
    arr = np.round(rng.normal(100, 5, (20, 24, 28))).astype(np.float32)  # compressible, not trivially
    vol = Volume(arr, np.diag([1.0, 1.0, 2.0, 1.0]), name="c")
    fast = io.write_volume(vol, tmp_path / f"fast{suffix}")
    best = io.write_volume(vol, tmp_path / f"max{suffix}", compression="max")
    for p in (fast, best):
        np.testing.assert_array_equal(np.asarray(io.read_volume(p).array), arr)
    assert best.stat().st_size < fast.stat().st_size
    with pytest.raises(InputError, match="compression"):
        io.write_volume(vol, tmp_path / f"x{suffix}", compression="ultra")
