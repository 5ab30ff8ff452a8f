"""The library type-checks with zero mypy errors (config in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_library_has_no_mypy_errors(tmp_path: Path) -> None:
    pytest.importorskip("mypy", reason="mypy is part of the test extra")
    proc = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache")], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "Success: no issues found" in proc.stdout
