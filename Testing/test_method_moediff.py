"""MoEDiff-SR inference: slice axis, tiles through the shared engine, sampler
options, maps, intensities, refusals; real checkpoints (tiny, seeded weights),
real files and the real CLI in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from SuperResMoELib.core.errors import CheckpointError, ExitCode, InputError
from SuperResMoELib.core.geometry import scaled_grid, sub_volume
from SuperResMoELib.core.volume import Grid, Volume
from SuperResMoELib.methods import create_method
from SuperResMoELib.methods.base import EnhanceOptions
from SuperResMoELib.methods.moediff.method import SamplerSettings, default_slice_axis

ROOT = Path(__file__).resolve().parents[1]


#: tiny tensors on shared cores: intra-op threads only add overhead
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def block() -> Volume:
    """A 2 mm block of the template brain (16 x 20 x 20 voxels)."""
    from SuperResMoELib import sample_data
    from SuperResMoELib.core.geometry import resample

    t = sample_data.t1_subject(0)
    hr = sub_volume(t, (70, 96, 78), (102, 136, 118))
    return resample(hr, scaled_grid(hr.grid, 0.5), "cubic")


def run(block: Volume, ckpt, **extra):
    opts = EnhanceOptions(checkpoint=str(ckpt[0]), extra=extra)
    return create_method("moediff").enhance(block, opts, device="cpu")


def test_default_slice_axis_is_the_least_changed_one() -> None:
    src = Grid((10, 20, 20), np.diag([1.0, 1.0, 5.0, 1.0]))  # 1 x 1 x 5 mm (i, j, k)
    tgt = Grid((50, 20, 20), np.diag([1.0, 1.0, 1.0, 1.0]))
    assert default_slice_axis(src, tgt)[0] == "j"  # i and j unchanged: the tie goes to j before i
    iso = Grid((10, 10, 10), np.diag([2.0, 2.0, 2.0, 1.0]))
    assert default_slice_axis(iso, tgt)[0] == "k"  # all change alike: k
    thick_i = Grid((20, 20, 4), np.diag([5.0, 1.0, 1.0, 1.0]))
    axis, why = default_slice_axis(thick_i, tgt)
    assert axis == "k" and "i x5.00" in why


@pytest.mark.parametrize("extra, message", [({"steps": 0}, "--steps"), ({"samples": -1}, "--samples"),
                                            ({"sampler": "async"}, "--sampler"), ({"slice_axis": "x"}, "--slice-axis"),
                                            ({"seed": 1.5}, "--seed")])
def test_bad_sampler_options_are_refused_by_name(extra, message) -> None:
    with pytest.raises(InputError, match=message):
        SamplerSettings.from_options(EnhanceOptions(extra=extra))


def test_enhance_keeps_the_grid_units_and_reports_its_choices(block, moediff_checkpoint) -> None:
    res = run(block, moediff_checkpoint, steps=2)
    assert res.volume.grid.same_as(scaled_grid(block.grid, 2.0), atol=1e-6)  # 2 mm -> the 1 mm target grid
    assert np.all(np.isfinite(res.volume.array)) and float(np.min(res.volume.array)) >= 0.0  # a magnitude image stays one
    scale = float(np.percentile(block.array[block.array > 0], 99.5))
    assert 0.3 * scale < float(np.percentile(res.volume.array, 99.5)) < 3 * scale  # user units restored
    info = res.info
    assert info["steps"] == 2 and info["sampler"] == "full" and info["slice_axis"] == "k"
    assert info["tiles_run"] > 0 and info["gates"]["slices"] > 0 and len(info["gates"]["mean"]) == 3
    assert info["expert_calls"] == [info["tiles_run"] * 2] * 3  # every expert, every tile, every step
    assert set(res.maps) == {"routing", "gate1", "gate2", "gate3"}
    g = np.stack([np.asarray(res.maps[f"gate{i}"].array) for i in (1, 2, 3)])
    ran = g.sum(axis=0) > 1e-6
    assert np.allclose(g.sum(axis=0)[ran], 1.0, atol=1e-4)  # blended gates still sum to one
    routing = np.asarray(res.maps["routing"].array)
    assert set(np.unique(routing[ran])) <= {0, 1, 2} and np.all(routing[~ran] == -1)


def test_seeded_sampler_is_deterministic_and_seeds_differ(block, moediff_checkpoint) -> None:
    a = run(block, moediff_checkpoint, steps=2, seed=3).volume.array
    b = run(block, moediff_checkpoint, steps=2, seed=3).volume.array
    c = run(block, moediff_checkpoint, steps=2, seed=4).volume.array
    assert np.array_equal(a, b) and not np.allclose(a, c)


def test_top1_runs_one_expert_per_tile_and_forced_experts(block, moediff_checkpoint) -> None:
    top = run(block, moediff_checkpoint, steps=2, sampler="top1").info
    assert sum(top["expert_calls"]) == top["tiles_run"] * 2
    forced = run(block, moediff_checkpoint, steps=2, sampler="full")
    one = create_method("moediff").enhance(
        block, EnhanceOptions(checkpoint=str(moediff_checkpoint[0]), expert=2, extra={"steps": 2}), device="cpu")
    assert one.info["expert_calls"][0] == 0 and one.info["expert_calls"][1] > 0 and one.info["forced_expert"] == 2
    assert np.all(np.asarray(one.maps["routing"].array)[np.asarray(one.maps["gate2"].array) > 0] == 1)
    assert not np.array_equal(one.volume.array, forced.volume.array)
    with pytest.raises(InputError, match="experts 1, 2 and 3"):
        create_method("moediff").enhance(block, EnhanceOptions(checkpoint=str(moediff_checkpoint[0]), expert=4))


def test_samples_give_their_mean_and_an_uncertainty_map(block, moediff_checkpoint) -> None:
    res = run(block, moediff_checkpoint, steps=2, samples=3)
    unc = np.asarray(res.maps["uncertainty"].array)
    assert res.info["samples"] == 3 and unc.shape == res.volume.array.shape
    assert float(unc.max()) > 0 and float(unc.min()) >= 0
    # the three samples are the first three single-sample seeds' draws: the mean lies among them
    one = run(block, moediff_checkpoint, steps=2, samples=1).volume.array
    assert not np.array_equal(one, res.volume.array)


def test_all_orientations_average_three_runs(block, moediff_checkpoint) -> None:
    res = run(block, moediff_checkpoint, steps=1, slice_axis="all")
    parts = [run(block, moediff_checkpoint, steps=1, slice_axis=a).volume.array for a in ("k", "j", "i")]
    np.testing.assert_allclose(res.volume.array, np.mean(parts, axis=0), rtol=1e-5, atol=1e-4)
    assert res.info["slice_axis"] == "all" and set(res.info["orientations"]) == {"k", "j", "i"}
    assert "routing" in res.maps


def test_patch_size_sets_the_tile(block, moediff_checkpoint) -> None:
    opts = EnhanceOptions(checkpoint=str(moediff_checkpoint[0]), patch_size=20, extra={"steps": 1})
    assert create_method("moediff").enhance(block, opts, device="cpu").info["tile"] == 32  # rounded up to 16s
    with pytest.raises(InputError, match="at least 16"):
        create_method("moediff").enhance(block, EnhanceOptions(checkpoint=str(moediff_checkpoint[0]), patch_size=8))


def test_wrong_checkpoints_are_refused(tmp_path, block, moediff_checkpoint) -> None:
    from SuperResMoELib.checkpoints.store import save_checkpoint
    from SuperResMoELib.methods.remix import remix_manifest
    from SuperResMoELib.nets.unet3d import ResidualUNet3D, UNet3DConfig

    cfg = UNet3DConfig(width=2, levels=2, convs=1, norm="none")
    remix = save_checkpoint(tmp_path / "remix_t1", {f"net.{k}": v for k, v in ResidualUNet3D(cfg).state_dict().items()},
                            remix_manifest("single", cfg))
    with pytest.raises(CheckpointError, match="method 'remix', not 'moediff'"):
        create_method("moediff").enhance(block, EnhanceOptions(checkpoint=str(remix)))
    # a pickle in place of the weights
    bad = tmp_path / "pickled"
    bad.with_suffix(".json").write_text(Path(str(moediff_checkpoint[0]) + ".json").read_text())
    torch.save({"x": torch.zeros(2)}, bad.with_suffix(".safetensors"))
    with pytest.raises(CheckpointError):
        create_method("moediff").enhance(block, EnhanceOptions(checkpoint=str(bad)))
    # a manifest whose architecture does not describe a MoEDiff-SR network
    broken = tmp_path / "broken"
    manifest = json.loads(Path(str(moediff_checkpoint[0]) + ".json").read_text())
    manifest["architecture"]["expert"]["cond_channels"] = 3
    broken.with_suffix(".json").write_text(json.dumps(manifest))
    broken.with_suffix(".safetensors").write_bytes(Path(str(moediff_checkpoint[0]) + ".safetensors").read_bytes())
    with pytest.raises(CheckpointError):
        create_method("moediff").enhance(block, EnhanceOptions(checkpoint=str(broken)))


def test_cli_end_to_end_on_a_small_volume(tmp_path, block, moediff_checkpoint) -> None:
    from SuperResMoELib.io.formats import read_volume, write_volume

    src = tmp_path / "hr.nii.gz"
    hr = sub_volume(block, (0, 0, 0), (16, 20, 20))
    from SuperResMoELib.core.geometry import resample

    write_volume(resample(hr, scaled_grid(hr.grid, 2.0), "cubic"), src)  # a 1 mm "HR" scan
    out = tmp_path / "out" / "sr.nii.gz"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "SuperResMoELib", "enhance", "-i", str(src), "-o", str(out),
                           "--method", "moediff", "--checkpoint", str(moediff_checkpoint[0]), "--simulate",
                           "--steps", "2", "--samples", "2", "--sampler", "top1", "--progress", "json"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    done = json.loads(proc.stdout.strip().splitlines()[-1])
    summary = done["result"]["outputs"][0]
    assert summary["metrics"]["psnr"] > 0 and summary["info"]["sampler"] == "top1" and summary["info"]["samples"] == 2
    for tag in ("sr", "sr_lr", "sr_routing", "sr_gate1", "sr_uncertainty", "sr_abserr"):
        assert (out.parent / f"{tag}.nii.gz").exists(), tag
    sr = read_volume(out)
    assert sr.grid.same_as(read_volume(src).grid, atol=1e-4)  # --simulate: back onto the HR grid
    assert "psnr" in json.loads((out.parent / "sr_metrics.json").read_text())
    bad = subprocess.run([sys.executable, "-m", "SuperResMoELib", "enhance", "-i", str(src), "-o", str(out),
                          "--method", "moediff", "--checkpoint", str(moediff_checkpoint[0]), "--steps", "0",
                          "--progress", "none"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert bad.returncode == ExitCode.INPUT and "--steps" in bad.stderr


def test_the_default_steps_are_stated_alike_everywhere() -> None:
    """The sampler's default steps live in the method; the CLI help and the panel say the same number."""
    from SuperResMoELib.core.options import OPTIONS
    from SuperResMoELib.methods.moediff.method import DEFAULT_STEPS

    assert f"(default {DEFAULT_STEPS})" in OPTIONS["steps"].help
    ui = (ROOT / "SuperResMoE" / "Resources" / "UI" / "SuperResMoE.ui").read_text()
    assert f"<string>{DEFAULT_STEPS} (default)</string>" in ui


@pytest.mark.parametrize("prediction", ["eps", "x0"])
def test_an_experts_output_gives_consistent_noise_and_clean_estimates(prediction) -> None:
    """Whatever the experts output, the noise estimate the sampler combines and the
    clean estimate it implies invert each other exactly (Eq. 5 and 8)."""
    import dataclasses

    from SuperResMoELib.methods.moediff.model import MoEDiffArchitecture, MoEDiffSR
    from training.config import from_dict
    from conftest import MOEDIFF_TINY

    arch = dataclasses.replace(from_dict(MoEDiffArchitecture, MOEDIFF_TINY["architecture"], "tiny"),
                               prediction=prediction)
    net = MoEDiffSR(arch)
    g = torch.Generator().manual_seed(0)
    out, z_t = torch.randn(3, 4, 8, 8, generator=g, dtype=torch.float64), torch.randn(3, 4, 8, 8, generator=g,
                                                                                     dtype=torch.float64)
    level = torch.tensor([0.01, 0.5, 0.999], dtype=torch.float64)
    eps = net.noise_estimate(out, z_t, level)
    z0 = net.clean_estimate(out, z_t, level)
    from SuperResMoELib.methods.moediff.schedules import z0_from_eps

    torch.testing.assert_close(z0_from_eps(z_t, level, eps), z0, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(eps if prediction == "eps" else z0, out)
    with pytest.raises(ValueError, match="prediction"):
        dataclasses.replace(arch, prediction="v")
