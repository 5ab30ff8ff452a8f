"""Rewrite the library's file lists in ``SuperResMoE/CMakeLists.txt``.

The extension installs every file of ``SuperResMoELib/`` explicitly (Slicer's
CMake macros take file lists); ``Testing/test_module_ui.py`` fails when one is
missing or stale.  After adding or moving a library file run::

    python -m devtools.cmake_lists
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CMAKE = ROOT / "SuperResMoE" / "CMakeLists.txt"
LIB = ROOT / "SuperResMoELib"
#: Package data installed with the library (besides the .py files).
DATA_GLOBS: tuple[str, ...] = ("checkpoints/bundled/*.json", "checkpoints/bundled/*.safetensors",
                               "checkpoints/bundled/README.md", "py.typed")


def library_files() -> tuple[list[str], list[str]]:
    """``(python files, package data files)`` relative to the repository, sorted."""
    scripts = sorted(str(p.relative_to(ROOT)) for p in LIB.rglob("*.py") if "__pycache__" not in p.parts)
    data = sorted(str(p.relative_to(ROOT)) for g in DATA_GLOBS for p in LIB.glob(g))
    return scripts, data


def _set_block(text: str, variable: str, files: list[str]) -> str:
    body = "".join(f"  ../{f}\n" for f in files)
    new, n = re.subn(rf"set\({variable}\n(?:  [^\n]*\n)*?  \)", f"set({variable}\n{body}  )", text)
    if n != 1:
        raise SystemExit(f"{CMAKE}: no set({variable} ...) block")
    return new


def main() -> int:
    scripts, data = library_files()
    text = CMAKE.read_text()
    text = _set_block(_set_block(text, "SUPERRESMOE_LIB_SCRIPTS", scripts), "SUPERRESMOE_CHECKPOINTS", data)
    CMAKE.write_text(text)
    print(f"{CMAKE.relative_to(ROOT)}: {len(scripts)} library files, {len(data)} data files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
