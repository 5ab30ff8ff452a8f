"""User-facing errors.

Every problem caused by the user's input (a missing file, an unsupported format,
a volume with NaN voxels, ...) raises a subclass of :class:`SuperResMoEError`.
The CLI prints such errors as one line (no traceback) and exits with the code
attached to the error class, so scripts and the Slicer module can tell what
went wrong from the exit status alone.
"""

from __future__ import annotations


class SuperResMoEError(Exception):
    """Base class for errors that are reported to the user as one line."""

    exit_code: int = 1


class InputError(SuperResMoEError):
    """The input data (file, array, geometry, parameters) is unusable."""

    exit_code = 3


class CheckpointError(SuperResMoEError):
    """A checkpoint is missing, corrupt, unsafe or made for another method/task."""

    exit_code = 4


class CancelledError(SuperResMoEError):
    """The user cancelled a running operation."""

    exit_code = 5


class DeviceError(SuperResMoEError):
    """The requested compute device does not exist or cannot be used."""

    exit_code = 6
