"""The module's self-test functions with slicer-core: the light one in a process
without torch, the full one with real background runs."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("slicer", reason="the slicer-core wheel is part of the test extra")

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "SuperResMoE" / "Resources" / "SampleData"


def test_light_self_test_needs_no_torch() -> None:
    code = textwrap.dedent(f"""
        import sys
        import slicer
        from SuperResMoELib.slicer.selftest import light_self_test
        scene = slicer.vtkMRMLScene(); slicer.mrmlScene = scene
        found = light_self_test(scene, {str(SAMPLES)!r})
        assert "torch" not in sys.modules, "the light self-test imported torch"
        print(found["frames"], found["t1_shape"])
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[0] == "12"


def test_light_self_test_fails_on_a_broken_sample(tmp_path) -> None:
    import shutil

    import slicer

    from SuperResMoELib.slicer.selftest import light_self_test

    for f in SAMPLES.iterdir():
        shutil.copy(f, tmp_path / f.name)
    (tmp_path / "SuperResMoE_T1_LR.nrrd").write_bytes(b"NRRD0004\nbroken")
    scene = slicer.vtkMRMLScene()
    with pytest.raises(AssertionError, match="SuperResMoE_T1_LR"):
        light_self_test(scene, tmp_path)


def test_full_self_test_runs_the_samples() -> None:
    import slicer

    from SuperResMoELib.slicer.selftest import full_self_test

    scene = slicer.vtkMRMLScene()
    slicer.mrmlScene = scene
    polls = []
    found = full_self_test(scene, SAMPLES, python=sys.executable, wait=lambda: polls.append(1), timeout=600)
    assert set(found) == {"cubic", "ssmoe"} and all(v["psnr"] > 20 for v in found.values())
    assert polls  # it waited by polling, not by blocking
    scene.Clear(1)
