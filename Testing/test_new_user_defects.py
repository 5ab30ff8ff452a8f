"""Defects a new user hit, each shown fixed on real files and the bundled checkpoints."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from SuperResMoELib import io
from SuperResMoELib.core.volume import Volume
from SuperResMoELib.methods import EnhanceOptions, create_method

CLI = [sys.executable, "-m", "SuperResMoELib"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=600)


def smooth(shape: tuple[int, ...], spacing: tuple[float, float, float], peak: float, seed: int = 0) -> Volume:
    """A smooth positive blob (KJI ``shape``) with maximum about ``peak``."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape[-3:]], indexing="ij")
    blob = np.exp(-2.0 * sum(g ** 2 for g in grids)) + 0.02 * rng.random(shape[-3:])
    arr = np.broadcast_to(blob, shape).astype(np.float32) * peak
    m = np.diag([*spacing, 1.0])
    return Volume(np.ascontiguousarray(arr), m, name="blob")


def test_hardmoe_with_a_forced_expert_keeps_the_global_residual() -> None:
    """``--method hardmoe --expert N`` once dropped the trilinear residual (brain mean 20 instead of ~966)."""
    v = smooth((16, 32, 32), (2.5, 2.5, 5.0), 2000.0)
    method = create_method("hardmoe")
    mixed = method.enhance(v, EnhanceOptions(task="aniso"), device="cpu").volume.array
    for expert in (0, 3):
        forced = method.enhance(v, EnhanceOptions(task="aniso", expert=expert), device="cpu").volume.array
        brain = mixed > 0.2 * mixed.max()
        assert forced[brain].mean() == pytest.approx(mixed[brain].mean(), rel=0.1)


def test_hardmoe_network_forced_head_is_that_head_plus_the_residual() -> None:
    import torch

    from SuperResMoELib.nets.moe import HardMoE
    from SuperResMoELib.nets.srunet import SRUNetConfig, add_residual

    torch.manual_seed(0)
    net = HardMoE(SRUNetConfig("aniso", 4, residual="linear"), 3).eval()
    x = torch.rand(2, 1, 8, 16, 16)
    with torch.no_grad():
        y, w = net(x, expert=1)
        feats = net.encoder(x)
        head = net.heads[1](net.skips(feats.skips), feats.bottleneck)
    torch.testing.assert_close(y, add_residual(head, x, net.cfg))
    assert w[:, 1].eq(1).all() and w.sum(dim=1).eq(1).all()
    with pytest.raises(ValueError, match="out of range"):
        net(x, expert=3)


def test_simulate_remix_without_scale_degrades_a_thick_slice_scan(tmp_path: Path) -> None:
    """``--simulate --method remix`` on a 1 mm file once degraded nothing (LR == HR, 44.8 dB)."""
    hr = smooth((40, 40, 30), (1.0, 1.0, 1.0), 100.0)
    io.write_volume(hr, tmp_path / "hr.nii.gz")
    r = run("enhance", "-i", tmp_path / "hr.nii.gz", "-o", tmp_path / "sr.nii.gz", "--method", "remix",
            "--simulate", "--device", "cpu", "--progress", "none")
    assert r.returncode == 0, r.stderr
    lr = io.read_volume(tmp_path / "sr_lr.nii.gz")
    np.testing.assert_allclose(lr.spacing, (1.0, 1.0, 5.0), atol=1e-5)  # a 1x1x5 mm thick-slice scan
    assert "1x1x5 mm" in r.stdout and "characteristic degradation" in r.stdout
    assert "expert 5" in r.stdout
    sr = io.read_volume(tmp_path / "sr.nii.gz")
    np.testing.assert_allclose(sr.spacing, 1.0, atol=1e-5)  # back on the HR grid


def test_simulate_refuses_when_nothing_would_be_degraded(tmp_path: Path) -> None:
    hr = smooth((20, 20, 20), (1.0, 1.0, 1.0), 100.0)
    io.write_volume(hr, tmp_path / "hr.nii.gz")
    r = run("enhance", "-i", tmp_path / "hr.nii.gz", "-o", tmp_path / "sr.nii.gz", "--method", "cubic",
            "--scale", "1", "--simulate", "--progress", "none")
    assert r.returncode == 3 and "nothing would be degraded" in r.stderr and "--scale" in r.stderr


def test_ssmoe_on_a_1mm_t1_warns_that_it_is_outside_the_training_domain(tmp_path: Path) -> None:
    """``ssmoe`` on a 1 mm T1 in [0, 1] once ran silently (output in [-2.3, 1.8], all patches to expert 0)."""
    t1 = smooth((32, 32, 32), (1.0, 1.0, 1.0), 0.97)
    res = create_method("ssmoe").enhance(t1, EnhanceOptions(task="aniso"), device="cpu")
    text = " ".join(res.info["warnings"])
    assert "far outside" in text and "1x1x1 mm" in text and "2.5x2.5x5" in text
    assert "intensities" in text
    io.write_volume(t1, tmp_path / "t1.nii.gz")
    r = run("enhance", "-i", tmp_path / "t1.nii.gz", "-o", tmp_path / "o.nii.gz", "--method", "ssmoe",
            "--task", "aniso", "--device", "cpu", "--progress", "none")
    assert r.returncode == 0 and "warning:" in r.stdout and "far outside" in r.stderr


def test_inputs_inside_the_domain_get_no_warning() -> None:
    mudi_like = smooth((2, 12, 24, 24), (2.5, 2.5, 5.0), 1500.0)
    assert create_method("ssmoe").enhance(mudi_like, EnhanceOptions(task="aniso"), device="cpu").info["warnings"] == []
    thick = smooth((8, 40, 40), (1.0, 1.0, 5.0), 80.0)
    assert create_method("remix").enhance(thick, EnhanceOptions(), device="cpu").info["warnings"] == []


def test_grid_mismatch_message_gives_sizes_and_spacings_in_one_order(tmp_path: Path) -> None:
    lr = smooth((10, 12, 14), (1.0, 1.0, 2.0), 10.0)  # KJI (10, 12, 14): 14x12x10 voxels (i, j, k)
    io.write_volume(lr, tmp_path / "lr.nii.gz")
    io.write_volume(lr, tmp_path / "ref.nii.gz")
    r = run("enhance", "-i", tmp_path / "lr.nii.gz", "-o", tmp_path / "o.nii.gz", "--reference",
            tmp_path / "ref.nii.gz", "--scale", "1,1,2", "--progress", "none")
    assert r.returncode == 3
    assert "size 14x12x10, spacing 1x1x2 mm (i, j, k)" in r.stderr  # the reference
    assert "size 14x12x20, spacing 1x1x1 mm (i, j, k)" in r.stderr  # the SR grid


def test_metrics_table_is_appended_and_listed(tmp_path: Path) -> None:
    hr = smooth((20, 20, 20), (1.0, 1.0, 1.0), 100.0)
    io.write_volume(hr, tmp_path / "a.nii.gz")
    out = tmp_path / "out"
    for method in ("cubic", "cubic"):
        r = run("enhance", "-i", tmp_path / "a.nii.gz", "-o", out, "--method", method, "--scale", "1,1,2",
                "--simulate", "--overwrite", "--progress", "none")  # the same request again: redone, not skipped
        assert r.returncode == 0, r.stderr
        assert f"metrics table: {out / 'metrics.csv'}" in r.stdout
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert len(rows) == 2 and all(r["method"] == "cubic" and r["input"].endswith("a.nii.gz") for r in rows)
    assert all(r["time"] and float(r["psnr"]) > 20 for r in rows)


def test_quick_demo_blocks_cover_the_same_physical_region() -> None:
    from SuperResMoELib.app.demo import central_blocks
    from SuperResMoELib.core.geometry import scaled_grid

    hr = smooth((40, 50, 60), (1.0, 1.0, 1.0), 10.0)
    lr = Volume.on_grid(np.zeros((10, 50, 60), np.float32), scaled_grid(hr.grid, (1.0, 1.0, 0.25)))
    lr_b, hr_b = central_blocks(lr, hr, (20, 30, 4))
    assert lr_b.grid.size_ijk == (20, 30, 4) and hr_b.grid.size_ijk == (20, 30, 16)
    np.testing.assert_allclose(lr_b.grid.bounds(), hr_b.grid.bounds(), atol=1e-9)  # edges aligned
    # the HR block is the HR's own voxels at the same RAS positions
    ras = hr_b.grid.index_to_ras(np.array([0.0, 0.0, 0.0]))
    ijk = np.round(hr.grid.ras_to_index(ras)).astype(int)
    assert hr_b.array[0, 0, 0] == hr.array[ijk[2], ijk[1], ijk[0]]


def test_a_missing_optional_package_is_one_line_naming_it_and_the_extra() -> None:
    """Without torch, ``superresmoe info`` says so in one line (exit 9), not with a traceback."""
    code = ("import sys; sys.modules['torch'] = None; sys.modules['matplotlib'] = None\n"
            "from SuperResMoELib.app.cli import main; sys.exit(main(sys.argv[1:]))")
    r = subprocess.run([sys.executable, "-c", code, "info"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 9, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "'torch' is not installed" in lines[0] and "Traceback" not in r.stderr
    from SuperResMoELib.core.errors import MissingPackageError, missing_package_error

    err = missing_package_error(ModuleNotFoundError("no", name="matplotlib.pyplot"))
    assert isinstance(err, MissingPackageError) and "superresmoe[training]" in str(err)
    assert missing_package_error(ModuleNotFoundError("no", name="not_a_known_package")) is None


def test_the_panel_results_box_shows_the_warnings() -> None:
    pytest.importorskip("slicer")
    from SuperResMoELib.slicer.logic import EnhanceOutcome, results_html

    outcome = EnhanceOutcome(metrics={"psnr": 31.2}, seconds=2.0,
                             info={"method": "ssmoe", "device": "cpu", "warnings": ["input voxels <far> outside"],
                                   "events": ["out of memory"]})
    html = results_html(outcome)
    assert "Warning: input voxels &lt;far&gt; outside" in html and "color:#c0392b" in html
    assert "31.2" in html and "<i>out of memory</i>" in html
    assert "No reference" in results_html(EnhanceOutcome(info={"method": "cubic"}))


def test_simulate_remix_on_an_anisotropic_hr_comes_back_onto_the_hr_grid(tmp_path: Path) -> None:
    hr = smooth((20, 40, 30), (1.0, 1.0, 2.0), 100.0)  # a 1x1x2 mm "HR"
    io.write_volume(hr, tmp_path / "hr.nii.gz")
    r = run("enhance", "-i", tmp_path / "hr.nii.gz", "-o", tmp_path / "sr.nii.gz", "--method", "remix",
            "--simulate", "--device", "cpu", "--progress", "none")
    assert r.returncode == 0, r.stderr
    np.testing.assert_allclose(io.read_volume(tmp_path / "sr_lr.nii.gz").spacing, (1.0, 1.0, 4.0), atol=1e-5)
    np.testing.assert_allclose(io.read_volume(tmp_path / "sr.nii.gz").spacing, (1.0, 1.0, 2.0), atol=1e-5)
