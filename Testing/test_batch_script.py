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
SCRIPT = ROOT / "SuperResMoELib" / "slicer" / "batch.py"


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


def test_any_error_exits_with_one_line_and_its_code(tmp_path) -> None:
    """Errors outside a run's own failures still end the script: a bad option value
    (usage), a vector image among scalar ones (that file fails, the rest goes on)."""
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(1)
    io.write_volume(Volume((rng.random((8, 24, 20)) * 100).astype(np.float32), make_matrix("axis")), src / "a.nii.gz")
    vec = Volume((rng.random((3, 8, 24, 20)) * 100).astype(np.float32), make_matrix("axis"))
    io.write_volume(vec, src / "vector.nrrd")
    proc = run("--input", src, "--output", tmp_path / "out", "--method", "cubic", "--scale", "banana", cwd=tmp_path)
    assert proc.returncode == 2 and "--scale" in proc.stderr and "Traceback" not in proc.stderr
    proc = run("--input", src, "--output", tmp_path / "out", "--method", "cubic", "--scale", "1,1,2", cwd=tmp_path)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 7 and "vector.nrrd: FAILED" in proc.stderr and "a.nii.gz: a_cubic.nii.gz" in proc.stdout
    usage = run("--usage", cwd=tmp_path)
    assert usage.returncode == 0 and "--input" in usage.stdout


def test_nodes_leave_the_scene_after_each_file(tmp_path) -> None:
    """Each file's input, result, display and storage nodes are removed once written."""
    import importlib.util

    import slicer

    spec = importlib.util.spec_from_file_location("batch_under_test", SCRIPT)
    batch = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(batch)
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(2)
    for name in ("a", "b", "c"):
        io.write_volume(Volume((rng.random((8, 24, 20)) * 100).astype(np.float32), make_matrix("axis")),
                        src / f"{name}.nii.gz")
    slicer.mrmlScene = slicer.vtkMRMLScene()
    base = slicer.mrmlScene.GetNumberOfNodes()
    code = batch.main(["--input", str(src), "--output", str(tmp_path / "out"), "--method", "cubic",
                       "--scale", "1,1,2", "--simulate"])
    assert code == 0 and len(list((tmp_path / "out").glob("*_cubic.nii.gz"))) == 3
    leftover = [slicer.mrmlScene.GetNthNode(n).GetClassName() for n in range(slicer.mrmlScene.GetNumberOfNodes())]
    assert all(c == "vtkMRMLColorTableNode" for c in leftover[base:]), leftover  # only the shared error colours


def test_options_avoid_slicer_own_flags() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("batch_flags", SCRIPT)
    batch = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(batch)
    flags = {s for a in batch.build_parser()._actions for s in a.option_strings}
    assert "--input" in flags and not flags & batch.SLICER_OPTIONS, flags & batch.SLICER_OPTIONS


def test_script_is_not_in_the_module_folder() -> None:
    """Slicer loads every .py file of a scripted module's folder as a module."""
    assert sorted(p.name for p in (ROOT / "SuperResMoE").glob("*.py")) == ["SuperResMoE.py"]
