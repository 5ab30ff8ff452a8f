"""Supported Slicer versions: Slicer >= 5.10 (Python >= 3.10). Slicer 5.6 / 5.8
embed Python 3.9; there the module must load and say so instead of failing with
a traceback at the first library import.

Desktop Slicer cannot run here, so the 3.9 check runs ``SuperResMoE.py`` under
pyenv's real Python 3.9 against a minimal stand-in for the few Slicer names the
module touches at load (``slicer.app.connect``, the ScriptedLoadableModule base
classes, ``VTKObservationMixin``, ``qt.QLabel``), written for this test."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULE = ROOT / "SuperResMoE" / "SuperResMoE.py"


def _python39() -> str | None:
    """A working Python 3.9: pyenv's install first, then one on PATH (not a pyenv shim without it)."""
    pyenv = Path.home() / ".pyenv" / "versions"
    candidates = [str(p) for p in sorted(pyenv.glob("3.9*/bin/python3.9"))] + [shutil.which("python3.9") or ""]
    for exe in filter(None, candidates):
        try:
            out = subprocess.run([exe, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True,
                                 text=True, timeout=30)
        except OSError:
            continue
        if out.returncode == 0 and out.stdout.strip() == "(3, 9)":
            return exe
    return None


PY39 = _python39()

STAND_IN = {
    "slicer/__init__.py": """
        class _App:
            def connect(self, *args):
                raise AssertionError("an unsupported Slicer must not register sample data")
        app = _App()
        mrmlScene = None
    """,
    "slicer/util.py": """
        class VTKObservationMixin:
            def __init__(self):
                self.observations = []
            def removeObservers(self):
                self.observations = []
    """,
    "slicer/ScriptedLoadableModule.py": """
        class ScriptedLoadableModule:
            def __init__(self, parent):
                self.parent = parent
        class ScriptedLoadableModuleWidget:
            def __init__(self, parent=None):
                self.parent = parent
            def setup(self):
                self.layout = _Layout()
        class _Layout:
            def __init__(self):
                self.widgets = []
            def addWidget(self, w):
                self.widgets.append(w)
            def addStretch(self, n):
                pass
        class ScriptedLoadableModuleLogic:
            def __init__(self):
                pass
        class ScriptedLoadableModuleTest:
            pass
    """,
    "qt.py": """
        class QLabel:
            def __init__(self, text):
                self.text = text
            def setWordWrap(self, on):
                pass
    """,
}

PROBE = """
import sys, types
sys.path.insert(0, sys.argv[1])
import importlib.util
spec = importlib.util.spec_from_file_location("SuperResMoE", sys.argv[2])
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
parent = types.SimpleNamespace()
mod.SuperResMoE(parent)
w = mod.SuperResMoEWidget()
w.setup()
w.enter()
w.cleanup()
assert not [m for m in sys.modules if m.startswith("SuperResMoELib")], "the library was imported"
print(parent.helpText)
print(w.layout.widgets[0].text)
"""


@pytest.mark.skipif(PY39 is None, reason="no Python 3.9 interpreter (pyenv) on this machine")
def test_python39_slicer_loads_the_module_and_says_why_it_cannot_run(tmp_path) -> None:
    compiled = subprocess.run([str(PY39), "-c", "import py_compile, sys; py_compile.compile(sys.argv[1], "
                               "cfile=sys.argv[2], doraise=True)", str(MODULE), str(tmp_path / "module.pyc")],
                              capture_output=True, text=True)  # the .pyc outside the source tree
    assert compiled.returncode == 0, compiled.stderr
    for name, text in STAND_IN.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(textwrap.dedent(text))
    proc = subprocess.run([str(PY39), "-c", PROBE, str(tmp_path), str(MODULE)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    help_text, label = proc.stdout.strip().splitlines()
    for text in (help_text, label):
        assert "Slicer 5.10 or newer" in text and "Python 3.9." in text


def test_supported_pythons() -> None:
    import ast

    tree = ast.parse(MODULE.read_text())
    ns: dict = {"sys": sys}
    for node in tree.body:  # the guard alone, without importing slicer
        if isinstance(node, ast.FunctionDef) and node.name == "unsupported_reason" or (
                isinstance(node, ast.AnnAssign | ast.Assign) and "MINIMUM" in ast.unparse(node)):
            exec(compile(ast.Module([node], []), str(MODULE), "exec"), ns)
    check = ns["unsupported_reason"]
    assert check((3, 12, 1)) is None and check((3, 10, 0)) is None
    assert "5.10" in check((3, 9, 18))
    assert ns["MINIMUM_SLICER"] == "5.10"


def test_readme_and_extension_metadata_state_the_minimum() -> None:
    assert "Slicer 5.10" in (ROOT / "README.md").read_text()
    assert "Slicer 5.10" in (ROOT / "CMakeLists.txt").read_text()


SUPPORTED_PROBE = """
import sys, types
sys.path.insert(0, sys.argv[1])
import slicer
calls = []
slicer.app.connect = lambda signal, slot: calls.append((signal, slot))
slicer.app.layoutManager = lambda: None
import importlib.util
spec = importlib.util.spec_from_file_location("SuperResMoE", sys.argv[2])
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
parent = types.SimpleNamespace()
mod.SuperResMoE(parent)
assert [c[0] for c in calls] == ["startupCompleted()"], calls
calls[0][1]()  # what Slicer calls at startup: no SampleData module here, no layout manager
assert "Enhance" in parent.helpText and parent.categories
print("ok")
"""


def test_supported_python_registers_the_startup_work(tmp_path) -> None:
    """On a supported Python the module's metadata is set and its startup callback exists and runs
    (the stand-in again: Slicer itself cannot run here)."""
    for name, text in STAND_IN.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(textwrap.dedent(text))
    proc = subprocess.run([sys.executable, "-c", SUPPORTED_PROBE, str(tmp_path), str(MODULE)], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
