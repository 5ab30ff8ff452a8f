"""What the module installs inside Slicer, at which versions, and what it must never touch."""

from __future__ import annotations

import tomllib
from pathlib import Path

from SuperResMoELib.slicer import dependencies

PYPROJECT = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())


def test_slicer_owned_packages_and_torch_are_never_pip_installed() -> None:
    reqs = " ".join(dependencies.PIP_PACKAGES.values()).lower()
    for name in (*dependencies.SLICER_OWNED, "torch"):
        assert name.lower() not in reqs


def test_requirements_follow_the_library_floors() -> None:
    """One source of truth: the floors in pyproject.toml."""
    deps = {d.split(">=")[0].strip().lower(): d.strip() for d in PYPROJECT["project"]["dependencies"]}
    assert dependencies.TORCH_REQUIREMENT == deps["torch"]
    for req in dependencies.PIP_PACKAGES.values():
        assert deps[req.split(">=")[0].lower()] == req
    covered = {r.split(">=")[0].lower() for r in dependencies.PIP_PACKAGES.values()}
    owned = {d.lower() for d in dependencies.SLICER_OWNED}
    assert set(deps) - covered - owned == {"torch"}


def test_missing_and_too_old_packages(monkeypatch) -> None:
    assert dependencies.missing_packages() == []  # everything is installed in the test environment
    monkeypatch.setitem(dependencies.PIP_PACKAGES, "surely_not_installed_pkg", "surely-not-installed-pkg>=1")
    monkeypatch.setitem(dependencies.PIP_PACKAGES, "tqdm", "tqdm>=999.0")  # installed, below the floor
    assert dependencies.missing_packages() == ["tqdm>=999.0", "surely-not-installed-pkg>=1"]
    plan = dependencies.install_plan()
    assert not plan.torch and plan.pip == ("tqdm>=999.0", "surely-not-installed-pkg>=1")
    assert "tqdm>=999.0" in plan.message and "left as they are" in plan.message


def test_version_parsing_and_torch_floor(monkeypatch) -> None:
    assert dependencies._version_tuple("2.13.0+cpu") == (2, 13, 0)
    assert dependencies._version_tuple("1.26.4rc1") == (1, 26, 4)
    assert dependencies.split_requirement("scikit-image>=0.21") == ("scikit-image", (0, 21))
    assert dependencies.torch_ok()
    monkeypatch.setattr(dependencies, "TORCH_REQUIREMENT", "torch>=99.0")
    plan = dependencies.install_plan()
    assert plan.torch and "torch>=99.0" in plan.message and "too old" in plan.message


def test_constraints_pin_the_installed_slicer_packages() -> None:
    import numpy
    import scipy

    lines = dependencies.constraints_text().splitlines()
    assert f"numpy=={numpy.__version__}" in lines and f"scipy=={scipy.__version__}" in lines
    assert all("==" in line for line in lines)


def test_restart_needed_for_imported_upgrades() -> None:
    assert dependencies.already_imported(["tqdm>=4.60", "nilearn>=0.10"], {"tqdm": object()}) == ["tqdm>=4.60"]


def test_torch_summary_names_the_build() -> None:
    text = dependencies.torch_summary()
    assert text.startswith("PyTorch ") and ("CPU-only build" in text or "CUDA" in text)
