"""The out-of-generator evaluation set (training/outgen): made without the
sample-data generator, in another pose, with its own tissue values and
acquisitions; one small case of each evaluation runs here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from SuperResMoELib.core.geometry import scaled_grid

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "SuperResMoELib" / "checkpoints" / "bundled"


def test_the_set_does_not_use_the_sample_generator() -> None:
    code = ("import sys, training.outgen.t1, training.outgen.qmri, training.outgen.evaluate; "
            "print(sorted(m for m in sys.modules if m.startswith('SuperResMoELib.sample_data')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_qmri_head_table_and_pairs() -> None:
    from SuperResMoELib.sample_data import mudi_acquisition_table
    from training.outgen.head import HEADS
    from training.outgen.qmri import OutgenSource, acquisition_table, qmri_maps
    from training.ssmoe.evaluate import per_volume_mse

    table = acquisition_table().values
    mudi = mudi_acquisition_table().values
    assert table.shape == (96, 6)
    assert table[:, 3].max() <= mudi[:, 3].max() and mudi[:, 4].min() <= table[:, 4].min()
    assert table[:, 4].max() <= mudi[:, 4].max() and mudi[:, 5].min() <= table[:, 5].min() <= table[:, 5].max() <= mudi[:, 5].max()
    assert not set(np.unique(table[:, 3])[1:]) & set(np.unique(mudi[:, 3]))  # other shells, echoes, inversions
    assert not set(np.unique(table[:, 5])) & set(np.unique(mudi[:, 5]))
    assert not set(np.unique(table[:, 4])) & set(np.unique(mudi[:, 4]))
    maps, grid = qmri_maps()
    assert np.allclose(grid.spacing, 2.5) and np.all(np.abs(HEADS["qmri"].rotation_deg) >= 7)
    brain = maps["PD"] > 0
    v = maps["V1"][:, brain]
    assert np.allclose(np.linalg.norm(v, axis=0), 1.0, atol=1e-3)
    src = OutgenSource()
    for task, f in (("aniso", (1, 1, 2)), ("iso", (2, 2, 2))):
        lr, hr = src.pair(0, [0, 5], task)
        assert scaled_grid(lr.grid, f).same_as(hr.grid) and len(lr.acquisition) == 2
        assert np.all(np.asarray(hr.array)[:, ~brain] == 0)
        again = src.pair(0, [5], task)[0]
        np.testing.assert_array_equal(np.asarray(again.array)[0], np.asarray(lr.array)[1])  # per-row noise streams
    rows, scores, _ = per_volume_mse("aniso", {"cubic": ("cubic", None), "SR U-Net": ("srunet", None)}, [0, 52],
                                     device="cpu", data="outgen")
    assert np.mean(scores["SR U-Net"]) < np.mean(scores["cubic"])  # on average the network still beats cubic


def test_per_volume_mse_passes_further_options_to_each_method() -> None:
    """The ``ssmoe-experts`` diagnostic's forced experts reach the method: two
    forced experts score the same out-of-generator volume differently, and the
    same expert forced twice scores it the same."""
    from training.ssmoe.evaluate import per_volume_mse

    ckpt = str(BUNDLED / "ssmoe_aniso.safetensors")
    methods = {f"expert {e}": ("ssmoe", ckpt, {"expert": e}) for e in (0, 3)}
    _, scores, _ = per_volume_mse("aniso", {**methods, "again": ("ssmoe", ckpt, {"expert": 0})}, [0],
                                  device="cpu", data="outgen")
    assert scores["expert 0"][0] != scores["expert 3"][0]
    assert scores["again"][0] == scores["expert 0"][0]  # deterministic, so the difference is the option's


def test_remix_on_a_small_block_of_the_t1_head(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "training", "evaluate", "remix", "--checkpoints", str(BUNDLED),
                        "--out", str(tmp_path), "--tables", "outgen", "--outgen-block", "48", "--device", "cpu",
                        "--progress", "none"], capture_output=True, text=True, cwd=ROOT, timeout=300,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode == 0, r.stderr[-2000:]
    md = (tmp_path / "remix_outgen.md").read_text()
    assert "out-of-generator set" in md and "ahead on" in md and "of 4 scans" in md
    import csv

    cases = list(csv.DictReader(open(tmp_path / "remix_outgen_cases.csv")))
    assert {c["scan"] for c in cases} == {"1x1x5 mm", "1x4x1 mm", "2x2x2 mm", "1x1x3 mm"}
    assert {c["model"] for c in cases} == {"LR (cubic)", "1 network", "Experts (7 models)"}
    experts = {c["scan"]: int(c["expert"]) for c in cases if c["model"] == "Experts (7 models)"}
    assert experts == {"1x1x5 mm": 5, "1x4x1 mm": 4, "2x2x2 mm": 7, "1x1x3 mm": 3}  # routing by voxel volume
    assert all(np.isfinite(float(c["psnr"])) for c in cases)
    assert not (tmp_path / "remix_table1.md").exists()  # --tables outgen: the held-out table is not run
    extra = json.loads(md.split("```json\n")[1].split("```")[0])
    assert extra["block_mm"] == 48


def test_moediff_on_a_small_block_of_the_t1_head(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "training", "evaluate", "moediff", "--checkpoints", str(BUNDLED),
                        "--out", str(tmp_path), "--tables", "outgen", "--outgen-block", "16", "--steps", "1",
                        "--device", "cpu", "--progress", "none"], capture_output=True, text=True, cwd=ROOT,
                       timeout=300, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode == 0, r.stderr[-2000:]
    md = (tmp_path / "moediff_outgen.md").read_text()
    assert "MoEDiff-SR on the out-of-generator T1 head" in md and "out-of-generator set" in md
    import csv

    cases = list(csv.DictReader(open(tmp_path / "moediff_outgen_cases.csv")))
    assert {c["scan"] for c in cases} == {"1x1x5 mm", "1x4x1 mm", "2x2x2 mm", "1x1x3 mm"}
    assert {c["model"] for c in cases} == {"LR (cubic)", "MoEDiff-SR (global gating)"}
    assert all(np.isfinite(float(c["psnr"])) for c in cases)
    extra = json.loads(md.split("```json\n")[1].split("```")[0])
    assert extra["steps"] == 1 and extra["block_mm"] == 16
    assert not (tmp_path / "moediff_table1.md").exists()  # --tables outgen only


def test_validation_head_is_not_the_test_head() -> None:
    """Model selection (``library.validation = "outgen"``) reads the validation
    set: another pose, other tissue values, other table directions and
    another slice profile than the test set every table reports."""
    from training.outgen.head import HEADS
    from training.outgen.qmri import QMRI_SETS, OutgenSource, acquisition_table

    test, val = QMRI_SETS["test"], QMRI_SETS["validation"]
    assert HEADS[test.head] != HEADS[val.head] and test.profile is not val.profile and test.seed != val.seed
    for tissue in ("gm", "wm", "csf"):
        assert all(test.tissues[tissue][p] != val.tissues[tissue][p] for p in ("T1", "T2s", "MD"))
    t, v = acquisition_table("test").values, acquisition_table("validation").values
    assert t.shape == v.shape and not np.allclose(t[:, :3], v[:, :3])  # other directions (same b, TI, TE grid)
    assert "validation set" in OutgenSource("validation").description
