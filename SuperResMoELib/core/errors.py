"""Errors and exit codes: one taxonomy for the CLI, the pipeline, the Slicer
logic, the batch script and training.

Every problem the user can act on raises a subclass of
:class:`SuperResMoEError`; the CLIs print it as one line (no traceback) and
exit with the :class:`ExitCode` attached to its class, so scripts and the
Slicer module can tell what went wrong from the exit status alone:

* :class:`InputError` - the user's *input data* (a file, voxels, geometry,
  acquisition parameters, option values) is unusable;
* :class:`ConfigError` - a *configuration* (a training config, a manifest
  field the user wrote, an option combination) is invalid;
* :class:`CheckpointError` - a checkpoint is missing, corrupt, unsafe or
  for another method;
* :class:`DeviceError` - the requested compute device cannot be used;
* :class:`ResourceError` - the program cannot run here: a missing optional
  package (:class:`MissingPackageError`), memory, disk;
* :class:`CancelledError` - the user cancelled.

Anything else is a program error: exit code :attr:`ExitCode.INTERNAL`.
"""

from __future__ import annotations

import enum
import importlib.util


class ExitCode(enum.IntEnum):
    """Exit status of ``superresmoe``, ``python -m training`` and the batch script."""

    OK = 0
    #: An unexpected program error (``--debug`` shows the traceback).
    INTERNAL = 1
    #: Bad command-line usage (argparse).
    USAGE = 2
    #: Unusable input data (file, format, voxels, geometry, parameters).
    INPUT = 3
    #: Checkpoint missing, corrupt, unsafe or for another method.
    CHECKPOINT = 4
    #: Cancelled (Ctrl-C, SIGTERM, or the Slicer module's Cancel).
    CANCELLED = 5
    #: The requested device is unavailable.
    DEVICE = 6
    #: A batch finished but some files failed.
    PARTIAL = 7
    #: An invalid configuration (training config, option combination).
    CONFIG = 8
    #: A resource the program needs is missing (optional package, memory, disk).
    RESOURCE = 9

    @classmethod
    def describe(cls) -> str:
        """One line listing every code, for ``--help`` epilogues."""
        return ", ".join(f"{int(c)} {c.name.lower()}" for c in cls)


class SuperResMoEError(Exception):
    """Base class for errors that are reported to the user as one line."""

    exit_code: ExitCode = ExitCode.INTERNAL


class InputError(SuperResMoEError):
    """The input data (file, array, geometry, parameters) is unusable."""

    exit_code = ExitCode.INPUT


class ConfigError(SuperResMoEError):
    """A configuration is invalid (unknown or misspelled key, wrong type, bad value)."""

    exit_code = ExitCode.CONFIG


class CheckpointError(SuperResMoEError):
    """A checkpoint is missing, corrupt, unsafe or made for another method/task."""

    exit_code = ExitCode.CHECKPOINT


class CancelledError(SuperResMoEError):
    """The user cancelled a running operation."""

    exit_code = ExitCode.CANCELLED


class DeviceError(SuperResMoEError):
    """The requested compute device does not exist or cannot be used."""

    exit_code = ExitCode.DEVICE


class ResourceError(SuperResMoEError):
    """Something the program needs is not available here (a package, memory, disk)."""

    exit_code = ExitCode.RESOURCE


class MissingPackageError(ResourceError):
    """An optional Python package is not installed."""

    def __init__(self, package: str, extra: str | None = None, purpose: str = "") -> None:
        self.package, self.extra = package, extra
        how = f"pip install 'superresmoe[{extra}]'" if extra else f"pip install {package}"
        what = f" (needed for {purpose})" if purpose else ""
        super().__init__(f"the Python package '{package}' is not installed{what}; install it with: {how}")


def require_package(module: str, extra: str | None = None, purpose: str = "", package: str | None = None) -> None:
    """Raise :class:`MissingPackageError` unless ``module`` can be imported.

    Args:
        module: import name (``"matplotlib"``).
        extra: the ``superresmoe`` extra that installs it (``"training"``).
        purpose: what needs it, for the message.
        package: the pip name when it differs from the import name.
    """
    if importlib.util.find_spec(module) is None:
        raise MissingPackageError(package or module, extra, purpose)


#: Import name -> (pip name, ``superresmoe`` extra that installs it) of packages
#: only some commands need; a missing one becomes a :class:`MissingPackageError`.
OPTIONAL_PACKAGES: dict[str, tuple[str, str | None]] = {
    "torch": ("torch", None),  # the build must fit the machine: see the README (GPU users)
    "matplotlib": ("matplotlib", "training"),
    "sklearn": ("scikit-learn", "training"),
    "PySide6": ("PySide6-Essentials", "test"),
    "slicer": ("slicer-core", "test"),
    "dask": ("dask[distributed]", "cluster"),
    "distributed": ("dask[distributed]", "cluster"),
}


def missing_package_error(exc: ImportError) -> MissingPackageError | None:
    """The one-line error for an ``ImportError`` of a package in
    :data:`OPTIONAL_PACKAGES` (``None`` for any other import failure)."""
    name = (getattr(exc, "name", None) or "").split(".")[0]
    if name not in OPTIONAL_PACKAGES:
        return None
    package, extra = OPTIONAL_PACKAGES[name]
    return MissingPackageError(package, extra)
