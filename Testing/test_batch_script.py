"""The batch script for ``Slicer --no-main-window --python-script``, run here
with plain Python and the slicer-core wheel: real files, a real subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("slicer", reason="the slicer-core wheel is part of the test extra")

from conftest import make_matrix  # noqa: E402
from SuperResMoELib import io  # noqa: E402
from SuperResMoELib.core.volume import Volume  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "SuperResMoE" / "batch.py"


def run(*args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def test_folder_batch_with_a_broken_file(tmp_path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        io.write_volume(Volume((rng.random((8, 24, 20)) * 100).astype(np.float32), make_matrix("oblique")),
                        src / f"{name}.nii.gz")
    (src / "broken.nii.gz").write_bytes(b"not an image")
    proc = run("--input", src, "--output", tmp_path / "out", "--method", "cubic", "--scale", "1,1,2",
               "--simulate", cwd=tmp_path)
    assert proc.returncode == 7, proc.stderr
    assert "broken.nii.gz: FAILED" in proc.stderr and "batch: 2 done, 1 failed" in proc.stdout
    out = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert "a_cubic.nii.gz" in out and "b_cubic_sqerr.nii.gz" in out and "a_cubic_lr.nii.gz" in out
    sr = io.read_volume(tmp_path / "out" / "a_cubic.nii.gz")
    assert sr.array.shape == (8, 24, 20)  # simulated: back on the input (HR) grid
    assert "psnr" in proc.stdout


def test_no_inputs_and_usage_errors(tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    proc = run("--input", tmp_path / "empty", "--output", tmp_path / "out", cwd=tmp_path)
    assert proc.returncode == 3 and "no image files" in proc.stderr
    proc = run("--output", tmp_path / "out", cwd=tmp_path)
    assert proc.returncode == 2 and "--input" in proc.stderr
