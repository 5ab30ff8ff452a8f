"""The compute devices, listed in a child process so that the Slicer GUI never
imports torch just to open the panel (importing it costs seconds and hundreds
of MB, and a broken CUDA install can crash the importer).

:class:`DeviceProbe` runs ``<python> -m SuperResMoELib info --json`` (the
CLI's own device list: one source of truth) in a thread; the GUI polls
:meth:`DeviceProbe.result` from a timer, tests call :meth:`DeviceProbe.wait`.
Whatever goes wrong (no torch yet, a CUDA library that fails to load, a
timeout), the list is the CPU alone and :attr:`DeviceList.warning` says why.
"""

from __future__ import annotations

import json
import subprocess
import threading
from dataclasses import dataclass, field
from typing import Sequence

from .jobs import library_environment, no_window_flags, python_executable

#: Seconds the child may take (a first CUDA initialisation can be slow).
PROBE_TIMEOUT_S = 120.0
#: Label suffix of a device with little memory.
SMALL_SUFFIX = "  (small: may run out of memory)"


@dataclass(frozen=True)
class DeviceChoice:
    """One device: ``name`` (``"cpu"``, ``"cuda:0"``), ``label`` for a list, ``small``
    (less memory than the engine's small-GPU threshold), ``memory_bytes`` (GPUs)."""

    name: str
    label: str
    small: bool = False
    memory_bytes: int | None = None


@dataclass(frozen=True)
class DeviceList:
    """The probe's answer: the devices (CPU always last) and why GPUs may be missing."""

    devices: tuple[DeviceChoice, ...] = (DeviceChoice("cpu", "cpu"),)
    warning: str | None = None
    torch_version: str | None = None

    def choices(self) -> list[tuple[str, str]]:
        """``(name, label)`` pairs for a combo box (small devices marked)."""
        return [(d.name, d.label + (SMALL_SUFFIX if d.small else "")) for d in self.devices]

    def get(self, name: str) -> DeviceChoice | None:
        return next((d for d in self.devices if d.name == name), None)


def parse_info(stdout: str, returncode: int, stderr: str = "") -> DeviceList:
    """The :class:`DeviceList` of one ``info --json`` run (CPU alone on any failure)."""
    if returncode == 0:
        try:
            info = json.loads(stdout)
            devices = tuple(DeviceChoice(str(d["name"]), str(d["label"]), bool(d.get("small", False)),
                                         d.get("memory_bytes")) for d in info["devices"])
            if devices and devices[-1].name == "cpu":
                return DeviceList(devices, None, info.get("torch"))
        except (ValueError, KeyError, TypeError):
            pass
        return DeviceList(warning="the device list could not be read; using the CPU")
    tail = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    if any("No module named 'torch'" in line for line in tail):
        return DeviceList(warning="PyTorch is not installed yet (Enhance installs it); GPUs are listed afterwards")
    reason = tail[-1] if tail else f"exit code {returncode}"
    return DeviceList(warning=f"GPUs could not be listed ({reason[:300]}); using the CPU")


@dataclass
class DeviceProbe:
    """Lists the devices in a child process (see the module docstring).

    Args:
        python: the interpreter (default: Slicer's PythonSlicer, else this one).
        extra_paths: more ``PYTHONPATH`` entries for the child.
        timeout: seconds before the child is given up (CPU alone, with a warning).
    """

    python: str | None = None
    extra_paths: Sequence[str] = ()
    timeout: float = PROBE_TIMEOUT_S
    _result: DeviceList | None = field(default=None, init=False, repr=False)
    _thread: threading.Thread | None = field(default=None, init=False, repr=False)

    def start(self) -> "DeviceProbe":
        """Start the child (in a daemon thread; returns at once)."""
        self._result = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        argv = [self.python or python_executable(), "-m", "SuperResMoELib", "info", "--json"]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, encoding="utf-8", errors="replace",
                                  timeout=self.timeout, env=library_environment(self.extra_paths),
                                  creationflags=no_window_flags())
            self._result = parse_info(proc.stdout, proc.returncode, proc.stderr)
        except subprocess.TimeoutExpired:
            self._result = DeviceList(warning=f"listing the devices took longer than {self.timeout:.0f} s; "
                                              "using the CPU")
        except OSError as exc:
            self._result = DeviceList(warning=f"the device list could not be started ({exc}); using the CPU")

    def result(self) -> DeviceList | None:
        """The answer once the child has finished, else ``None`` (never blocks)."""
        return self._result

    def wait(self, timeout: float | None = None) -> DeviceList:
        """Block until the answer is there (scripts and tests)."""
        assert self._thread is not None, "start() first"
        self._thread.join(timeout)
        if self._result is None:
            raise TimeoutError("the device probe has not finished")
        return self._result

