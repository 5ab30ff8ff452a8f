"""The compact samples the module ships for Slicer's Sample Data module: plain
file sources with checksums, read here with the same MRML readers Slicer uses
(volume, volume-sequence and table storage nodes from slicer-core), and run
through Enhance as a user would (the 4D scan as a sequence with its table)."""

from __future__ import annotations

import hashlib
import json
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="the slicer-core wheel is part of the test extra")

from SuperResMoELib.slicer import mrml, sequences  # noqa: E402
from SuperResMoELib.slicer.logic import EnhanceRequest, EnhanceRun  # noqa: E402
from SuperResMoELib.slicer.samples import SAMPLES, sample_sources  # noqa: E402
from SuperResMoELib.slicer.selftest import READER_STORAGE  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / "SuperResMoE" / "Resources" / "SampleData"


@pytest.fixture
def scene(tmp_path):
    s = slicer.vtkMRMLScene()
    slicer.mrmlScene = s
    sequences.register_classes(s)
    yield s
    s.Clear(1)


def fetch(source: dict, folder: Path) -> list[Path]:
    """What SampleData's downloadFromSource does with a source: each URI into the
    cache under its file name (urllib), the checksum verified."""
    out = []
    for uri, name, checksum in zip(source["uris"], source["fileNames"], source["checksums"]):
        path = folder / name
        urllib.request.urlretrieve(uri, path)
        algo, digest = checksum.split(":")
        assert algo == "SHA256" and hashlib.sha256(path.read_bytes()).hexdigest() == digest, name
        out.append(path)
    return out


def load(scene, source: dict, folder: Path) -> dict:
    nodes = {}
    for path, name, kind in zip(fetch(source, folder), source["nodeNames"], source["loadFileTypes"]):
        cls, storage_cls = READER_STORAGE[kind]
        node = scene.AddNewNodeByClass(cls, name)
        storage = scene.AddNewNodeByClass(storage_cls)
        storage.SetFileName(str(path))
        assert storage.ReadData(node), path
        nodes[name] = node
    return nodes


def test_sources_point_at_shipped_files_with_checksums() -> None:
    sources = sample_sources(FOLDER)
    assert [s["sampleName"] for s in sources] == list(SAMPLES)
    names = [n for s in sources for n in s["fileNames"]]
    assert len(set(names)) == len(names)
    manifest = json.loads((FOLDER / "manifest.json").read_text())
    total = sum(f["bytes"] for f in manifest["files"].values())
    assert total < 5e6, f"the shipped samples grew to {total / 1e6:.1f} MB"
    for s in sources:
        for uri, checksum in zip(s["uris"], s["checksums"]):
            assert uri.startswith("file://") and checksum.startswith("SHA256:")


def test_t1_pair_loads_and_enhances_against_its_reference(scene, tmp_path) -> None:
    nodes = load(scene, sample_sources(FOLDER)[0], tmp_path)
    lr, hr = nodes["T1 LR"], nodes["T1 HR"]
    assert lr.GetSpacing() == pytest.approx((1, 1, 4)) and hr.GetSpacing() == pytest.approx((1, 1, 1))
    out = EnhanceRun(scene, lr, EnhanceRequest(method="cubic"), hr, python=sys.executable).run(wait=True, timeout=300)
    assert out.info["output_grid"].startswith("--scale 1,1,4")  # no scale given: the reference's grid
    assert 20 < out.metrics["psnr"] < 60


def test_mudi_scan_loads_as_a_sequence_and_enhances_with_its_table(scene, tmp_path) -> None:
    nodes = load(scene, sample_sources(FOLDER)[1], tmp_path)
    lr, hr, table = nodes["MUDI LR"], nodes["MUDI HR"], nodes["MUDI acquisition"]
    assert lr.GetNumberOfDataNodes() == hr.GetNumberOfDataNodes() == table.GetNumberOfRows() == 12
    assert lr.GetNthDataNode(0).GetSpacing() == pytest.approx((2.5, 2.5, 5.0))
    acq = sequences.acquisition_table(table)
    assert acq.values.shape == (12, 6) and np.all(acq.values[:, 3] >= 0)
    out = EnhanceRun(scene, lr, EnhanceRequest(method="ssmoe", task="aniso", device="cpu"), hr,
                     python=sys.executable, acquisition=table).run(wait=True, timeout=600)
    assert out.sequences["sr"].GetNumberOfDataNodes() == 12 and "sqerr" in out.sequences
    assert out.info["acquisition"]["source"] == "table"
    assert out.metrics  # against the HR sequence
    mean_psnr = out.metrics.get("mean_psnr", out.metrics.get("psnr"))
    assert mean_psnr is not None and mean_psnr > 20


@pytest.mark.slow
def test_the_build_command_reproduces_the_shipped_files(tmp_path, scene) -> None:
    """Same voxels, grids, frames and table (the bytes of a gzip stream may differ)."""
    from devtools.slicer_samples import FILES, build

    build(tmp_path)
    for name in FILES["t1"]:
        a, b = (mrml.volume_from_node(mrml.read_volume_node(scene, f / name)) for f in (FOLDER, tmp_path))
        np.testing.assert_array_equal(a.array, b.array)
        np.testing.assert_allclose(a.ijk_to_ras, b.ijk_to_ras)
    for name in FILES["mudi"][:2]:
        vols = []
        for f in (FOLDER, tmp_path):
            seq = scene.AddNewNodeByClass("vtkMRMLSequenceNode")
            storage = scene.AddNewNodeByClass("vtkMRMLVolumeSequenceStorageNode")
            storage.SetFileName(str(f / name))
            assert storage.ReadData(seq)
            vols.append(sequences.volume_from_sequence(seq))
        np.testing.assert_array_equal(vols[0].array, vols[1].array)
    assert (FOLDER / FILES["mudi"][2]).read_text() == (tmp_path / FILES["mudi"][2]).read_text()
