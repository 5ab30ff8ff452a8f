"""The module logic against real MRML (slicer-core wheel) and the real
background CLI, with this Python standing in for PythonSlicer."""

from __future__ import annotations

import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="the slicer-core wheel is part of the test extra")

from conftest import make_matrix  # noqa: E402
from SuperResMoELib.slicer import mrml, sequences  # noqa: E402
from SuperResMoELib.slicer.logic import EnhanceCancelled, EnhanceFailed, EnhanceRequest, EnhanceRun, request_from_dict
from SuperResMoELib.core.volume import Volume  # noqa: E402


@pytest.fixture
def scene(tmp_path, monkeypatch):
    s = slicer.vtkMRMLScene()
    slicer.mrmlScene = s
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    yield s
    s.Clear(1)


def hr_node(scene, shape=(16, 20, 18), kind="oblique"):
    k, j, i = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    arr = (100 + 40 * np.sin(i / 3.0) * np.cos(j / 4.0) + 3 * k).astype(np.float32)
    m = make_matrix(kind)
    m[:3, :3] = m[:3, :3] / np.linalg.norm(m[:3, :3], axis=0)  # 1 mm
    return mrml.add_volume_node(scene, Volume(arr, m), "hr")


def run(scene, node, request, reference=None, **kw):
    return EnhanceRun(scene, node, request, reference, python=sys.executable, **kw).run(wait=True, timeout=300)


# ----------------------------------------------------------------- adapter
def test_volume_node_round_trip_keeps_geometry(scene, geom, tmp_path) -> None:
    arr = np.random.default_rng(0).random((5, 6, 7)).astype(np.float32)
    vol = Volume(arr, make_matrix(geom), name="v")
    node = mrml.add_volume_node(scene, vol, "v")
    back = mrml.volume_from_node(node)
    np.testing.assert_array_equal(back.array, arr)
    np.testing.assert_allclose(back.ijk_to_ras, vol.ijk_to_ras, atol=1e-9)
    path = mrml.write_node(node, tmp_path / "v.nii.gz")
    again = mrml.volume_from_node(mrml.read_volume_node(scene, path, "again"))
    # Slicer's reader may store a left-handed grid with one axis reversed: compare in world space
    from SuperResMoELib.core.geometry import resample

    np.testing.assert_allclose(resample(again, vol.grid, "nearest").array, arr, rtol=1e-6)
    np.testing.assert_allclose(np.sort(again.grid.corners(), axis=0), np.sort(vol.grid.corners(), axis=0), atol=1e-3)
    assert scene.GetFirstNodeByName("v").GetID() == node.GetID()
    assert mrml.add_volume_node(scene, vol, "v").GetName() != "v"  # unique names


def test_tables_and_colour_nodes(scene) -> None:
    node = mrml.add_table_node(scene, [{"metric": "psnr", "value": 31.5}, {"metric": "ssim", "value": 0.9}], "m")
    assert mrml.table_rows(node) == [{"metric": "psnr", "value": 31.5}, {"metric": "ssim", "value": 0.9}]
    routing = Volume(np.array([[[-1, 0], [1, 3]]], np.float32), np.eye(4))
    label = mrml.expert_map_node(scene, routing, "experts", 4)
    assert label.IsA("vtkMRMLLabelMapVolumeNode")
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(label), [[[0, 1], [2, 4]]])
    colors = label.GetDisplayNode().GetColorNode()
    assert colors.GetNumberOfColors() == 5 and colors.GetColorName(0) == "background"
    rgba = [0.0] * 4
    colors.GetColor(0, rgba)
    assert rgba[3] == 0.0  # transparent background


def test_volume_from_node_errors(scene) -> None:
    from SuperResMoELib.core.errors import InputError

    with pytest.raises(InputError, match="no input volume"):
        mrml.volume_from_node(None)
    empty = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    with pytest.raises(InputError, match="no image data"):
        mrml.volume_from_node(empty)


# ------------------------------------------------------------------- logic
def test_simulated_enhance_adds_new_nodes_and_leaves_the_input(scene, tmp_path) -> None:
    node = hr_node(scene)
    before = np.array(slicer.util.arrayFromVolume(node))
    n_before = scene.GetNumberOfNodes()
    stages = []
    out = run(scene, node, EnhanceRequest(method="cubic", scale=(1, 1, 2), simulate=True),
              on_progress=lambda s, f, m: stages.append(s))
    assert set(out.nodes) == {"sr", "lr", "sqerr", "abserr", "metrics"}
    assert out.nodes["sr"].GetName() == "hr SR (cubic)" and out.nodes["lr"].GetName() == "hr LR (simulated) (cubic)"
    assert scene.GetNumberOfNodes() > n_before
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), before)  # input untouched
    sr = mrml.volume_from_node(out.nodes["sr"])
    assert sr.grid.same_as(mrml.volume_from_node(node).grid)  # the simulated HR's grid
    err = slicer.util.arrayFromVolume(out.nodes["sqerr"])
    np.testing.assert_allclose(err, (sr.array - before) ** 2, rtol=1e-3, atol=1e-3)
    assert out.nodes["sqerr"].GetDisplayNode().GetColorNode().GetName() == mrml.ERROR_COLOR_NAME
    rows = {r["metric"]: r["value"] for r in mrml.table_rows(out.nodes["metrics"])}
    assert rows["psnr"] == pytest.approx(out.metrics["psnr"]) and 10 < rows["psnr"] < 80
    assert "enhance" in stages and stages[-1] == "done"
    assert not list(Path(str(tmp_path / "tmp")).glob("superresmoe-*"))  # temp folder removed


def save_scene_as_the_dialog_does(scene, folder: Path) -> Path:
    """What Slicer's save dialog (qSlicerSaveDataDialog) does with its defaults: the
    scene root set to the folder; every storable node *modified since read* is ticked
    and written through its storage node (a default one named after the node when it
    has none) to the file's absolute path (a relative name resolved against the root);
    then the scene file."""
    folder.mkdir(parents=True, exist_ok=True)
    scene.SetRootDirectory(str(folder))
    for n in range(scene.GetNumberOfNodesByClass("vtkMRMLStorableNode")):
        node = scene.GetNthNodeByClass(n, "vtkMRMLStorableNode")
        if not node.GetModifiedSinceRead():
            continue
        if node.GetStorageNode() is None:
            assert node.AddDefaultStorageNode()
        storage = node.GetStorageNode()
        if storage.GetFileName() is None:
            storage.SetFileName(mrml.safe_file_name(node.GetName(), "." + storage.GetDefaultWriteFileExtension()))
        path = Path(storage.GetFileName())  # the dialog writes to the absolute path (root / relative name)
        storage.SetFileName(str(path if path.is_absolute() else folder / path))
        assert storage.WriteData(node), node.GetName()
    url = folder / "scene.mrml"
    scene.SetURL(str(url))
    assert scene.Commit(str(url))
    return url


def test_results_survive_a_scene_save_and_reload(scene, tmp_path) -> None:
    """Results are read as temporary files: ticked for saving, each in a file named
    after its node beside the scene, none pointing at the deleted run folder."""
    node = hr_node(scene)
    out = run(scene, node, EnhanceRequest(method="cubic", scale=(1, 1, 2), simulate=True))
    volumes = {tag: n for tag, n in out.nodes.items() if n.IsA("vtkMRMLVolumeNode")}
    names = set()
    for tag, n in volumes.items():
        assert n.GetModifiedSinceRead(), tag  # the save dialog ticks it
        name = n.GetStorageNode().GetFileName()
        assert not Path(name).is_absolute() and name == mrml.safe_file_name(n.GetName()), name
        names.add(name)
    assert len(names) == len(volumes)  # one file per result
    arrays = {n.GetName(): np.array(slicer.util.arrayFromVolume(n)) for n in volumes.values()}
    metrics = mrml.table_rows(out.nodes["metrics"])
    url = save_scene_as_the_dialog_does(scene, tmp_path / "saved")
    assert {p.name for p in (tmp_path / "saved").glob("*.nii.gz")} >= names

    again = slicer.vtkMRMLScene()
    again.SetURL(str(url))
    assert again.Connect()
    for name, arr in arrays.items():
        back = again.GetFirstNodeByName(name)
        assert back is not None and back.GetImageData() is not None, name
        np.testing.assert_allclose(slicer.util.arrayFromVolume(back), arr, rtol=1e-6, atol=1e-6)
    table = again.GetFirstNodeByName(out.nodes["metrics"].GetName())
    assert table is not None and [r["metric"] for r in mrml.table_rows(table)] == [r["metric"] for r in metrics]
    again.Clear(1)


def test_safe_file_names_follow_slicer() -> None:
    assert mrml.safe_file_name("hr SR (moediff)") == "hr SR (moediff).nii.gz"
    assert mrml.safe_file_name(" a/b:c*? ") == "abc.nii.gz"
    assert mrml.safe_file_name("/:*", ".nrrd") == "volume.nrrd"


def test_reference_and_expert_map_with_the_bundled_ssmoe(scene) -> None:
    lr = hr_node(scene, shape=(8, 32, 32), kind="axis")
    lr.SetSpacing(2.5, 2.5, 5.0)
    out = run(scene, lr, EnhanceRequest(method="ssmoe", task="aniso", device="cpu",
                                        acquisition=(1.0, 0.0, 0.0, 1000.0, 1000.0, 80.0)))
    assert set(out.nodes) == {"sr", "routing"}
    routing = out.nodes["routing"]
    assert routing.IsA("vtkMRMLLabelMapVolumeNode") and routing.GetName() == "hr expert map (ssmoe)"
    labels = np.unique(slicer.util.arrayFromVolume(routing))
    assert set(labels) <= {0, 1, 2, 3, 4} and labels.max() >= 1
    assert out.info["acquisition"]["source"] == "options"
    assert out.nodes["sr"].GetSpacing() == pytest.approx((2.5, 2.5, 2.5))


def test_errors_come_back_with_the_cli_message(scene) -> None:
    node = hr_node(scene)
    with pytest.raises(EnhanceFailed, match="expert 9 is out of range"):
        run(scene, node, EnhanceRequest(method="ssmoe", task="aniso", expert=9, device="cpu"))
    with pytest.raises(EnhanceFailed, match="not both"):
        EnhanceRun(scene, node, EnhanceRequest(simulate=True), reference_node=node)


def test_cancel_ends_the_run_and_cleans_up(scene, tmp_path) -> None:
    node = hr_node(scene, shape=(48, 96, 96))
    seen = threading.Event()

    def on_progress(stage, fraction, message):
        if stage == "enhance":
            seen.set()

    job = EnhanceRun(scene, node, EnhanceRequest(method="cubic", scale=(4, 4, 4), simulate=False),
                     python=sys.executable, on_progress=on_progress)
    job.start()
    import time

    deadline = time.monotonic() + 120
    while job.poll() and not seen.is_set() and time.monotonic() < deadline:
        time.sleep(0.05)
    job.cancel()
    with pytest.raises(EnhanceCancelled):
        while job.poll():
            time.sleep(0.05)
    assert not job.process.running
    assert not list(Path(str(tmp_path / "tmp")).glob("superresmoe-*"))


def mudi_sequence(scene, frames: int = 4, shape=(8, 16, 16), spacing=(2.5, 2.5, 5.0), index=("b", "s/mm2")):
    """A 4D qMRI scan as Slicer holds it: a sequence of scalar volumes (index values
    of its own) shown through a browser's proxy, and its acquisition table node."""
    sequences.register_classes(scene)
    k, j, i = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    frames_arr = np.stack([(200 + 60 * np.sin(i / 2.5 + f) * np.cos(j / 3.0) + 5 * k) * (1 - 0.1 * f)
                           for f in range(frames)]).astype(np.float32)
    m = np.diag([*spacing, 1.0])
    vol = Volume(frames_arr, m)
    seq = scene.AddNewNodeByClass("vtkMRMLSequenceNode", "qMRI")
    seq.SetIndexName(index[0])
    seq.SetIndexUnit(index[1])
    for f in range(frames):
        node = slicer.vtkMRMLScalarVolumeNode()
        slicer.util.updateVolumeFromArray(node, frames_arr[f])
        node.SetIJKToRASMatrix(mrml._numpy_to_matrix(m))
        seq.SetDataNodeAtValue(node, str(500 * (f + 1)))
    rows = [{"gx": 1.0, "gy": 0.0, "gz": 0.0, "b": 500.0 * (f + 1), "TI": 1000.0, "TE": 80.0 + 20 * f}
            for f in range(frames)]
    table = mrml.add_table_node(scene, rows, "qMRI acquisition")
    return seq, table, vol


def test_volume_sequence_in_and_out(scene) -> None:
    """A 4D scan as a sequence with its table node: SS-MoE enhances every frame and the
    results come back as new sequences with the input's index (name, unit, values)."""
    seq, table, vol = mudi_sequence(scene)
    out = run(scene, seq, EnhanceRequest(method="ssmoe", task="aniso", device="cpu"), acquisition=table)
    assert set(out.sequences) == {"sr", "routing"}
    sr = out.sequences["sr"]
    assert sr.GetNumberOfDataNodes() == 4 and (sr.GetIndexName(), sr.GetIndexUnit()) == ("b", "s/mm2")
    assert [sr.GetNthIndexValue(n) for n in range(4)] == [seq.GetNthIndexValue(n) for n in range(4)]
    frame = sr.GetNthDataNode(2)
    assert frame.GetSpacing() == pytest.approx((2.5, 2.5, 2.5))  # the aniso task halves k
    assert slicer.util.arrayFromVolume(frame).shape == (16, 16, 16)
    assert out.nodes["sr"].IsA("vtkMRMLScalarVolumeNode")  # the browser's proxy, for the views
    routing = out.sequences["routing"]
    assert routing.GetNthDataNode(0).IsA("vtkMRMLLabelMapVolumeNode")
    assert out.info["acquisition"]["source"] == "table"
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(seq.GetNthDataNode(1)), vol.array[1])  # input kept


def test_proxy_volume_stands_for_its_sequence_and_bad_tables_are_refused(scene) -> None:
    seq, table, vol = mudi_sequence(scene, frames=3, shape=(8, 12, 12))
    browser = scene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode", "browser")
    browser.SetAndObserveMasterSequenceNodeID(seq.GetID())
    sequences._sequences_logic(scene).UpdateProxyNodesFromSequences(browser)
    proxy = browser.GetProxyNode(seq)
    assert sequences.source_sequence(proxy) is seq
    out = run(scene, proxy, EnhanceRequest(method="cubic", scale=(1, 1, 2), simulate=True))
    assert out.sequences["sr"].GetNumberOfDataNodes() == 3 and "sqerr" in out.sequences
    np.testing.assert_allclose(slicer.util.arrayFromVolume(out.sequences["sr"].GetNthDataNode(0)).shape,
                               vol.array.shape[1:])
    short = mrml.add_table_node(scene, [{"gx": 1.0, "gy": 0.0, "b": 5.0}], "short")
    from SuperResMoELib.core.errors import InputError

    with pytest.raises(InputError, match="needs the columns"):
        EnhanceRun(scene, seq, EnhanceRequest(method="ssmoe", task="aniso"), acquisition=short).start()
    assert not list(Path(tempfile.gettempdir()).glob("superresmoe-*"))  # nothing left behind


def test_sequence_results_survive_a_scene_save(scene, tmp_path) -> None:
    seq, table, vol = mudi_sequence(scene, frames=3, shape=(8, 12, 12))
    out = run(scene, seq, EnhanceRequest(method="cubic", scale=(1, 1, 2)))
    result = out.sequences["sr"]
    frames = [np.array(slicer.util.arrayFromVolume(result.GetNthDataNode(n))) for n in range(3)]
    url = save_scene_as_the_dialog_does(scene, tmp_path / "saved")
    again = slicer.vtkMRMLScene()
    sequences.register_classes(again)
    again.SetURL(str(url))
    assert again.Connect()
    back = again.GetFirstNodeByName(result.GetName())
    assert back is not None and back.GetNumberOfDataNodes() == 3
    for n in range(3):
        np.testing.assert_allclose(slicer.util.arrayFromVolume(back.GetNthDataNode(n)), frames[n], rtol=1e-5)
    again.Clear(1)


def test_output_node_is_reused_and_the_log_reaches_the_caller(scene) -> None:
    node = hr_node(scene)
    target = mrml.add_volume_node(scene, Volume(np.zeros((2, 2, 2), np.float32), np.eye(4)), "my output")
    n_before = scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")
    lines = []
    out = run(scene, node, EnhanceRequest(method="cubic", scale=(1, 1, 2)), on_log=lines.append, output_node=target)
    assert out.nodes["sr"] is target and target.GetName() == "my output"
    assert slicer.util.arrayFromVolume(target).shape == (32, 20, 18)  # k doubled
    assert target.GetModifiedSinceRead() and target.GetStorageNode().GetFileName() == "my output.nii.gz"
    assert scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == n_before  # nothing new
    with pytest.raises(EnhanceFailed, match="must not be the input"):
        EnhanceRun(scene, node, EnhanceRequest(method="cubic"), output_node=node)
    seq, _, _ = mudi_sequence(scene, frames=2, shape=(8, 12, 12))
    with pytest.raises(EnhanceFailed, match="create new"):
        EnhanceRun(scene, seq, EnhanceRequest(method="cubic"), output_node=target)


def test_log_lines_of_the_background_process(scene, tmp_path) -> None:
    """Warnings the CLI writes (here: options the method ignores) reach on_log."""
    node = hr_node(scene)
    lines = []
    run(scene, node, EnhanceRequest(method="cubic", scale=(1, 1, 2), expert=2), on_log=lines.append)
    assert any("expert" in line for line in lines), lines


def test_results_box_explains_the_run(scene) -> None:
    from SuperResMoELib.slicer.logic import EnhanceOutcome, explain, results_html

    seq, _, _ = mudi_sequence(scene, frames=3, shape=(8, 12, 12))
    out = EnhanceOutcome(info={"method": "moediff", "device": "cpu", "input_size_ijk": [12, 12, 8],
                               "input_spacing_ijk": [2.5, 2.5, 5.0], "output_size_ijk": [30, 30, 40],
                               "output_spacing_ijk": [1.0, 1.0, 1.0], "output_grid": "output on the reference grid",
                               "steps": 2, "sampler": "full", "slice_axis": "k", "slice_axis_reason": "least change",
                               "gates": {"mean": [0.7, 0.2, 0.1], "std": [0.1, 0.05, 0.02], "slices_led": [30, 8, 2]},
                               "warnings": ["spacing outside the training domain"],
                               "tiling": "sliding windows: 40 windows", "threads": 2},
                         sequences={"sr": seq})
    lines = explain(out)
    assert "engine: sliding windows: 40 windows (threads: 2)" in lines
    assert lines[0] == "input 12 x 12 x 8 voxels of 2.5 x 2.5 x 5 mm -> output 30 x 30 x 40 voxels of 1 x 1 x 1 mm"
    assert "output grid: output on the reference grid" in lines and any("3 frames enhanced" in x for x in lines)
    assert any(x.startswith("diffusion: 2 sampler step(s), full mode, slices across k") for x in lines)
    assert any("E1 0.70 ± 0.10" in x and "slices led: E1 30" in x for x in lines)
    html = results_html(out)
    assert "Warning: spacing outside the training domain" in html and "No reference" in html


def test_a_table_left_from_a_4d_run_is_ignored_for_a_3d_input(scene) -> None:
    _, table, _ = mudi_sequence(scene, frames=3, shape=(8, 12, 12))
    node = hr_node(scene)
    out = run(scene, node, EnhanceRequest(method="cubic", scale=(1, 1, 2)), acquisition=table)
    assert "sr" in out.nodes and not out.sequences


def test_discarded_run_loads_nothing_even_when_finished(scene) -> None:
    node = hr_node(scene)
    job = EnhanceRun(scene, node, EnhanceRequest(method="cubic", scale=(1, 1, 2)), python=sys.executable)
    job.start()
    job.process.proc.wait(timeout=120)  # finished, not polled yet (the scene closes now)
    n = scene.GetNumberOfNodes()
    job.cancel(discard=True)
    with pytest.raises(EnhanceCancelled):
        while job.poll():
            pass
    assert scene.GetNumberOfNodes() == n


def test_output_node_gets_a_fresh_storage_node(scene, tmp_path) -> None:
    node = hr_node(scene)
    path = mrml.write_node(node, tmp_path / "t.nrrd")
    target = mrml.read_volume_node(scene, path, "target")
    old = target.GetStorageNode()
    old.SetCenterImage(1)  # a reader setting that must not apply to the result
    mrml.read_into_node(target, mrml.write_node(node, tmp_path / "r.nii.gz"))
    assert target.GetStorageNode() is not old and old.GetScene() is None
    np.testing.assert_allclose(mrml.ijk_to_ras(target), mrml.ijk_to_ras(node), atol=1e-4)


def test_display_volume_of_a_sequence_is_its_proxy(scene) -> None:
    seq, _, _ = mudi_sequence(scene, frames=2, shape=(8, 12, 12))
    assert sequences.display_volume(seq) is None  # no browser yet
    browser = scene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode")
    browser.SetAndObserveMasterSequenceNodeID(seq.GetID())
    sequences._sequences_logic(scene).UpdateProxyNodesFromSequences(browser)
    assert sequences.display_volume(seq) is browser.GetProxyNode(seq)
    vol = hr_node(scene)
    assert sequences.display_volume(vol) is vol and sequences.display_volume(None) is None


def test_request_round_trip_and_arguments(tmp_path) -> None:
    req = request_from_dict({"method": "remix", "spacing": (1.0,), "expert": 3, "patch_size": 64, "overlap": 0.25,
                             "mixed_precision": False})
    args = req.cli_arguments(tmp_path / "in.nii.gz", tmp_path / "out.nii.gz", None)
    assert args[:2] == ["enhance", "-i"] and "--spacing" in args and args[args.index("--spacing") + 1] == "1"
    assert args[args.index("--expert") + 1] == "3" and "--no-amp" in args and "--reference" not in args
    with pytest.raises(ValueError, match="unknown enhance option"):
        request_from_dict({"methd": "cubic"})
