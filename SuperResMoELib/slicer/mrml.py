"""MRML adapter: Slicer volume nodes <-> :class:`~SuperResMoELib.core.volume.Volume`,
files, colour tables and table nodes.

Everything here works with the MRML classes of a running Slicer or of the
``slicer-core`` wheel (plain Python, no application): nodes are read and
written through storage nodes, never through ``slicer.util.loadVolume`` /
``saveNode`` (those need the application).  Geometry: a volume node's array
is ``(K, J, I)`` and its IJK->RAS matrix is the node's, exactly the
:class:`Volume` convention, so no axis or sign conversion happens here.

Input nodes are never modified: every function that produces data adds a
**new** node (with a unique name).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from SuperResMoELib.core.errors import InputError
from SuperResMoELib.core.volume import Volume

#: Name of the colour table of error maps (created on demand).
ERROR_COLOR_NAME = "SuperResMoE error"
#: Distinct colours of experts 1..N in expert maps (label 0 = background).
EXPERT_COLORS: tuple[tuple[float, float, float], ...] = (
    (0.12, 0.47, 0.71), (1.00, 0.50, 0.05), (0.17, 0.63, 0.17), (0.84, 0.15, 0.16),
    (0.58, 0.40, 0.74), (0.55, 0.34, 0.29), (0.89, 0.47, 0.76), (0.50, 0.50, 0.50),
)


def _slicer():
    try:
        import slicer
    except ImportError as exc:  # pragma: no cover - only without Slicer / slicer-core
        raise ImportError("the MRML adapter needs 3D Slicer or the slicer-core wheel (pip install slicer-core)") from exc
    return slicer


def _matrix_to_numpy(m) -> np.ndarray:
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)], dtype=np.float64)


def _numpy_to_matrix(a: np.ndarray):
    import vtk

    m = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            m.SetElement(r, c, float(a[r, c]))
    return m


# ------------------------------------------------------------------ volumes
def ijk_to_ras(node) -> np.ndarray:
    """The node's 4x4 IJK->RAS matrix."""
    import vtk

    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return _matrix_to_numpy(m)


def volume_from_node(node) -> Volume:
    """A :class:`Volume` holding a **copy** of a scalar volume node's voxels.

    Raises:
        InputError: no node, no image data, or a multi-component (vector) image.
    """
    slicer = _slicer()
    if node is None:
        raise InputError("no input volume selected")
    image = node.GetImageData() if hasattr(node, "GetImageData") else None
    if image is None:
        raise InputError(f"volume '{node.GetName()}' has no image data")
    if image.GetNumberOfScalarComponents() != 1:
        raise InputError(f"volume '{node.GetName()}' has {image.GetNumberOfScalarComponents()} components per voxel; "
                         "pick a scalar volume")
    arr = np.array(slicer.util.arrayFromVolume(node), copy=True)
    return Volume(arr, ijk_to_ras(node), name=node.GetName())


def add_volume_node(scene, volume: Volume, name: str, label: bool = False):
    """A new scalar (or label map) volume node holding ``volume`` (3D).

    The name is made unique in the scene; a display node is created.
    """
    slicer = _slicer()
    arr = np.asarray(volume.array)
    if arr.ndim != 3:
        raise InputError(f"a volume node holds a 3D image; got shape {arr.shape}")
    cls = "vtkMRMLLabelMapVolumeNode" if label else "vtkMRMLScalarVolumeNode"
    node = scene.AddNewNodeByClass(cls, scene.GenerateUniqueName(name))
    data = arr.astype(np.int16 if label else np.float32, copy=False)
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(data))
    node.SetIJKToRASMatrix(_numpy_to_matrix(volume.ijk_to_ras))
    node.CreateDefaultDisplayNodes()
    return node


def write_node(node, path: str | os.PathLike, compress: bool = True) -> Path:
    """Write a volume node to ``path`` (.nii.gz, .nrrd, ...) with a storage
    node (removed again), compressed unless ``compress`` is false (a file read once
    soon: writing it uncompressed is several times faster); the node itself is not changed.

    Raises:
        OSError: the file could not be written.
    """
    slicer = _slicer()
    scene = node.GetScene()
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    scene.AddNode(storage)
    try:
        storage.SetFileName(str(path))
        storage.SetUseCompression(1 if compress else 0)
        if not storage.WriteData(node):
            raise OSError(f"could not write volume '{node.GetName()}' to {path}")
    finally:
        scene.RemoveNode(storage)
    return Path(path)


#: Characters Slicer keeps in a file name derived from a node name
#: (``qSlicerCoreIOManager::forceFileNameValidCharacters``).
_FILE_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 -_.()$!~#'%^{}")
#: Extension of the file a temporarily read result is saved to with the scene.
RESULT_EXTENSION = ".nii.gz"


def safe_file_name(node_name: str, extension: str = RESULT_EXTENSION) -> str:
    """``node_name`` as Slicer's save dialog turns it into a file name (characters
    outside its set dropped, trimmed; ``"volume"`` if nothing is left) plus ``extension``."""
    stem = "".join(c for c in node_name if c in _FILE_NAME_CHARS).strip() or "volume"
    return stem + extension


def read_volume_node(scene, path: str | os.PathLike, name: str | None = None, label: bool = False,
                     temporary: bool = False):
    """A new volume node read from ``path`` through a storage node (kept, so
    the node can be saved with the scene).

    ``temporary``: ``path`` is a file about to be deleted (a result in a run's
    temporary folder).  The node is then read as Slicer reads temporary files
    (``ReadData(node, True)``: it stays *modified since read*, so the save
    dialog ticks it), and its storage node points at a file **named after the
    node, relative to the scene's root directory**: saving the scene writes
    every result beside the scene under its own name, never into the deleted
    folder and never two results to one file.

    Raises:
        OSError: unreadable file.
    """
    slicer = _slicer()
    path = Path(path)
    cls = "vtkMRMLLabelMapVolumeNode" if label else "vtkMRMLScalarVolumeNode"
    node = scene.AddNewNodeByClass(cls, scene.GenerateUniqueName(name or path.name.split(".")[0]))
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    scene.AddNode(storage)
    storage.SetFileName(str(path))
    if not storage.ReadData(node, bool(temporary)):
        scene.RemoveNode(node)
        scene.RemoveNode(storage)
        raise OSError(f"could not read a volume from {path}")
    node.SetAndObserveStorageNodeID(storage.GetID())
    if temporary:
        storage.SetFileName(safe_file_name(node.GetName()))
        storage.SetUseCompression(1)
    node.CreateDefaultDisplayNodes()
    return node


def read_into_node(node, path: str | os.PathLike):
    """Read a result file into an existing scalar volume node (the panel's chosen
    output), replacing its voxels and geometry; read as a temporary file like
    :func:`read_volume_node`, its storage named after the node.

    Raises:
        InputError: not a scalar volume node.
        OSError: unreadable file.
    """
    slicer = _slicer()
    if node is None or not node.IsA("vtkMRMLScalarVolumeNode") or node.IsA("vtkMRMLLabelMapVolumeNode"):
        raise InputError("the output node must be a scalar volume")
    scene = node.GetScene()
    old = node.GetStorageNode()
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()  # fresh: none of the old reader settings (centering...)
    scene.AddNode(storage)
    storage.SetFileName(str(path))
    if not storage.ReadData(node, True):
        scene.RemoveNode(storage)
        raise OSError(f"could not read a volume from {path}")
    node.SetAndObserveStorageNodeID(storage.GetID())
    if old is not None and old is not storage:
        scene.RemoveNode(old)
    storage.SetFileName(safe_file_name(node.GetName()))
    storage.SetUseCompression(1)
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    return node


# ------------------------------------------------------------------- colours
def error_color_node(scene):
    """The colour table of error maps: a 256-step black -> red -> yellow ->
    white ramp (created once per scene)."""
    existing = scene.GetFirstNodeByName(ERROR_COLOR_NAME)
    if existing is not None:
        return existing
    slicer = _slicer()
    node = slicer.vtkMRMLColorTableNode()
    node.SetName(ERROR_COLOR_NAME)
    node.SetTypeToUser()
    node.SetNumberOfColors(256)
    for n in range(256):
        t = n / 255.0
        r, g, b = min(1.0, 3 * t), min(1.0, max(0.0, 3 * t - 1)), min(1.0, max(0.0, 3 * t - 2))
        node.SetColor(n, f"{t:.3f}", r, g, b, 1.0)
    node.SetHideFromEditors(False)
    scene.AddNode(node)
    return node


def expert_color_node(scene, n_experts: int, names: Sequence[str] | None = None):
    """A colour table for expert maps: label 0 = background (transparent),
    label ``e + 1`` = expert ``e`` (or ``names[e]``)."""
    slicer = _slicer()
    name = f"SuperResMoE experts ({n_experts})"
    existing = scene.GetFirstNodeByName(name)
    if existing is not None:
        return existing
    node = slicer.vtkMRMLColorTableNode()
    node.SetName(name)
    node.SetTypeToUser()
    node.SetNumberOfColors(n_experts + 1)
    node.SetColor(0, "background", 0.0, 0.0, 0.0, 0.0)
    for e in range(n_experts):
        r, g, b = EXPERT_COLORS[e % len(EXPERT_COLORS)]
        node.SetColor(e + 1, names[e] if names else f"expert {e}", r, g, b, 1.0)
    scene.AddNode(node)
    return node


def show_as_error_map(node, max_value: float | None = None) -> None:
    """Display an error volume with :func:`error_color_node`, window 0..max
    (default: the 99th percentile of its non-zero voxels)."""
    slicer = _slicer()
    scene = node.GetScene()
    display = node.GetDisplayNode()
    display.SetAndObserveColorNodeID(error_color_node(scene).GetID())
    arr = slicer.util.arrayFromVolume(node)
    top = max_value
    if top is None:
        nz = arr[arr > 0]
        top = float(np.percentile(nz, 99)) if nz.size else 1.0
    display.SetAutoWindowLevel(False)
    display.SetWindowLevelMinMax(0.0, max(top, 1e-12))


def routing_labels(arr: np.ndarray) -> np.ndarray:
    """Label values of a routing map (expert per voxel, -1 or NaN = background):
    expert + 1, background 0, int16 (3D or 4D)."""
    return np.where(np.isfinite(arr) & (arr >= 0), np.round(arr) + 1, 0).astype(np.int16)


def expert_map_node(scene, routing: Volume, name: str, n_experts: int | None = None):
    """A label map node from a routing map (expert per voxel, -1 =
    background): label = expert + 1, with an expert colour table."""
    arr = np.asarray(routing.array)
    k = int(n_experts if n_experts is not None else max(1, int(np.nanmax(arr)) + 1 if arr.size else 1))
    labels = routing_labels(arr)
    node = add_volume_node(scene, routing.with_array(labels), name, label=True)
    node.GetDisplayNode().SetAndObserveColorNodeID(expert_color_node(scene, k).GetID())
    return node


# -------------------------------------------------------------------- tables
def add_table_node(scene, rows: Sequence[dict[str, Any]], name: str):
    """A new table node with one column per key (numbers as double columns,
    anything else as strings) and one row per dict."""
    import vtk

    node = scene.AddNewNodeByClass("vtkMRMLTableNode", scene.GenerateUniqueName(name))
    table = node.GetTable()
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    numeric = {k: all(isinstance(r.get(k), (int, float)) and not isinstance(r.get(k), bool) for r in rows)
               for k in keys}
    for k in keys:
        col = vtk.vtkDoubleArray() if numeric[k] else vtk.vtkStringArray()
        col.SetName(k)
        table.AddColumn(col)
    table.SetNumberOfRows(len(rows))
    for i, r in enumerate(rows):
        for j, k in enumerate(keys):
            v = r.get(k, "")
            table.SetValue(i, j, vtk.vtkVariant(float(v) if numeric[k] else str(v)))
    table.Modified()
    return node


def table_rows(node) -> list[dict[str, Any]]:
    """The rows of a table node as dicts (doubles as floats, others as strings)."""
    table = node.GetTable()
    names = [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())]
    out = []
    for i in range(table.GetNumberOfRows()):
        row = {}
        for c, n in enumerate(names):
            v = table.GetValue(i, c)
            row[n] = v.ToDouble() if v.IsNumeric() else v.ToString()
        out.append(row)
    return out
