"""SS-MoE data sources: a real-data folder layout read back against the sample generator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from SuperResMoELib import io
from SuperResMoELib.core.errors import InputError
from SuperResMoELib.sample_data import mudi_downsample, mudi_subject

ROWS = [0, 17, 300, 901, 1200, 1343]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("mudi")
    mp = pytest.MonkeyPatch()
    mp.setenv("SUPERRESMOE_CACHE", str(root / "cache"))
    data = root / "data"
    for s, name in ((0, "cdmri0011"), (1, "cdmri0012")):
        hr = mudi_subject(s).hr(ROWS)
        io.write_volume(hr, data / name / "hr.nii.gz", table=False)
        if s == 0:  # one subject ships its own LR, the other gets block averages
            io.write_volume(mudi_downsample(hr, "aniso")[0], data / name / "lr_aniso.nii.gz", table=False)
    io.write_acquisition_table(mudi_subject(0).table.rows(ROWS), data / "parameters_new.txt")
    yield data
    mp.undo()


def test_folder_source_pairs(folder: Path) -> None:
    from training.ssmoe.sources import open_source

    src = open_source(f"mudi:{folder}")
    assert src.n_subjects == 2 and src.held_out == 1 and len(src.table()) == len(ROWS)
    lr, hr = src.pair(0, [1, 3], "aniso")
    assert lr.array.shape == (2, 33, 78, 62) and hr.array.shape == (2, 66, 78, 62)
    expected = mudi_downsample(mudi_subject(0).hr([ROWS[1], ROWS[3]]), "aniso")[0]
    np.testing.assert_allclose(lr.array, expected.array, rtol=1e-6)
    np.testing.assert_allclose(lr.acquisition.values, mudi_subject(0).table.values[[ROWS[1], ROWS[3]]])
    lr_iso, hr_iso = src.pair(1, [0], "iso")  # simulated from the HR
    assert lr_iso.array.shape == (1, 33, 39, 31)
    assert src.mask(1).sum() == (np.asarray(hr_iso.array[0]) != 0).sum()


def test_library_from_folder(folder: Path, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SUPERRESMOE_CACHE", str(tmp_path))
    from training.ssmoe.data import LibraryConfig, patch_library

    lib = patch_library(LibraryConfig("aniso", (0,), 3, 4, source=f"mudi:{folder}"))
    assert len(lib) == 12 and set(lib.row.tolist()) <= set(range(len(ROWS)))
    np.testing.assert_allclose(lib.hr[:, 0].reshape(12, 8, 2, 16, 16).mean(axis=2), lib.lr[:, 0], rtol=1e-5,
                               atol=1e-7)


def test_bad_folders(tmp_path: Path) -> None:
    from training.ssmoe.sources import open_source

    with pytest.raises(InputError, match="not found"):
        open_source(f"mudi:{tmp_path / 'nope'}")
    with pytest.raises(InputError, match="parameters_new.txt"):
        open_source(f"mudi:{tmp_path}")
    (tmp_path / "parameters_new.txt").write_text("0 0 0 0 20 80\n")
    with pytest.raises(InputError, match="at least 2 subject folders"):
        open_source(f"mudi:{tmp_path}")
    with pytest.raises(InputError, match="unknown data"):
        open_source("hcp:/x")
