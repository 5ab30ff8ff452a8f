"""What the module installs inside Slicer, and what it must never touch."""

from __future__ import annotations

import tomllib
from pathlib import Path

from SuperResMoELib.slicer import dependencies


def test_slicer_owned_packages_and_torch_are_never_pip_installed() -> None:
    reqs = " ".join(dependencies.PIP_PACKAGES.values()).lower()
    for name in (*dependencies.SLICER_OWNED, "torch"):
        assert name.lower() not in reqs


def test_pip_packages_cover_the_library_requirements() -> None:
    deps = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {d.split(">")[0].split("=")[0].strip().lower() for d in deps}
    covered = {r.split(">")[0].lower() for r in dependencies.PIP_PACKAGES.values()}
    assert names - covered == {"torch", "numpy", "simpleitk"}


def test_missing_packages(monkeypatch) -> None:
    assert dependencies.missing_packages() == []  # everything is installed in the test environment
    monkeypatch.setitem(dependencies.PIP_PACKAGES, "surely_not_installed_pkg", "surely-not-installed-pkg>=1")
    assert dependencies.missing_packages() == ["surely-not-installed-pkg>=1"]


def test_torch_summary_names_the_build() -> None:
    text = dependencies.torch_summary()
    assert text.startswith("PyTorch ") and ("CPU-only build" in text or "CUDA" in text)
