"""What ``SuperResMoETest`` (Slicer's *Reload and Test*) checks, Qt-free so that
it also runs under pytest with ``slicer-core``.

* :func:`light_self_test` - the default: needs only what Slicer ships (numpy,
  VTK/MRML), so it runs on the extension build machines: the library's
  torch-free parts import, the shipped samples read with Slicer's storage nodes
  (T1 pair; the MUDI-like scan as volume sequences and its acquisition table),
  the parameter node round trip, the sequence adapter, the layout.
* :func:`full_self_test` - off by default (``SUPERRESMOE_FULL_SELF_TEST=1``):
  real Enhance runs in the background process (cubic on the T1 pair against
  its HR, SS-MoE on the 4D scan with its table); it needs the packages the
  first Enhance installs.  ``poll`` is called while waiting, so Slicer keeps
  processing events instead of freezing.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

#: Environment variable that turns the full self-test on.
FULL_TEST_VARIABLE = "SUPERRESMOE_FULL_SELF_TEST"
#: Node class and storage node class of each Slicer file type the shipped samples use.
READER_STORAGE = {"VolumeFile": ("vtkMRMLScalarVolumeNode", "vtkMRMLVolumeArchetypeStorageNode"),
            "SequenceFile": ("vtkMRMLSequenceNode", "vtkMRMLVolumeSequenceStorageNode"),
            "TableFile": ("vtkMRMLTableNode", "vtkMRMLTableStorageNode")}


def full_test_requested() -> bool:
    return os.environ.get(FULL_TEST_VARIABLE, "").strip().lower() in ("1", "true", "yes", "on")


def load_samples(scene, resource_dir: str | Path) -> dict[str, Any]:
    """Every shipped sample read in place with the storage node Slicer's reader
    for its file type uses; nodes by node name."""
    from .samples import SAMPLES

    from . import sequences

    sequences.register_classes(scene)
    nodes: dict[str, Any] = {}
    for files, names, types in SAMPLES.values():
        for f, name, kind in zip(files, names, types):
            cls, storage_cls = READER_STORAGE[kind]
            node = scene.AddNewNodeByClass(cls, scene.GenerateUniqueName(name))
            storage = scene.AddNewNodeByClass(storage_cls)
            storage.SetFileName(str(Path(resource_dir) / f))
            if not storage.ReadData(node):
                raise AssertionError(f"could not read the shipped sample {f}")
            nodes[name] = node
    return nodes


def light_self_test(scene, resource_dir: str | Path) -> dict[str, Any]:
    """The default self-test (module docstring); returns what it found. Raises AssertionError."""
    from . import mrml, sequences
    from .logic import EnhanceRequest
    from .parameters import PanelParameters
    from .samples import sample_sources
    from .views import LAYOUT_ID, register_layout
    from SuperResMoELib.methods import method_names

    names = method_names()
    assert {"cubic", "ssmoe", "remix", "moediff"} <= set(names), names
    assert len(sample_sources(resource_dir)) == 2
    nodes = load_samples(scene, resource_dir)
    lr, hr = nodes["T1 LR"], nodes["T1 HR"]
    assert tuple(round(s, 3) for s in lr.GetSpacing()) == (1.0, 1.0, 4.0), lr.GetSpacing()
    assert mrml.volume_from_node(hr).grid.spacing.tolist() == [1.0, 1.0, 1.0]
    scan = sequences.volume_from_sequence(nodes["MUDI LR"])
    table = sequences.acquisition_table(nodes["MUDI acquisition"])
    assert scan.is_4d and len(table) == scan.array.shape[0], (scan.array.shape, len(table))
    node = scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode")
    params = PanelParameters(node)
    params.method, params.scale, params.inputVolume = "cubic", "1,1,2", lr
    request = params.to_request()
    assert isinstance(request, EnhanceRequest) and tuple(request.scale) == (1.0, 1.0, 2.0)
    assert params.inputVolume is lr
    layout = scene.AddNewNodeByClass("vtkMRMLLayoutNode")
    assert register_layout(layout) == LAYOUT_ID and layout.IsLayoutDescription(LAYOUT_ID)
    return {"methods": names, "frames": int(scan.array.shape[0]), "t1_shape": list(mrml.volume_from_node(lr).array.shape)}


def full_self_test(scene, resource_dir: str | Path, python: str | None = None,
                   wait: Callable[[], None] = lambda: time.sleep(0.05), timeout: float = 900.0) -> dict[str, Any]:
    """Enhance the shipped samples in the background process (module docstring);
    ``wait`` runs between polls (Slicer: process events). Raises AssertionError."""
    from .logic import EnhanceRequest, EnhanceRun

    nodes = load_samples(scene, resource_dir)
    found: dict[str, Any] = {}
    runs = {"cubic": (nodes["T1 LR"], EnhanceRequest(method="cubic"), nodes["T1 HR"], None),
            "ssmoe": (nodes["MUDI LR"], EnhanceRequest(method="ssmoe", task="aniso"), nodes["MUDI HR"],
                      nodes["MUDI acquisition"])}
    for name, (inp, request, ref, acquisition) in runs.items():
        run = EnhanceRun(scene, inp, request, ref, python=python, acquisition=acquisition)
        run.start()
        deadline = time.monotonic() + timeout
        while run.poll():
            if time.monotonic() > deadline:
                run.cancel(block=True)
                raise AssertionError(f"{name}: no result after {timeout:.0f} s")
            wait()
        out = run.outcome
        assert out is not None and "sr" in out.nodes, name
        psnr = out.metrics.get("psnr", out.metrics.get("mean_psnr"))
        assert psnr is not None and psnr > 20, (name, out.metrics)
        found[name] = {"psnr": float(psnr), "seconds": out.seconds}
    return found
