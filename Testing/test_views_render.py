"""The LR | SR | HR + error + expert layout: layout description, view filling,
and an offscreen render (trame-slicer, EGL) checked pixel by pixel.  The
volumes come from a real background Enhance run on sample data."""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="the slicer-core wheel is part of the test extra")
pytest.importorskip("trame_slicer", reason="trame-slicer is part of the test extra")

from SuperResMoELib.slicer import mrml
from SuperResMoELib import sample_data  # noqa: E402
from SuperResMoELib.slicer.logic import EnhanceRequest, EnhanceRun  # noqa: E402
from SuperResMoELib.core.volume import Volume  # noqa: E402
from SuperResMoELib.slicer.views import (
    LAYOUT_ID,
    VIEW_TAGS,
    add_color_legend,
    color_legend,
    comparison_contents,
    fill_views,
    layout_xml,
    register_layout,
)


def test_layout_description() -> None:
    root = ET.fromstring(layout_xml())
    tags = [v.get("singletontag") for v in root.iter("view")]
    assert tags == list(VIEW_TAGS)
    rows = root.findall("./item/layout")
    assert [len(r.findall("./item")) for r in rows] == [3, 2]
    node = slicer.vtkMRMLLayoutNode()
    assert register_layout(node) == LAYOUT_ID and node.IsLayoutDescription(LAYOUT_ID)
    assert register_layout(node) == LAYOUT_ID  # idempotent


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    from trame_slicer.core import SlicerApp

    from devtools.offscreen import OffscreenViews

    app = SlicerApp()
    scene = app.scene
    subj = sample_data.mudi_subject(sample_data.MUDI_HELD_OUT)
    row = int(np.nonzero(subj.table.column("b") == 0)[0][0])
    frame = subj.hr([row])
    hr = mrml.add_volume_node(scene, Volume(np.asarray(frame.array[0]), frame.ijk_to_ras), "qMRI")
    out = EnhanceRun(scene, hr, EnhanceRequest(method="ssmoe", task="aniso", simulate=True, device="cpu"),
                     python=sys.executable).run(wait=True, timeout=600)
    views = OffscreenViews(app, size=(220, 220))
    contents = comparison_contents(out.nodes["sr"], out.nodes["lr"], hr, out.nodes["abserr"], out.nodes["routing"])
    assert fill_views(scene, contents) == list(VIEW_TAGS)
    add_color_legend(out.nodes["abserr"], "abs. error")
    views.fit()
    images = {tag: views.render(tag) for tag in VIEW_TAGS}
    path = views.save(tmp_path_factory.mktemp("render") / "views.png")
    return {"images": images, "path": path, "out": out, "scene": scene}


def colourfulness(img: np.ndarray) -> np.ndarray:
    i = img.astype(np.int16)
    return i.max(axis=2) - i.min(axis=2)


def test_each_view_shows_its_volume(rendered) -> None:
    imgs = rendered["images"]
    for tag in VIEW_TAGS[:3]:
        g = imgs[tag].astype(float)
        assert g.std() > 20, tag  # anatomy, not an empty view
        assert np.median(colourfulness(imgs[tag])) < 5, tag  # grey-scale image
    lr, sr, hr = (imgs[t].astype(float) for t in VIEW_TAGS[:3])
    # three different volumes, on the same linked axial position (similar brain outline)
    assert np.abs(lr - sr).mean() > 1 and np.abs(sr - hr).mean() > 1
    masks = [(im.mean(axis=2) > 10) for im in (lr, sr, hr)]
    assert (masks[0] & masks[2]).sum() / (masks[0] | masks[2]).sum() > 0.8


def test_error_and_expert_views_are_coloured(rendered) -> None:
    err = rendered["images"][VIEW_TAGS[3]]
    hot = (err[:, :, 0].astype(int) - err[:, :, 2].astype(int)) > 40  # red/yellow error colours
    assert hot.mean() > 0.05
    expert = colourfulness(rendered["images"][VIEW_TAGS[4]])
    assert (expert > 30).mean() > 0.05


def test_composed_png(rendered) -> None:
    from PIL import Image

    img = np.asarray(Image.open(rendered["path"]))
    assert img.shape[0] == 2 * (220 + 18) and img.shape[1] == 3 * 220
    assert img.std() > 20


def test_showing_the_layout_again_reuses_the_legend(rendered) -> None:
    scene, node = rendered["scene"], rendered["out"].nodes["abserr"]
    first = color_legend(node)
    assert first is not None
    for _ in range(3):
        assert add_color_legend(node, "abs. error").GetID() == first.GetID()
    assert scene.GetNumberOfNodesByClass("vtkMRMLColorLegendDisplayNode") == 1
