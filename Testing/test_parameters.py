"""The module's parameter node: typed values, node references, saved and
restored with a real MRML scene file."""

from __future__ import annotations

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="the slicer-core wheel is part of the test extra")

from SuperResMoELib.slicer import mrml  # noqa: E402
from SuperResMoELib.slicer.parameters import PanelDefaults, PanelParameters  # noqa: E402
from SuperResMoELib.core.volume import Volume  # noqa: E402


def new_params(scene):
    node = scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode", "SuperResMoE")
    node.SetAttribute("ModuleName", "SuperResMoE")
    return PanelParameters(node)


def test_defaults_types_and_errors() -> None:
    scene = slicer.vtkMRMLScene()
    p = new_params(scene)
    assert p.values() == PanelDefaults().__dict__
    p.method, p.overlap, p.expert, p.simulate = "remix", 0.25, 3, True
    assert (p.method, p.overlap, p.expert, p.simulate) == ("remix", 0.25, 3, True)
    p.overlap = 1  # an int is a fine float
    assert p.overlap == 1.0 and isinstance(p.overlap, float)
    with pytest.raises(TypeError, match="must be int"):
        p.expert = "3"
    with pytest.raises(AttributeError, match="no parameter"):
        p.colour = "red"
    p.reset()
    assert p.values() == PanelDefaults().__dict__


def test_request_from_the_panel() -> None:
    scene = slicer.vtkMRMLScene()
    p = new_params(scene)
    p.method, p.task, p.acquisition, p.scale = "ssmoe", "aniso", "1, 0, 0, 1000, 500, 80", "1,1,2"
    p.patchSize, p.mixedPrecision = 0, False
    r = p.to_request()
    assert r.method == "ssmoe" and r.task == "aniso" and r.acquisition == (1, 0, 0, 1000, 500, 80)
    assert r.scale == (1, 1, 2) and r.patch_size is None and r.expert is None and not r.mixed_precision
    p.method, p.targetSpacing, p.expert, p.scale = "remix", 1.0, 5, ""
    r = p.to_request()
    assert r.spacing == (1.0,) and r.expert == 5 and r.scale is None
    p.acquisition = "1,2,3"
    with pytest.raises(ValueError, match="six numbers"):
        p.to_request()
    p.acquisition, p.scale = "", "a,b"
    with pytest.raises(ValueError, match="numbers"):
        p.to_request()


def test_saved_and_restored_with_the_scene(tmp_path) -> None:
    scene = slicer.vtkMRMLScene()
    vol = mrml.add_volume_node(scene, Volume(np.ones((3, 4, 5), np.float32), np.eye(4)), "lr")
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    scene.AddNode(storage)
    storage.SetFileName(str(tmp_path / "lr.nrrd"))
    vol.SetAndObserveStorageNodeID(storage.GetID())
    storage.WriteData(vol)
    p = new_params(scene)
    p.method, p.overlap, p.device, p.inputVolume = "remix", 0.25, "cpu", vol
    scene.SetURL(str(tmp_path / "scene.mrml"))
    assert scene.Commit()
    restored = slicer.vtkMRMLScene()
    restored.SetURL(str(tmp_path / "scene.mrml"))
    assert restored.Connect()
    q = PanelParameters(restored.GetFirstNodeByName("SuperResMoE"))
    assert (q.method, q.overlap, q.device) == ("remix", 0.25, "cpu")
    assert q.inputVolume is not None and q.inputVolume.GetName() == "lr"


def test_acquisition_source_prefers_the_table_node() -> None:
    scene = slicer.vtkMRMLScene()
    p = new_params(scene)
    assert p.acquisition_source() is None
    p.acquisitionFile = "/data/parameters_new.txt"
    assert p.acquisition_source() == "/data/parameters_new.txt"
    table = scene.AddNewNodeByClass("vtkMRMLTableNode", "acq")
    p.acquisitionTable = table
    assert p.acquisition_source() is table
