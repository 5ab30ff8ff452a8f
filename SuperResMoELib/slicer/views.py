"""The comparison layout: LR | SR | HR linked axial views on top, the error map
and the expert map below (each over the SR image, with a colour legend).

The layout is a Slicer layout XML registered under :data:`LAYOUT_ID`; its slice
views are tagged :data:`VIEW_TAGS`.  :func:`fill_views` puts volumes into the
slice composite nodes of those views - the MRML nodes a desktop Slicer layout
and an offscreen ``trame-slicer`` view both create for a tag - so the same
code fills the GUI and the rendered screenshots.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: Layout id (any unused integer above Slicer's built-in ones).
LAYOUT_ID: int = 51207
#: Slice view tags, in reading order.
VIEW_TAGS: tuple[str, ...] = ("SuperResMoE_LR", "SuperResMoE_SR", "SuperResMoE_HR", "SuperResMoE_Error",
                              "SuperResMoE_Expert")
#: What each view shows (the label drawn in its corner).
VIEW_TITLES: dict[str, str] = {"SuperResMoE_LR": "LR", "SuperResMoE_SR": "SR", "SuperResMoE_HR": "HR",
                               "SuperResMoE_Error": "Error", "SuperResMoE_Expert": "Experts"}
#: View colours (header bars), as Slicer's red/yellow/green style.
VIEW_COLORS: dict[str, str] = {"SuperResMoE_LR": "#E0A526", "SuperResMoE_SR": "#6EB04B", "SuperResMoE_HR": "#4F8BC9",
                               "SuperResMoE_Error": "#C84B4B", "SuperResMoE_Expert": "#8E6BBF"}
#: Opacity of the error map over the SR image, and of the expert labels.
ERROR_OPACITY: float = 0.85
EXPERT_OPACITY: float = 0.5


def layout_xml() -> str:
    """The layout description: three views in a row over two views."""
    def view(tag: str) -> str:
        return (f'<item><view class="vtkMRMLSliceNode" singletontag="{tag}">'
                f'<property name="orientation" action="default">Axial</property>'
                f'<property name="viewlabel" action="default">{VIEW_TITLES[tag]}</property>'
                f'<property name="viewcolor" action="default">{VIEW_COLORS[tag]}</property>'
                f'<property name="viewgroup" action="default">1</property></view></item>')

    top = "".join(view(t) for t in VIEW_TAGS[:3])
    bottom = "".join(view(t) for t in VIEW_TAGS[3:])
    return (f'<layout type="vertical"><item><layout type="horizontal">{top}</layout></item>'
            f'<item><layout type="horizontal">{bottom}</layout></item></layout>')


def register_layout(layout_node) -> int:
    """Add (or refresh) the layout description on a ``vtkMRMLLayoutNode``; returns :data:`LAYOUT_ID`."""
    if layout_node.IsLayoutDescription(LAYOUT_ID):
        layout_node.SetLayoutDescription(LAYOUT_ID, layout_xml())
    else:
        layout_node.AddLayoutDescription(LAYOUT_ID, layout_xml())
    return LAYOUT_ID


@dataclass
class ViewContent:
    """Volumes of one slice view (MRML node ids; ``None`` = empty layer)."""

    background: str | None = None
    foreground: str | None = None
    foreground_opacity: float = 0.0
    label: str | None = None
    label_opacity: float = 1.0


def comparison_contents(sr, lr=None, hr=None, error=None, expert=None) -> dict[str, ViewContent]:
    """What each view shows: LR, SR, HR alone; the error map over the SR
    image; the expert map (a label map) over the SR image."""
    def nid(node) -> str | None:
        return node.GetID() if node is not None else None

    return {
        VIEW_TAGS[0]: ViewContent(nid(lr)),
        VIEW_TAGS[1]: ViewContent(nid(sr)),
        VIEW_TAGS[2]: ViewContent(nid(hr)),
        VIEW_TAGS[3]: ViewContent(nid(sr), nid(error), ERROR_OPACITY if error is not None else 0.0),
        VIEW_TAGS[4]: ViewContent(nid(sr), label=nid(expert), label_opacity=EXPERT_OPACITY),
    }


def _composite_nodes(scene) -> dict[str, Any]:
    out = {}
    for n in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
        node = scene.GetNthNodeByClass(n, "vtkMRMLSliceCompositeNode")
        out[node.GetLayoutName()] = node
    return out


def fill_views(scene, contents: dict[str, ViewContent]) -> list[str]:
    """Put ``contents`` into the views that exist (composite nodes of those
    tags); link them.  Returns the tags filled."""
    composites = _composite_nodes(scene)
    filled = []
    for tag, c in contents.items():
        comp = composites.get(tag)
        if comp is None:
            continue
        comp.SetBackgroundVolumeID(c.background)
        comp.SetForegroundVolumeID(c.foreground)
        comp.SetForegroundOpacity(c.foreground_opacity)
        comp.SetLabelVolumeID(c.label)
        comp.SetLabelOpacity(c.label_opacity)
        comp.SetLinkedControl(True)
        filled.append(tag)
    return filled


def color_legend(volume_node):
    """The colour legend display node of ``volume_node``, or ``None``."""
    for n in range(volume_node.GetNumberOfDisplayNodes()):
        d = volume_node.GetNthDisplayNode(n)
        if d is not None and d.IsA("vtkMRMLColorLegendDisplayNode"):
            return d
    return None


def add_color_legend(volume_node, title: str | None = None):
    """A colour legend (scalar bar) for ``volume_node``'s colour table, shown
    in the views that show the volume; returns the legend display node (the
    volume's existing one when it has one: showing the layout again adds none)."""
    scene = volume_node.GetScene()
    display = volume_node.GetDisplayNode()
    legend = color_legend(volume_node)
    if legend is None:
        if not scene.IsNodeClassRegistered("vtkMRMLColorLegendDisplayNode"):  # MRML without the Colors module
            import slicer

            scene.RegisterNodeClass(slicer.vtkMRMLColorLegendDisplayNode())
        legend = scene.AddNewNodeByClass("vtkMRMLColorLegendDisplayNode")
        legend.SetAndObservePrimaryDisplayNode(display)
        volume_node.AddAndObserveDisplayNodeID(legend.GetID())
    legend.SetTitleText(title or volume_node.GetName())
    legend.SetVisibility(True)
    return legend
