"""The bundled REMIx checkpoints on held-out data: a brain crop of held-out
T1 sample subject 4 (training used subjects 0..3) is acquired at thick-slice
resolutions and both bundled networks must beat cubic interpolation on it."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from SuperResMoELib.checkpoints import store as ckpt_mod
from SuperResMoELib import io, sample_data
from SuperResMoELib.simulation.lowres import simulate_low_resolution
from SuperResMoELib.methods import EnhanceOptions, create_method
from SuperResMoELib.evaluation.metrics import psnr
from SuperResMoELib.evaluation.segmentation import brain_mask
from SuperResMoELib.core.volume import Volume
from training.remix.data import sub_volume
from training.remix.degradation import DegradationConfig, degrade, draw_acquisition

#: Held-out subject and the crop (KJI start, edge in voxels) inside its brain.
SUBJECT, START, EDGE = 4, (60, 80, 60), 64


@pytest.fixture(scope="module")
def hr_crop() -> Volume:
    if not any(ckpt_mod.bundled_checkpoint_dir().glob("remix_t1*.safetensors")):
        pytest.fail("the REMIx checkpoints are not bundled in SuperResMoELib/checkpoints/bundled")
    hr = sample_data.t1_subject(SUBJECT)
    crop = sub_volume(hr, START, [s + EDGE for s in START])
    assert brain_mask(np.asarray(crop.array)).mean() > 0.5  # the crop is mostly brain
    return crop


def scores(lr: Volume, hr: Volume, opts: EnhanceOptions, cubic: Volume) -> tuple[dict[str, float], dict]:
    """Brain PSNR against ``hr`` of ``cubic``, remix1 and remix; and remix's info."""
    ref = np.asarray(hr.array, dtype=np.float64)
    mask, peak = brain_mask(ref), float(ref.max() - ref.min())
    results = {name: create_method(name).enhance(lr, opts, "cpu") for name in ("remix1", "remix")}
    out = {}
    for name, sr in (("cubic", cubic), *((n, r.volume) for n, r in results.items())):
        assert sr.grid.same_as(hr.grid)
        out[name] = psnr(ref, np.asarray(sr.array), data_range=peak, mask=mask)
    return out, results["remix"].info


def test_a_native_1x1x5_axial_scan(hr_crop) -> None:
    lr, hr = simulate_low_resolution(hr_crop, (1, 1, 5), method="gaussian")
    opts = EnhanceOptions(scale=(1, 1, 5))  # back to the crop's 1 mm grid
    score, info = scores(lr, hr, opts, create_method("cubic").enhance(lr, opts).volume)
    assert info["expert"] == 5 and info["forced"] is False
    assert score["remix"] > score["cubic"] + 0.2, score
    assert score["remix1"] > score["cubic"] + 0.2, score


@pytest.mark.parametrize("bin_mm3", [2, 4, 6])
def test_a_drawn_clinical_acquisition(hr_crop, bin_mm3) -> None:
    cfg = DegradationConfig(native_probability=0.0, noise_fraction=(0.01, 0.01))
    rng = np.random.default_rng([7, bin_mm3])
    lr_grid, acq = draw_acquisition(hr_crop.grid, bin_mm3, cfg, rng)
    lr, back = degrade(hr_crop, lr_grid, acq, cfg, rng)  # back: the cubic interpolation onto the crop's grid
    score, info = scores(lr, hr_crop, EnhanceOptions(extra={"target_grid": hr_crop.grid}), cubic=back)
    assert info["expert"] == bin_mm3
    assert score["remix"] > score["cubic"] + 0.2, (acq, score)
    assert score["remix1"] > score["cubic"] + 0.2, (acq, score)


def test_the_command_line_says_which_expert_and_why(hr_crop, tmp_path) -> None:
    lr, _ = simulate_low_resolution(hr_crop, (1, 1, 5), method="gaussian")
    io.write_volume(lr, tmp_path / "scan.nii.gz")
    r = subprocess.run([sys.executable, "-m", "SuperResMoELib", "enhance", "-i", str(tmp_path / "scan.nii.gz"),
                        "-o", str(tmp_path / "out.nii.gz"), "--method", "remix", "--device", "cpu",
                        "--progress", "none"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "1.00x1.00x5.00 mm = 5.00 mm^3 -> expert 5" in r.stdout
    out = io.read_volume(tmp_path / "out.nii.gz")
    np.testing.assert_allclose(out.spacing, 1.0, atol=1e-5)
