"""Which Python packages the library needs inside Slicer, at which versions,
and which it must never install or upgrade there.

Slicer ships its own ``numpy``, ``scipy``, ``SimpleITK`` and ``vtk``
(replacing them breaks the application): they are never requested, and every
pip run gets a constraints file pinning them at the versions Slicer has
(:func:`constraints_text`). ``torch`` comes through the PyTorch extension
(which picks the CUDA build for the machine) with :data:`TORCH_REQUIREMENT`.
Everything else is installed with pip on first use, after one confirmation;
a package that is present but older than its floor counts as missing (it is
upgraded). :func:`install_plan` says what one Enhance would install.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
from dataclasses import dataclass

#: import name -> pip requirement (name and version floor), installed on first Enhance.
PIP_PACKAGES: dict[str, str] = {
    "safetensors": "safetensors>=0.4",
    "nibabel": "nibabel>=5.0",
    "nrrd": "pynrrd>=1.0",
    "skimage": "scikit-image>=0.21",
    "nilearn": "nilearn>=0.10",
    "tqdm": "tqdm>=4.60",
}
#: Packages Slicer provides (distribution names); never installed or upgraded by the module.
SLICER_OWNED: tuple[str, ...] = ("numpy", "scipy", "SimpleITK", "vtk")
#: Installed through the PyTorch extension (PyTorchUtils), not pip; the floor is the library's.
TORCH = "torch"
TORCH_REQUIREMENT = "torch>=2.1"


def is_installed(import_name: str) -> bool:
    """Whether ``import_name`` can be imported (without importing it)."""
    return importlib.util.find_spec(import_name) is not None


def _version_tuple(text: str) -> tuple[int, ...]:
    """``"2.13.0+cpu"`` -> ``(2, 13, 0)`` (the leading numeric release only)."""
    parts = []
    for p in re.split(r"[.+-]", text):
        m = re.match(r"\d+", p)
        if not m:
            break
        parts.append(int(m.group()))
    return tuple(parts)


def split_requirement(requirement: str) -> tuple[str, tuple[int, ...] | None]:
    """``"scikit-image>=0.21"`` -> ``("scikit-image", (0, 21))``; no floor -> ``None``."""
    name, _, floor = requirement.partition(">=")
    return name.strip(), (_version_tuple(floor) if floor else None)


def installed_version(distribution: str) -> str | None:
    """The installed version of a distribution (pip name), or ``None``."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def satisfied(import_name: str, requirement: str) -> bool:
    """Importable, and (when its version is known) at least the requirement's floor."""
    if not is_installed(import_name):
        return False
    name, floor = split_requirement(requirement)
    version = installed_version(name)
    return floor is None or version is None or _version_tuple(version) >= floor


def missing_packages() -> list[str]:
    """Pip requirements not satisfied yet (absent or below the floor); torch and the
    Slicer-owned packages are never in this list."""
    return [req for name, req in PIP_PACKAGES.items() if not satisfied(name, req)]


def torch_ok() -> bool:
    """torch importable and at least :data:`TORCH_REQUIREMENT`."""
    return satisfied(TORCH, TORCH_REQUIREMENT)


def constraints_text() -> str:
    """A pip constraints file pinning every installed Slicer-owned package at its
    version, so installing the others can never upgrade or replace them."""
    lines = []
    for dist in SLICER_OWNED:
        version = installed_version(dist)
        if version is not None:
            lines.append(f"{dist}=={version}")
    return "\n".join(lines) + ("\n" if lines else "")


@dataclass(frozen=True)
class InstallPlan:
    """What one Enhance would install: torch (through the PyTorch extension) and
    pip requirements; ``message`` is the one confirmation the user sees."""

    torch: bool
    pip: tuple[str, ...]

    @property
    def empty(self) -> bool:
        return not self.torch and not self.pip

    @property
    def message(self) -> str:
        lines = ["SuperResMoE needs these Python packages, which will be installed now:"]
        if self.torch:
            have = installed_version(TORCH)
            lines.append(f"  {TORCH_REQUIREMENT} (through the PyTorch extension"
                         + (f"; {have} is too old)" if have else ")"))
        lines += [f"  {r}" for r in self.pip]
        lines.append("")
        lines.append(f"Slicer's own {', '.join(SLICER_OWNED)} are left as they are.")
        return "\n".join(lines)


def install_plan() -> InstallPlan:
    """The :class:`InstallPlan` for this Python now."""
    return InstallPlan(torch=not torch_ok(), pip=tuple(missing_packages()))


def already_imported(requirements: tuple[str, ...] | list[str], modules: dict | None = None) -> list[str]:
    """Requirements whose package is imported in this process already (an upgrade
    needs a restart to take effect)."""
    import sys

    modules = sys.modules if modules is None else modules
    names = {req: imp for imp, req in PIP_PACKAGES.items()}
    return [r for r in requirements if names.get(r) in modules]


def torch_summary() -> str:
    """One line on the installed torch: version, CUDA build, GPUs seen."""
    if not is_installed(TORCH):
        return "PyTorch is not installed"
    import torch

    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU-only build"
    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        return f"PyTorch {torch.__version__} ({build}); GPU: {names}"
    hint = " - no GPU is visible to it" if torch.version.cuda else ""
    return f"PyTorch {torch.__version__} ({build}){hint}"
