"""Offscreen rendering of the comparison layout with ``trame-slicer`` (VTK
through EGL, no display): used by the tests and to make the README's
screenshots.  Needs the ``trame-slicer`` and ``slicer-layer-dm`` packages.

:class:`OffscreenViews` creates one slice view per tag of
:data:`~SuperResMoELib.slicer.views.VIEW_TAGS` in a ``trame_slicer.core.SlicerApp``
scene, renders each to an RGB array, and composes them as the layout does
(three views on top, two below) with a title bar per view.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from SuperResMoELib.slicer.views import VIEW_COLORS, VIEW_TAGS, VIEW_TITLES


class OffscreenViews:
    """Slice views of the comparison layout, rendered offscreen.

    Args:
        app: a ``trame_slicer.core.SlicerApp`` (its ``scene`` holds the volumes).
        size: pixels of one view ``(width, height)``.
    """

    def __init__(self, app, size: tuple[int, int] = (256, 256)) -> None:
        from trame_slicer.views import DirectRendering, SliceView

        self.app = app
        self.size = size
        self.views = {}
        for tag in VIEW_TAGS:
            view = SliceView(app.scene, app.app_logic, tag, scheduled_render_strategy=DirectRendering())
            view.render_window().SetOffScreenRendering(1)
            view.render_window().SetSize(*size)
            view.set_orientation("Axial")
            self.views[tag] = view

    def fit(self) -> None:
        """Fit every view to its background and centre the linked slice."""
        for view in self.views.values():
            view.fit_view_to_content()

    def render(self, tag: str) -> np.ndarray:
        """``(H, W, 3)`` uint8 image of one view (row 0 at the top)."""
        import vtk
        from vtk.util.numpy_support import vtk_to_numpy

        view = self.views[tag]
        view.render()
        grab = vtk.vtkWindowToImageFilter()
        grab.SetInput(view.render_window())
        grab.ReadFrontBufferOff()
        grab.Update()
        img = grab.GetOutput()
        w, h, _ = img.GetDimensions()
        arr = vtk_to_numpy(img.GetPointData().GetScalars()).reshape(h, w, -1)[:, :, :3]
        return np.ascontiguousarray(arr[::-1])  # VTK rows start at the bottom

    def compose(self, title_px: int = 18) -> np.ndarray:
        """The layout as one RGB image: LR | SR | HR on top, Error | Experts below."""
        from PIL import Image, ImageDraw

        w, h = self.size
        canvas = Image.new("RGB", (3 * w, 2 * (h + title_px)), (30, 30, 30))
        draw = ImageDraw.Draw(canvas)
        for n, tag in enumerate(VIEW_TAGS):
            row, col = (0, n) if n < 3 else (1, n - 3)
            x = col * w if row == 0 else int((col + 0.5) * w)
            y = row * (h + title_px)
            draw.rectangle([x, y, x + w - 1, y + title_px - 1], fill=VIEW_COLORS[tag])
            draw.text((x + 5, y + 3), VIEW_TITLES[tag], fill=(0, 0, 0))
            canvas.paste(Image.fromarray(self.render(tag)), (x, y + title_px))
        return np.asarray(canvas)

    def save(self, path: str | Path) -> Path:
        """Write :meth:`compose` to a PNG file."""
        from PIL import Image

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(self.compose()).save(path)
        return path
