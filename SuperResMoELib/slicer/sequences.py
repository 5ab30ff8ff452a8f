"""4D scans in Slicer: volume sequences <-> 4D :class:`~SuperResMoELib.core.volume.Volume`,
and acquisition tables from table nodes.

Slicer holds a 4D qMRI scan as a ``vtkMRMLSequenceNode`` of scalar volumes
(read from a ``.seq.nrrd`` whose first axis is a list, or built by the
Sequences module), shown through a sequence browser's *proxy* volume.  So an
input is a sequence node, or a proxy volume whose browser's master sequence
holds volumes (:func:`source_sequence`); the whole sequence is enhanced and the
result comes back as a **new** sequence with the same index (name, unit and
values) and its own browser and proxy (:func:`add_sequence`).

Everything here runs with the MRML of a desktop Slicer or of the
``slicer-core`` wheel (the browser's proxy comes from
``vtkSlicerSequencesLogic``).  Geometry: every frame must share the first
frame's grid; the 4D array is ``(N, K, J, I)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from SuperResMoELib.core.errors import InputError
from SuperResMoELib.core.volume import ACQUISITION_COLUMNS, AcquisitionTable, Volume


def _slicer():
    from .mrml import _slicer as slicer_module

    return slicer_module()


def register_classes(scene) -> None:
    """Register the sequence browser class where the MRML has not (plain ``slicer-core`` scenes)."""
    slicer = _slicer()
    if scene.CreateNodeByClass("vtkMRMLSequenceBrowserNode") is None:
        scene.RegisterNodeClass(slicer.vtkMRMLSequenceBrowserNode())


def _browsers(scene) -> list:
    return [scene.GetNthNodeByClass(n, "vtkMRMLSequenceBrowserNode")
            for n in range(scene.GetNumberOfNodesByClass("vtkMRMLSequenceBrowserNode"))]


def source_sequence(node):
    """The volume sequence ``node`` stands for: itself when it is a sequence node,
    the master sequence of the browser whose proxy it is, else ``None``."""
    if node is None:
        return None
    if node.IsA("vtkMRMLSequenceNode"):
        return node
    scene = node.GetScene()
    if scene is None or not node.IsA("vtkMRMLVolumeNode"):
        return None
    for browser in _browsers(scene):
        seq = browser.GetMasterSequenceNode()
        if seq is not None and browser.GetProxyNode(seq) is node and seq.GetNumberOfDataNodes() > 1:
            return seq
    return None


def display_volume(node):
    """What a slice view can show for ``node``: a sequence's proxy volume (of the first
    browser whose master it is), else ``node`` itself."""
    if node is None or not node.IsA("vtkMRMLSequenceNode"):
        return node
    scene = node.GetScene()
    for browser in _browsers(scene) if scene is not None else []:
        if browser.GetMasterSequenceNode() is node:
            proxy = browser.GetProxyNode(node)
            if proxy is not None:
                return proxy
    return None


def volume_from_sequence(seq) -> Volume:
    """A 4D :class:`Volume` ``(N, K, J, I)`` holding a **copy** of a volume sequence's frames.

    Raises:
        InputError: an empty sequence, a frame that is not a scalar volume, or
            frames on different grids.
    """
    from .mrml import ijk_to_ras

    slicer = _slicer()
    n = seq.GetNumberOfDataNodes()
    if n == 0:
        raise InputError(f"sequence '{seq.GetName()}' has no frames")
    frames: list[np.ndarray] = []
    matrix: np.ndarray | None = None
    shape: tuple[int, ...] = ()
    for i in range(n):
        frame = seq.GetNthDataNode(i)
        if frame is None or not frame.IsA("vtkMRMLScalarVolumeNode") or frame.GetImageData() is None:
            raise InputError(f"sequence '{seq.GetName()}': frame {i} is not a scalar volume")
        if frame.GetImageData().GetNumberOfScalarComponents() != 1:
            raise InputError(f"sequence '{seq.GetName()}': frame {i} has several components per voxel")
        arr = np.array(slicer.util.arrayFromVolume(frame), copy=True)
        m = ijk_to_ras(frame)
        if matrix is None:
            matrix, shape = m, arr.shape
        elif arr.shape != shape or not np.allclose(m, matrix, atol=1e-4):
            raise InputError(f"sequence '{seq.GetName()}': frame {i} is not on the grid of frame 0 "
                             f"({arr.shape} vs {shape}); every frame must share one grid")
        frames.append(arr)
    assert matrix is not None  # n > 0
    return Volume(np.stack(frames), matrix, name=seq.GetName())


def add_sequence(scene, volume: Volume, name: str, like=None, label: bool = False):
    """A new sequence node holding the frames of a 4D ``volume`` (one new scalar
    or label map volume per frame), with the index name, unit and values of
    ``like`` (a sequence of as many frames) or ``frame`` 0..N-1, plus a browser
    and its proxy volume for display.  Returns ``(sequence, browser, proxy)``.

    The sequence has no storage node yet: Slicer's save dialog gives it one
    named after it (``.seq.nrrd``) and ticks it, like any new node.
    """
    from .mrml import _numpy_to_matrix

    slicer = _slicer()
    arr = np.asarray(volume.array)
    if arr.ndim != 4:
        raise InputError(f"a volume sequence holds a 4D image; got shape {arr.shape}")
    register_classes(scene)
    seq = scene.AddNewNodeByClass("vtkMRMLSequenceNode", scene.GenerateUniqueName(name))
    values = [str(i) for i in range(len(arr))]
    if like is not None and like.GetNumberOfDataNodes() == len(arr):
        seq.SetIndexName(like.GetIndexName())
        seq.SetIndexUnit(like.GetIndexUnit())
        seq.SetIndexType(like.GetIndexType())
        values = [like.GetNthIndexValue(i) for i in range(len(arr))]
    else:
        seq.SetIndexName("frame")
        seq.SetIndexUnit("")
    matrix = _numpy_to_matrix(volume.ijk_to_ras)
    for value, frame in zip(values, arr):
        node = slicer.vtkMRMLLabelMapVolumeNode() if label else slicer.vtkMRMLScalarVolumeNode()
        data = frame.astype(np.int16 if label else np.float32, copy=False)
        slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(data))
        node.SetIJKToRASMatrix(matrix)
        seq.SetDataNodeAtValue(node, value)
    browser = scene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode", scene.GenerateUniqueName(f"{name} browser"))
    browser.SetAndObserveMasterSequenceNodeID(seq.GetID())
    logic = _sequences_logic(scene)
    logic.UpdateProxyNodesFromSequences(browser)
    proxy = browser.GetProxyNode(seq)
    if proxy is not None:
        proxy.SetName(scene.GenerateUniqueName(name))
        proxy.CreateDefaultDisplayNodes()
    return seq, browser, proxy


def _sequences_logic(scene) -> Any:
    """Slicer's Sequences module logic when it runs, else a logic on ``scene`` (``slicer-core``)."""
    slicer = _slicer()
    modules = getattr(slicer, "modules", None)
    if modules is not None and hasattr(modules, "sequences"):
        return modules.sequences.logic()
    logic = slicer.vtkSlicerSequencesLogic()
    logic.SetMRMLScene(scene)
    return logic


def acquisition_table(table_node) -> AcquisitionTable:
    """The acquisition table (``gx gy gz b TI TE`` per frame) of a table node: the
    columns of those names (any case), else its first six columns in that order.

    Raises:
        InputError: fewer than six columns, no rows, or a value that is not a number.
    """
    table = table_node.GetTable()
    names = [table.GetColumnName(c) or "" for c in range(table.GetNumberOfColumns())]
    lower = [n.strip().lower() for n in names]
    if all(c.lower() in lower for c in ACQUISITION_COLUMNS):
        cols = [lower.index(c.lower()) for c in ACQUISITION_COLUMNS]
    else:
        cols = list(range(len(names)))[:len(ACQUISITION_COLUMNS)]
    if len(cols) < len(ACQUISITION_COLUMNS):
        raise InputError(f"acquisition table '{table_node.GetName()}' needs the columns "
                         f"{' '.join(ACQUISITION_COLUMNS)} (or six numeric columns in that order); "
                         f"it has {names}")
    rows = []
    for r in range(table.GetNumberOfRows()):
        row = []
        for c in cols:
            v = table.GetValue(r, c)
            try:
                row.append(float(v.ToDouble() if v.IsNumeric() else v.ToString()))
            except ValueError:
                raise InputError(f"acquisition table '{table_node.GetName()}': row {r + 1}, column "
                                 f"'{names[c]}' is not a number ({v.ToString()!r})") from None
        rows.append(row)
    if not rows:
        raise InputError(f"acquisition table '{table_node.GetName()}' has no rows")
    return AcquisitionTable(np.asarray(rows, dtype=np.float64))
