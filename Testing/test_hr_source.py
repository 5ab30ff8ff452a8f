"""Training on the user's own HR scans: a folder or a BIDS dataset, unusable
scans reported and counted, never dropped silently; the REMIx and MoEDiff-SR
libraries built from them; the training command's up-front checks."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from SuperResMoELib import sample_data
from SuperResMoELib.core.errors import InputError
from SuperResMoELib.core.geometry import sub_volume
from SuperResMoELib.io.formats import write_volume
from training.hr_source import SkippedSubject, bids_scans, describe, hr_scans, hr_subject, is_bids, usable_subjects

ROOT = Path(__file__).resolve().parents[1]


def _t1_block(subject: int = 0):
    return sub_volume(sample_data.t1_subject(subject), (60, 80, 60), (108, 128, 108))


@pytest.fixture
def bids(tmp_path):
    """sub-01 (anat), sub-02 (two sessions), sub-03 (no T1w), sub-04 (a corrupt T1w),
    plus files that are not T1w images."""
    root = tmp_path / "bids"
    (root).mkdir()
    (root / "dataset_description.json").write_text(json.dumps({"Name": "test", "BIDSVersion": "1.8.0"}))
    write_volume(_t1_block(0), root / "sub-01" / "anat" / "sub-01_T1w.nii.gz")
    write_volume(_t1_block(1), root / "sub-02" / "ses-a" / "anat" / "sub-02_ses-a_run-1_T1w.nii.gz")
    write_volume(_t1_block(2), root / "sub-02" / "ses-b" / "anat" / "sub-02_ses-b_T1w.nii.gz")
    write_volume(_t1_block(2), root / "sub-03" / "anat" / "sub-03_T2w.nii.gz")
    (root / "sub-04" / "anat").mkdir(parents=True)
    (root / "sub-04" / "anat" / "sub-04_T1w.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    (root / "sub-01" / "anat" / "sub-01_T1w.json").write_text("{}")
    return root


def test_bids_layout_one_t1w_per_subject(bids, caplog) -> None:
    assert is_bids(bids)
    with caplog.at_level(logging.WARNING, logger="superresmoe.training"):
        scans = bids_scans(bids)
    assert [s.subject for s in scans] == ["sub-01", "sub-02", "sub-04"]
    assert scans[1].path.name == "sub-02_ses-a_run-1_T1w.nii.gz"  # the first session's scan
    assert any("sub-03" in r.message and "no *_T1w" in r.message for r in caplog.records)
    assert "BIDS dataset" in describe(str(bids)) and "(3 subjects)" in describe(str(bids))


def test_unusable_scans_are_reported_and_counted(bids, caplog) -> None:
    vol = hr_subject(str(bids), 0, 0)
    assert np.allclose(vol.spacing, 1.0) and vol.spatial_shape == (48, 48, 48)
    with pytest.raises(SkippedSubject, match="sub-04_T1w.nii.gz: unreadable"):
        hr_subject(str(bids), 2, 0)
    with pytest.raises(InputError, match="holds 3 subject"):
        hr_subject(str(bids), 3, 0)
    with caplog.at_level(logging.WARNING, logger="superresmoe.training"):
        ok, skipped = usable_subjects(str(bids), [0, 2, 1], 0)
    assert [s for s, _ in ok] == [0, 1] and len(skipped) == 1 and "sub-04" in skipped[0]
    assert any("skipped subject 2" in r.message for r in caplog.records)
    with pytest.raises(InputError, match="none of the training subjects"):
        usable_subjects(str(bids), [2], 0)


def test_a_plain_folder_and_bad_sources(tmp_path) -> None:
    folder = tmp_path / "scans"
    write_volume(_t1_block(0), folder / "b.nrrd")
    write_volume(_t1_block(1), folder / "a.nii.gz")
    (folder / "notes.txt").write_text("not an image")
    assert not is_bids(folder)
    assert [s.subject for s in hr_scans(str(folder))] == ["a", "b"]
    with pytest.raises(InputError, match="not a folder"):
        hr_scans(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no NIfTI/NRRD/MHA"):
        hr_scans(str(tmp_path / "empty"))


def test_remix_library_from_a_bids_dataset_counts_the_skipped(bids, monkeypatch) -> None:
    monkeypatch.setenv("SUPERRESMOE_CACHE", str(bids.parent / "cache"))
    from test_training_remix import tiny_config
    from training.remix.data import bin_library
    from training.remix.train import library_config

    cfg = library_config(tiny_config(), str(bids))
    cfg = type(cfg)(**{**cfg.__dict__, "subjects": (0, 1, 2)})
    lib = bin_library(cfg, 3)
    assert lib.meta["skipped_subjects"] == 1 and set(lib["subject"].tolist()) == {0, 1}
    assert lib.meta["used_subjects"] == [0, 1] and "sub-04" in lib.meta["skipped"][0]
    assert lib["lr"].shape == (6, 1, 16, 16, 16) and np.isfinite(lib["lr"].astype(np.float32)).all()
    assert cfg.key(3) != library_config(tiny_config()).key(3)  # the data is part of the cache key


def test_training_command_checks_the_data_first(tmp_path) -> None:
    from conftest import MOEDIFF_TINY
    from test_training_remix import TINY

    (tmp_path / "tiny.json").write_text(json.dumps(TINY))
    (tmp_path / "moediff.json").write_text(json.dumps(MOEDIFF_TINY))
    env = {**os.environ, "SUPERRESMOE_CACHE": str(tmp_path / "cache")}
    for command, config in (("remix", "tiny.json"), ("moediff", "moediff.json")):
        r = subprocess.run([sys.executable, "-m", "training", command, "--config", str(tmp_path / config),
                            "--data", str(tmp_path / "nowhere"), "--workdir", str(tmp_path / "run")],
                           capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
        assert r.returncode == 3 and "does not exist or is not a folder" in r.stderr, (command, r.stderr[-500:])
    folder = tmp_path / "three"
    for n, name in enumerate("abc"):
        write_volume(_t1_block(n), folder / f"{name}.nii.gz")

    def remix(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "training", "remix", "--config", str(tmp_path / "tiny.json"),
                               "--data", str(folder), "--workdir", str(tmp_path / "run"), *extra],
                              capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)

    r = remix("--subjects", "0-3")
    assert r.returncode == 3 and "holds 3 subject(s)" in r.stderr
    r = remix("--subjects", "0-1", "--split", "patches", "--validation-subjects", "1")
    assert r.returncode == 8 and "needs library.split 'subjects'" in r.stderr
    r = remix("--subjects", "0-1")  # auto on your own data: whole subjects validate
    assert r.returncode == 0, r.stderr[-2000:]
    assert "split by subjects" in r.stderr
    data = json.loads((tmp_path / "run" / "checkpoints" / "remix_t1.json").read_text())["training_data"]
    assert "folder" in data["data"] and data["skipped_subjects"] == 0
    split = data["split"]
    assert split["unit"] == "subjects" and split["held_out_subjects"] == ["c"]
    assert sorted(split["training_subjects"] + split["validation_subjects"]) == ["a", "b"]
    assert len(split["validation_subjects"]) == 1
