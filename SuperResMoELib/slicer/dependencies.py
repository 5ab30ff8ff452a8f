"""Which Python packages the library needs inside Slicer, and which it must
never install there.

Slicer ships its own ``numpy`` and ``SimpleITK`` (replacing them breaks the
application) and gets ``torch`` through the PyTorch extension (which picks the
CUDA build for the machine).  Everything else is installed with pip on first
use, after the user agrees.
"""

from __future__ import annotations

import importlib.util

#: import name -> pip requirement, for packages installed on first Enhance.
PIP_PACKAGES: dict[str, str] = {
    "safetensors": "safetensors>=0.4",
    "nibabel": "nibabel>=5.0",
    "nrrd": "pynrrd>=1.0",
    "scipy": "scipy>=1.10",
    "skimage": "scikit-image>=0.21",
    "nilearn": "nilearn>=0.10",
    "tqdm": "tqdm>=4.60",
}
#: Packages Slicer provides; never installed or upgraded by the module.
SLICER_OWNED: tuple[str, ...] = ("numpy", "SimpleITK", "vtk")
#: Installed through the PyTorch extension (PyTorchUtils), not pip.
TORCH = "torch"


def is_installed(import_name: str) -> bool:
    """Whether ``import_name`` can be imported (without importing it)."""
    return importlib.util.find_spec(import_name) is not None


def missing_packages() -> list[str]:
    """Pip requirements of the packages not installed yet (torch and the
    Slicer-owned packages are never in this list)."""
    return [req for name, req in PIP_PACKAGES.items() if not is_installed(name)]


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
