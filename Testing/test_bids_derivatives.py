"""``superresmoe enhance --bids``: every T1w scan of a BIDS dataset enhanced
into ``derivatives/superresmoe`` with BIDS names, JSON sidecars and a
``dataset_description.json``; a rerun skips them; another method adds its
``GeneratedBy`` entry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from SuperResMoELib import io
from SuperResMoELib.core.errors import InputError
from SuperResMoELib.core.volume import Volume
from SuperResMoELib.io import bids

ROOT = Path(__file__).resolve().parents[1]
SCANS = ("sub-01/anat/sub-01_T1w.nii.gz", "sub-02/ses-1/anat/sub-02_ses-1_run-1_T1w.nii.gz",
         "sub-02/ses-2/anat/sub-02_ses-2_T1w.nii")


def _dataset(root: Path) -> None:
    for n, rel in enumerate(SCANS):
        arr = (np.random.default_rng(n).random((8, 16, 16)) * 300 + 50).astype(np.float32)
        io.write_volume(Volume(arr, np.diag([1.0, 1.0, 3.0, 1.0])), root / rel)
    io.write_volume(Volume(np.ones((4, 4, 4), np.float32), np.eye(4)), root / "sub-01/anat/sub-01_T2w.nii.gz")
    (root / "dataset_description.json").write_text(json.dumps({"Name": "raw", "BIDSVersion": "1.9.0"}))


def _run(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), SUPERRESMOE_THREADS="1")
    return subprocess.run([sys.executable, "-m", "SuperResMoELib", "enhance", *args, "--progress", "none"],
                          capture_output=True, text=True, env=env, timeout=300)


def test_derivative_names() -> None:
    root, out = Path("/data/ds"), Path("/data/ds/derivatives/superresmoe")
    assert bids.derivative_path(root / "sub-02/ses-1/anat/sub-02_ses-1_run-1_T1w.nii", root, out, "remix") == \
        out / "sub-02/ses-1/anat/sub-02_ses-1_run-1_desc-remix_T1w.nii.gz"
    assert bids.derivative_path(root / "sub-1/anat/sub-1_desc-raw_T1w.nii.gz", root, out, "remix1").name == \
        "sub-1_desc-remix1_T1w.nii.gz"
    with pytest.raises(InputError, match="not a BIDS T1w"):
        bids.derivative_path(root / "sub-1/anat/sub-1_T2w.nii.gz", root, out, "remix")
    with pytest.raises(InputError, match="not inside"):
        bids.derivative_path(Path("/elsewhere/sub-1_T1w.nii.gz"), root, out, "remix")


def test_bids_derivatives_end_to_end(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    _dataset(root)
    r = _run("-i", str(root), "--bids", "--method", "remix")
    assert r.returncode == 0, r.stderr
    assert "3 input(s) here: 3 done, 0 skipped, 0 failed" in r.stdout
    der = root / "derivatives" / "superresmoe"
    outs = sorted(str(p.relative_to(der)) for p in der.rglob("*_desc-*"))
    assert outs == ["sub-01/anat/sub-01_desc-remix_T1w.json", "sub-01/anat/sub-01_desc-remix_T1w.nii.gz",
                    "sub-02/ses-1/anat/sub-02_ses-1_run-1_desc-remix_T1w.json",
                    "sub-02/ses-1/anat/sub-02_ses-1_run-1_desc-remix_T1w.nii.gz",
                    "sub-02/ses-2/anat/sub-02_ses-2_desc-remix_T1w.json",
                    "sub-02/ses-2/anat/sub-02_ses-2_desc-remix_T1w.nii.gz"]
    sr = io.read_volume(der / "sub-01/anat/sub-01_desc-remix_T1w.nii.gz")
    assert np.allclose(sr.grid.spacing, 1.0) and sr.spatial_shape == (24, 16, 16)
    side = json.loads((der / "sub-02/ses-1/anat/sub-02_ses-1_run-1_desc-remix_T1w.json").read_text())
    assert side["Sources"] == ["bids:raw:sub-02/ses-1/anat/sub-02_ses-1_run-1_T1w.nii.gz"]
    assert side["request"]["method"] == "remix" and len(side["checkpoint"]["sha256"]) == 64
    desc = json.loads((der / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative" and desc["BIDSVersion"] == bids.BIDS_VERSION
    assert desc["DatasetLinks"]["raw"] == "../.."
    (entry,) = desc["GeneratedBy"]
    from SuperResMoELib import __version__

    assert entry["Name"] == "SuperResMoE" and entry["Version"] == __version__ and entry["Method"] == "remix"
    assert entry["Checkpoint"]["sha256"] == side["checkpoint"]["sha256"]

    r = _run("-i", str(root), "--bids", "--method", "remix")  # the derivatives folder is not an input
    assert "3 input(s) here: 0 done, 3 skipped, 0 failed" in r.stdout, r.stdout + r.stderr
    r = _run("-i", str(root), "--bids", "--method", "cubic", "--spacing", "1")
    assert r.returncode == 0 and "3 done" in r.stdout, r.stderr
    desc = json.loads((der / "dataset_description.json").read_text())
    assert [g["Method"] for g in desc["GeneratedBy"]] == ["remix", "cubic"]
    assert desc["GeneratedBy"][1]["Checkpoint"] is None

    r = _run("-i", str(root / "sub-01"), "--bids")
    assert r.returncode == 3 and "root of a BIDS dataset" in r.stderr
