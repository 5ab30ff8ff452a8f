"""The module's .ui file and the module source, checked without Slicer: the
.ui loads with PySide6, every widget the code uses exists with the class the
code expects, and the CMake files list every library file and resource."""

from __future__ import annotations

import ast
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULE = ROOT / "SuperResMoE" / "SuperResMoE.py"
UI = ROOT / "SuperResMoE" / "Resources" / "UI" / "SuperResMoE.ui"


def module_tree() -> ast.Module:
    return ast.parse(MODULE.read_text())


def declared_widgets() -> dict[str, str]:
    for node in module_tree().body:
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "UI_WIDGETS":
            return ast.literal_eval(node.value)
    raise AssertionError("UI_WIDGETS not found in SuperResMoE.py")


def used_widgets() -> set[str]:
    """Names used as ``self.ui.<name>`` / ``ui.<name>`` or ``getattr(self.ui, "<name>")`` in the module."""
    names = set()
    tree = module_tree()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr == "ui":
            names.add(node.attr)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "ui":
            names.add(node.attr)
    for literal in re.findall(r'"([a-z]\w*(?:Selector|ComboBox|CheckBox|LineEdit|SpinBox|SliderWidget|GroupBox))"',
                              MODULE.read_text()):
        if not literal.startswith(("ctk", "qMRML")):  # class names, not widget names
            names.add(literal)
    return names


def ui_classes() -> dict[str, str]:
    return {w.get("name"): w.get("class") for w in ET.parse(UI).iter("widget")}


def test_every_widget_the_code_uses_is_declared_and_in_the_ui() -> None:
    declared, used, classes = declared_widgets(), used_widgets(), ui_classes()
    assert used <= set(declared), f"used but not declared in UI_WIDGETS: {sorted(used - set(declared))}"
    for name, cls in declared.items():
        assert classes.get(name) == cls, f"{name}: .ui has {classes.get(name)}, the code expects {cls}"


#: Run in a fresh interpreter: Qt must not share a process with the VTK/MRML
#: libraries other tests load (that combination can crash inside QUiLoader).
PANEL_PROBE = """
import json, sys
from PySide6 import QtWidgets
from devtools.panel_preview import load_panel, render_panel
app, panel = load_panel(sys.argv[1])
found = {}
for name in json.loads(sys.argv[2]):
    w = panel.findChild(QtWidgets.QWidget, name)
    found[name] = None if w is None else w.metaObject().className()
print(json.dumps({"found": found, "png": str(render_panel(sys.argv[3]))}))
"""


def test_ui_loads_with_pyside6_and_holds_the_widgets(tmp_path) -> None:
    pytest.importorskip("PySide6", reason="PySide6 is part of the test extra")
    import json
    import os
    import subprocess
    import sys

    declared = declared_widgets()
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", PANEL_PROBE, str(UI), json.dumps(list(declared)),
                           str(tmp_path / "panel.png")], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, cls in declared.items():
        assert result["found"][name] is not None, name
        assert result["found"][name] == cls, name  # stand-ins carry the Slicer class names
    from PIL import Image

    img = Image.open(result["png"])
    assert img.size[0] >= 400 and img.size[1] > 300


def test_method_option_boxes_name_registered_methods() -> None:
    from SuperResMoELib.methods import method_names

    for node in module_tree().body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "METHOD_OPTION_BOXES":
            boxes = ast.literal_eval(node.value)
    assert set(boxes) <= set(declared_widgets())
    for methods in boxes.values():
        assert set(methods) <= set(method_names())


def cmake_listed(path: Path) -> list[str]:
    text = re.sub(r"#.*", "", path.read_text())
    return re.findall(r"[\w./-]+\.(?:py|ui|png|json|safetensors|nrrd|tsv)", text)


def test_module_cmake_lists_every_python_file_and_resource() -> None:
    listed = set(cmake_listed(ROOT / "SuperResMoE" / "CMakeLists.txt"))
    module_dir = ROOT / "SuperResMoE"
    expected = {str(p.relative_to(module_dir)) for p in module_dir.rglob("*.py")}
    expected |= {"../" + str(p.relative_to(ROOT)) for p in (ROOT / "SuperResMoELib").rglob("*.py")
                 if "__pycache__" not in p.parts}
    expected |= {str(p.relative_to(module_dir)) for p in (module_dir / "Resources").rglob("*") if p.is_file()}
    missing = sorted(expected - listed)
    assert not missing, f"not listed in SuperResMoE/CMakeLists.txt (would be missing from the extension): {missing}"
    stale = sorted(p for p in listed if not (module_dir / p).exists())
    assert not stale, f"listed but absent: {stale}"


def test_bundled_checkpoints_are_installed() -> None:
    listed = set(cmake_listed(ROOT / "CMakeLists.txt")) | set(cmake_listed(ROOT / "SuperResMoE" / "CMakeLists.txt"))
    for f in (ROOT / "SuperResMoELib" / "checkpoints" / "bundled").iterdir():
        if f.suffix in (".json", ".safetensors"):
            assert any(entry.endswith(f"checkpoints/bundled/{f.name}") for entry in listed), f.name


def test_user_facing_strings_are_ready_for_translation() -> None:
    """Dialog texts and status lines are ``_()`` calls (Slicer's ``tr``), never bare or f-string literals."""
    bare = []
    for node in ast.walk(module_tree()):
        texts = []
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in (
                "errorDisplay", "warningDisplay", "infoDisplay", "confirmOkCancelDisplay", "confirmYesNoDisplay",
                "tryWithErrorDisplay") and node.args:
            texts.append(node.args[0])
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Attribute) and t.attr in ("text", "helpText")
                                                 and "statusLabel" in ast.unparse(t) or getattr(t, "attr", "") ==
                                                 "helpText" for t in node.targets):
            texts.append(node.value)
        for t in texts:
            if isinstance(t, (ast.Constant, ast.JoinedStr)):
                bare.append(f"line {t.lineno}: {ast.unparse(t)[:60]}")
    assert not bare, bare


def test_form_and_grid_layout_items_have_a_cell() -> None:
    """An item of a form or grid layout without row/column lands on top of another widget."""
    bad = []
    for layout in ET.parse(UI).iter("layout"):
        if layout.get("class") in ("QFormLayout", "QGridLayout"):
            for item in layout.findall("item"):
                if item.get("row") is None:
                    widget = item.find("widget")
                    bad.append(f"{layout.get('name')}: {widget.get('name') if widget is not None else '?'}")
    assert not bad, bad


def test_every_mrml_widget_gets_the_scene() -> None:
    """A qMRML widget without a mrmlSceneChanged -> setMRMLScene connection stays empty in Slicer."""
    root = ET.parse(UI).getroot()
    mrml_widgets = {w.get("name") for w in root.iter("widget") if (w.get("class") or "").startswith("qMRML")
                    and w.get("class") != "qMRMLWidget"}
    connected = {c.findtext("receiver") for c in root.iter("connection")
                 if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"
                 and c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"}
    assert mrml_widgets and mrml_widgets <= connected, sorted(mrml_widgets - connected)
