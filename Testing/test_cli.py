"""The ``superresmoe`` command line, run as a real subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from SuperResMoELib import io
from SuperResMoELib.core.volume import Volume

from conftest import make_matrix

CLI = [sys.executable, "-m", "SuperResMoELib"]
#: The CLI subprocesses inherit this environment, so they see the same CUDA devices.
CUDA = torch.cuda.is_available()


def run(*args: str, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, env=env, **kw)


def write_hr(path: Path, shape=(24, 26, 22), kind="oblique", dtype=np.float32, seed=0) -> Volume:
    rng = np.random.default_rng(seed)
    from scipy.ndimage import gaussian_filter

    arr = (gaussian_filter(rng.normal(size=shape), 2) * 400 + 500).astype(dtype)
    vol = Volume(arr, make_matrix(kind))
    io.write_volume(vol, path)
    return vol


def test_help_and_version() -> None:
    r = run("--help")
    assert r.returncode == 0
    for cmd in ("enhance", "evaluate", "sample-data", "info", "demo", "Exit codes"):
        assert cmd in r.stdout
    assert run("--version").stdout.startswith("superresmoe ")


def test_help_paths_do_not_import_the_heavy_libraries() -> None:
    """``--help`` of the program and of every command loads neither torch nor
    scipy, SimpleITK or nibabel: they load when a command runs."""
    code = ("import sys, runpy\n"
            "sys.argv = ['superresmoe'] + sys.argv[1:]\n"
            "try:\n    runpy.run_module('SuperResMoELib', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'scipy', 'SimpleITK', 'nibabel', 'monai') if m in sys.modules))")
    for args in ([], ["enhance"], ["evaluate"], ["sample-data"], ["info"], ["demo"]):
        r = subprocess.run([sys.executable, "-c", code, *args, "--help"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip().splitlines()[-1] == "[]", (args, r.stdout[-300:])


def test_enhance_file_geometry_and_units(tmp_path: Path) -> None:
    hr = write_hr(tmp_path / "a.nii.gz")
    r = run("enhance", "-i", str(tmp_path / "a.nii.gz"), "-o", str(tmp_path / "sr.nrrd"), "--scale", "1,2,3",
            "--progress", "none")
    assert r.returncode == 0, r.stderr
    sr = io.read_volume(tmp_path / "sr.nrrd")
    assert sr.spatial_shape == (72, 52, 22)  # KJI shape, IJK factors
    np.testing.assert_allclose(sr.grid.corners(), hr.grid.corners(), atol=1e-3)
    # intensities stay in the user's units
    assert abs(float(np.mean(sr.array)) - float(np.mean(hr.array))) < 5


def test_enhance_simulate_writes_maps_and_metrics(tmp_path: Path) -> None:
    write_hr(tmp_path / "a.nii.gz")
    r = run("enhance", "-i", str(tmp_path / "a.nii.gz"), "-o", str(tmp_path / "out"), "--simulate",
            "--progress", "none")
    assert r.returncode == 0, r.stderr
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["a_cubic.json", "a_cubic.nii.gz", "a_cubic_abserr.nii.gz", "a_cubic_lr.nii.gz", "a_cubic_metrics.json",
                     "a_cubic_sqerr.nii.gz", "metrics.csv"]
    m = json.loads((tmp_path / "out" / "a_cubic_metrics.json").read_text())
    assert 0 < m["ssim"] < 1 and m["psnr"] > 10
    lr = io.read_volume(tmp_path / "out" / "a_cubic_lr.nii.gz")
    assert lr.spatial_shape == (12, 26, 22)  # x2 through-plane by default
    err = io.read_volume(tmp_path / "out" / "a_cubic_sqerr.nii.gz")
    assert err.spatial_shape == (24, 26, 22) and float(err.array.mean()) == pytest.approx(m["mse"], rel=1e-4)


def test_progress_json_lines(tmp_path: Path) -> None:
    write_hr(tmp_path / "a.nii.gz")
    r = run("enhance", "-i", str(tmp_path / "a.nii.gz"), "-o", str(tmp_path / "o.nii.gz"), "--progress", "json")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert all({"stage", "fraction", "message"} <= set(x) for x in lines)
    assert [x["stage"] for x in lines][0] == "load" and lines[-1]["stage"] == "done"
    assert lines[-1]["result"]["outputs"][0]["output"].endswith("o.nii.gz")
    assert all(0.0 <= x["fraction"] <= 1.0 for x in lines)


def test_folder_batch_with_one_bad_file(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    write_hr(src / "a.nii.gz")
    write_hr(src / "b.nrrd", shape=(10, 12, 14), kind="flipped")
    (src / "c.nii.gz").write_bytes(b"broken")
    r = run("enhance", "-i", str(src), "-o", str(tmp_path / "out"), "--progress", "none")
    assert r.returncode == 7, r.stderr
    assert "c.nii.gz" in r.stderr and "cannot read" in r.stderr
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["a_cubic.json", "a_cubic.nii.gz", "b_cubic.json", "b_cubic.nrrd"]
    assert "3 input(s) here: 2 done, 0 skipped, 1 failed" in r.stdout
    side = json.loads((out / "a_cubic.json").read_text())
    assert side["request"]["method"] == "cubic" and len(side["request"]["input_sha256"]) == 64
    stamps = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.iterdir()}

    # a second run skips what is done (nothing rewritten) and still reports the bad file
    r = run("enhance", "-i", str(src), "-o", str(out), "--progress", "none")
    assert r.returncode == 7, r.stderr
    assert "3 input(s) here: 0 done, 2 skipped, 1 failed" in r.stdout
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.iterdir()} == stamps

    # other settings, or --overwrite, redo it; a changed output is not taken as done
    r = run("enhance", "-i", str(src / "a.nii.gz"), "-o", str(out), "--scale", "1,1,3", "--progress", "none")
    assert r.returncode == 0 and "1 done, 0 skipped" in r.stdout, r.stderr
    r = run("enhance", "-i", str(src / "b.nrrd"), "-o", str(out), "--overwrite", "--progress", "none")
    assert "1 done, 0 skipped" in r.stdout, r.stderr
    (out / "b_cubic.nrrd").write_bytes((out / "b_cubic.nrrd").read_bytes()[:-10])  # truncated by hand
    r = run("enhance", "-i", str(src / "b.nrrd"), "-o", str(out), "--progress", "none")
    assert "1 done, 0 skipped" in r.stdout, r.stderr


def test_a_file_that_cannot_be_written_is_retried_then_reported(tmp_path: Path) -> None:
    src = tmp_path / "in"
    write_hr(src / "a.nii.gz")
    write_hr(src / "b.nii.gz", seed=1)
    (tmp_path / "out" / "a_cubic.nii.gz" / "in-the-way").mkdir(parents=True)
    r = run("enhance", "-i", str(src), "-o", str(tmp_path / "out"), "--retries", "1", "--progress", "none")
    assert r.returncode == 7, r.stderr
    assert "attempt 1 of 2 failed" in r.stderr and "after 2 attempt(s)" in r.stderr
    assert "2 input(s) here: 1 done, 0 skipped, 1 failed" in r.stdout
    assert not [p.name for p in (tmp_path / "out").iterdir() if ".tmp" in p.name]


def test_reference_folder_and_mismatch(tmp_path: Path) -> None:
    write_hr(tmp_path / "lr.nii.gz", shape=(12, 26, 22))
    write_hr(tmp_path / "ref.nii.gz", shape=(24, 26, 20))
    r = run("enhance", "-i", str(tmp_path / "lr.nii.gz"), "-o", str(tmp_path / "o.nii.gz"),
            "--reference", str(tmp_path / "ref.nii.gz"), "--progress", "none")
    assert r.returncode == 3
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and "does not match the SR output grid" in err[0]
    assert not (tmp_path / "o.nii.gz").exists()  # checked before any work


def test_reference_without_scale_sets_the_output_grid(tmp_path: Path) -> None:
    """A reference and no --scale: the scale comes from the two grids (cubic), or the
    reference grid itself is the target (REMIx, here a cropped reference no scale reaches)."""
    import json

    from SuperResMoELib.core.geometry import sub_volume
    from SuperResMoELib.simulation.lowres import simulate_low_resolution

    hr = write_hr(tmp_path / "hr.nii.gz", shape=(24, 26, 22), kind="axis")
    lr, _ = simulate_low_resolution(hr, (1.0, 1.0, 2.0))
    io.write_volume(lr, tmp_path / "lr.nii.gz")
    r = run("enhance", "-i", str(tmp_path / "lr.nii.gz"), "-o", str(tmp_path / "o.nii.gz"), "--method", "cubic",
            "--reference", str(tmp_path / "hr.nii.gz"), "--progress", "json")
    assert r.returncode == 0, r.stderr
    assert io.read_volume(tmp_path / "o.nii.gz").grid.same_as(hr.grid, atol=1e-3)
    assert json.loads((tmp_path / "o_metrics.json").read_text())["psnr"] > 20
    done = json.loads(r.stdout.strip().splitlines()[-1])
    assert done["result"]["outputs"][0]["info"]["output_grid"] == "--scale 1,1,2 derived from the reference grid"
    cropped = sub_volume(hr, (2, 3, 1), (22, 24, 21))
    io.write_volume(cropped, tmp_path / "crop.nii.gz")
    r = run("enhance", "-i", str(tmp_path / "lr.nii.gz"), "-o", str(tmp_path / "r.nii.gz"), "--method", "remix",
            "--reference", str(tmp_path / "crop.nii.gz"), "--progress", "none", "--device", "cpu", timeout=300)
    assert r.returncode == 0, r.stderr
    assert io.read_volume(tmp_path / "r.nii.gz").grid.same_as(cropped.grid, atol=1e-3)


def test_evaluate_command(tmp_path: Path) -> None:
    ref = write_hr(tmp_path / "ref.nii.gz")
    pred = ref.with_array(np.asarray(ref.array) + 2.0)
    io.write_volume(pred, tmp_path / "pred.nii.gz")
    r = run("evaluate", "-r", str(tmp_path / "ref.nii.gz"), "-p", str(tmp_path / "pred.nii.gz"),
            "--output", str(tmp_path / "m.csv"), "--progress", "none")
    assert r.returncode == 0, r.stderr
    rows = json.loads((tmp_path / "m.json").read_text())
    assert rows[0]["mse"] == pytest.approx(4.0, rel=1e-5) and rows[0]["rmse"] == pytest.approx(2.0, rel=1e-5)
    assert "mse" in r.stdout


def test_info_json() -> None:
    r = run("info", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert "cubic" in [m["name"] for m in info["methods"]]
    assert info["devices"][-1]["name"] == "cpu"


@pytest.mark.parametrize(
    "setup, args, code, message",
    [
        ("none", ["--method", "nope"], 2, "invalid choice"),
        ("none", ["--scale", "1,2"], 2, "one or three numbers"),
        ("missing", [], 3, "file not found"),
        ("png", [], 3, "unknown image format"),
        ("2d", [], 3, "2D image"),
        ("5d", [], 3, "5D images are not supported"),
        ("nan", [], 3, "NaN or Inf"),
        ("huge", [], 3, "do not fit in float32"),
        pytest.param("ok", ["--device", "cuda:0"], 6, "CUDA is not available",
                     marks=pytest.mark.skipif(CUDA, reason="cuda:0 exists here; needs a torch without CUDA"),
                     id="cuda0-without-cuda"),
        # no machine has 100 GPUs: a DeviceError on every machine, with the message for its case
        pytest.param("ok", ["--device", "cuda:99"], 6, "does not exist" if CUDA else "CUDA is not available",
                     id="cuda99-missing-device"),
        ("ok", ["--scale", "0"], 3, "positive"),
        ("ok", ["--overlap", "1.5"], 3, "overlap must be in [0, 1)"),
        ("ok", ["--scale", "2", "--spacing", "1"], 3, "either --scale or --spacing"),
    ],
)
def test_bad_input_one_line_errors(tmp_path: Path, setup: str, args: list[str], code: int, message: str) -> None:
    path = tmp_path / "x.nii.gz"
    if setup == "png":
        path = tmp_path / "x.png"
        path.write_bytes(b"\x89PNG\r\n")
    elif setup == "2d":
        nib.save(nib.Nifti1Image(np.zeros((8, 8), np.float32), np.eye(4)), path)
    elif setup == "5d":
        nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 2, 2), np.float32), np.eye(4)), path)
    elif setup == "nan":
        a = np.ones((8, 8, 8), np.float32)
        a[1, 2, 3] = np.nan
        nib.save(nib.Nifti1Image(a, np.eye(4)), path)
    elif setup == "huge":
        a = np.ones((8, 8, 8), np.float64)
        a[0, 0, 0] = 1e300
        nib.save(nib.Nifti1Image(a, np.eye(4)), path)
    elif setup in ("ok", "none"):
        write_hr(path, shape=(8, 8, 8))
    r = run("enhance", "-i", str(path), "-o", str(tmp_path / "o.nii.gz"), "--progress", "none", *args)
    assert r.returncode == code, r.stderr
    if code == 0:
        return
    assert message in r.stderr
    assert "Traceback" not in r.stderr
    if code != 2:
        assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o.nii.gz").exists()


def test_nonfinite_zero_option(tmp_path: Path) -> None:
    a = np.ones((8, 8, 8), np.float32)
    a[1, 2, 3] = np.inf
    nib.save(nib.Nifti1Image(a, np.eye(4)), tmp_path / "x.nii.gz")
    before = (tmp_path / "x.nii.gz").read_bytes()
    r = run("enhance", "-i", str(tmp_path / "x.nii.gz"), "-o", str(tmp_path / "o.nii.gz"), "--nonfinite", "zero",
            "--progress", "none")
    assert r.returncode == 0, r.stderr
    assert np.isfinite(io.read_volume(tmp_path / "o.nii.gz").array).all()
    assert (tmp_path / "x.nii.gz").read_bytes() == before  # input untouched


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.uint16])
def test_integer_inputs_keep_values(tmp_path: Path, dtype) -> None:
    a = np.zeros((8, 8, 8), dtype)
    a[...] = np.iinfo(dtype).max
    nib.save(nib.Nifti1Image(a, np.eye(4)), tmp_path / "x.nii.gz")
    r = run("enhance", "-i", str(tmp_path / "x.nii.gz"), "-o", str(tmp_path / "o.nii.gz"), "--progress", "none")
    assert r.returncode == 0, r.stderr
    out = io.read_volume(tmp_path / "o.nii.gz").array
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, float(np.iinfo(dtype).max), rtol=1e-5)


def test_volume_smaller_than_factor_for_simulate(tmp_path: Path) -> None:
    write_hr(tmp_path / "x.nii.gz", shape=(1, 8, 8))
    r = run("enhance", "-i", str(tmp_path / "x.nii.gz"), "-o", str(tmp_path / "o"), "--simulate",
            "--progress", "none")
    assert r.returncode == 3 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_sigterm_cancels_with_exit_code_5(tmp_path: Path) -> None:
    """A long cubic run over many frames is cancelled between frames."""
    a = np.random.default_rng(0).normal(size=(400, 24, 48, 48)).astype(np.float32)
    io.write_volume(Volume(a, np.eye(4)), tmp_path / "big.nii")
    proc = subprocess.Popen([*CLI, "enhance", "-i", str(tmp_path / "big.nii"), "-o", str(tmp_path / "o.nii"),
                             "--scale", "2", "--progress", "json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if json.loads(line)["stage"] == "enhance":
            break
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 5, err
    assert json.loads(out.strip().splitlines()[-1])["stage"] == "error"
    assert not (tmp_path / "o.nii").exists()


def test_sample_data_command_writes_readable_mudi(tmp_path: Path, monkeypatch) -> None:
    env = {**os.environ, "SUPERRESMOE_CACHE": str(tmp_path / "cache")}
    r = subprocess.run([*CLI, "sample-data", "--out", str(tmp_path / "s"), "--kind", "mudi", "--rows", "3",
                        "--progress", "none"], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    hr = io.read_volume(tmp_path / "s" / "mudi_hr.nii.gz", table=tmp_path / "s" / "parameters_new.txt")
    assert hr.array.shape[0] == 3 and hr.acquisition is not None and len(hr.acquisition) == 3
    np.testing.assert_allclose(hr.spacing, 2.5, atol=1e-5)
    lr = io.read_volume(tmp_path / "s" / "mudi_lr_aniso.nii.gz")
    np.testing.assert_allclose(lr.spacing, [2.5, 2.5, 5.0], atol=1e-5)


@pytest.mark.slow
def test_demo_end_to_end(tmp_path: Path) -> None:
    env = {**os.environ, "SUPERRESMOE_CACHE": str(tmp_path / "cache")}
    r = subprocess.run([*CLI, "demo", "--out", str(tmp_path / "d"), "--progress", "none"], capture_output=True,
                       text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr
    assert "cubic" in r.stdout and (tmp_path / "d" / "t1_sr_cubic.nii.gz").exists()
    rows = list(__import__("csv").DictReader(open(tmp_path / "d" / "demo_metrics.csv")))
    assert float(rows[0]["PSNR_dB"]) > 25
