"""A preview of the module panel outside Slicer: the real ``.ui`` file loaded
with PySide6, Slicer's custom widgets replaced by plain Qt stand-ins (a combo
box for node selectors, a group box for collapsible sections...).  Used by the
tests (the ``.ui`` loads and holds every widget the module uses) and to render
the panel screenshot, which is labelled as such a preview.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Slicer / CTK widget class -> the Qt class its stand-in derives from.
STAND_INS: dict[str, str] = {"qMRMLWidget": "QWidget", "ctkCollapsibleButton": "QGroupBox",
                             "qMRMLNodeComboBox": "QComboBox", "ctkPathLineEdit": "QLineEdit",
                             "ctkSliderWidget": "QDoubleSpinBox"}


def ui_path() -> Path:
    """The module's ``.ui`` file in the source tree."""
    return Path(__file__).resolve().parents[1] / "SuperResMoE" / "Resources" / "UI" / "SuperResMoE.ui"


def load_panel(path: str | os.PathLike | None = None):
    """``(QApplication, panel widget)`` with stand-ins registered (offscreen Qt)."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6 import QtWidgets
    from PySide6.QtCore import QFile, QIODevice
    from PySide6.QtUiTools import QUiLoader

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    loader = QUiLoader()
    for name, base in STAND_INS.items():
        cls = type(name, (getattr(QtWidgets, base),), {})
        if name == "ctkCollapsibleButton":
            def init(self, parent=None):
                QtWidgets.QGroupBox.__init__(self, parent)
                self.setStyleSheet("QGroupBox { font-weight: bold; }")
            cls.__init__ = init
        loader.registerCustomWidget(cls)
    f = QFile(str(path or ui_path()))
    if not f.open(QIODevice.ReadOnly):
        raise OSError(f"cannot open {path or ui_path()}")
    try:
        panel = loader.load(f)
    finally:
        f.close()
    if panel is None:
        raise RuntimeError(f"the .ui file could not be loaded: {loader.errorString()}")
    return app, panel


def render_panel(out: str | os.PathLike, width: int = 420) -> Path:
    """Render the preview panel (filled with example values) to a PNG."""
    from PySide6 import QtWidgets

    app, panel = load_panel()
    find = lambda name: panel.findChild(QtWidgets.QWidget, name)  # noqa: E731
    for name, title in (("inputsCollapsibleButton", "Inputs"), ("methodCollapsibleButton", "Method"),
                        ("advancedCollapsibleButton", "Advanced"), ("resultsCollapsibleButton", "Results"),
                        ("logCollapsibleButton", "Log (collapsed in Slicer)")):
        find(name).setTitle(title)
    find("inputSelector").addItem("qMRI (2.5x2.5x5 mm)")
    find("referenceSelector").addItem("(none)")
    find("outputSelector").addItem("(create new)")
    find("acquisitionTableSelector").addItem("qMRI acquisition (table)")
    for title in ("Cubic spline", "SS-MoE", "SR U-Net", "Hard-MoE", "REMIx", "REMIx 1-network", "MoEDiff-SR"):
        find("methodComboBox").addItem(title)
    find("methodComboBox").setCurrentIndex(1)
    find("methodDescriptionLabel").setText("Self-supervised mixture of experts (Lin et al. 2021): a gater routes "
                                           "each 3D patch, using the acquisition parameters, to one of K experts.")
    find("deviceComboBox").addItem("auto")
    find("taskComboBox").addItems(["aniso", "iso"])
    find("checkpointPathLineEdit").setPlaceholderText("bundled checkpoint")
    find("remixGroupBox").setVisible(False)
    find("moediffGroupBox").setVisible(False)
    find("logTextEdit").setMaximumHeight(60)
    find("applyButton").setEnabled(True)
    find("statusLabel").setText("PySide6 preview of the panel (Slicer widgets shown as plain Qt stand-ins)")
    panel.resize(width, panel.sizeHint().height())
    panel.show()
    app.processEvents()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not panel.grab().save(str(out)):
        raise OSError(f"could not write {out}")
    return out
