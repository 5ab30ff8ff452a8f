"""Compute devices: parse the user's choice and describe what is available."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from SuperResMoELib.core.errors import DeviceError

#: GPUs with less memory than this get a warning (bytes).
SMALL_GPU_BYTES = 4 * 1024**3


@dataclass(frozen=True)
class DeviceInfo:
    """One device the user can choose."""

    name: str  # "cpu", "cuda:0", ...
    label: str  # human readable, e.g. "cuda:0 - NVIDIA H100 (79.1 GiB)"
    memory_bytes: int | None = None

    @property
    def small(self) -> bool:
        return self.memory_bytes is not None and self.memory_bytes < SMALL_GPU_BYTES


def available_devices() -> list[DeviceInfo]:
    """CPU plus every CUDA device with its name and memory (CUDA devices first)."""
    out: list[DeviceInfo] = []
    if torch.cuda.is_available():
        for n in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(n)
            gib = props.total_memory / 1024**3
            out.append(DeviceInfo(f"cuda:{n}", f"cuda:{n} - {props.name} ({gib:.1f} GiB)", props.total_memory))
    out.append(DeviceInfo("cpu", "cpu"))
    return out


def resolve_device(choice: str | torch.device | None = "auto") -> torch.device:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` into a usable device.

    ``auto`` picks the first CUDA device when there is one, else the CPU.

    Raises:
        DeviceError: CUDA asked for but unavailable, or an index out of range.
    """
    if isinstance(choice, torch.device):
        return choice
    text = (choice or "auto").strip().lower()
    if text == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text.startswith("cuda"):
        if not torch.cuda.is_available():
            build = torch.__version__
            raise DeviceError(
                f"device {choice!r} asked for, but CUDA is not available to this torch ({build}); "
                "use --device cpu, or install a CUDA build of torch (see README, GPU users)"
            )
        try:
            dev = torch.device(text if ":" in text else "cuda:0")
        except RuntimeError as exc:
            raise DeviceError(f"cannot parse device {choice!r}: {exc}") from exc
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(
                f"device {choice!r} does not exist: {torch.cuda.device_count()} CUDA device(s) found"
            )
        return dev
    raise DeviceError(f"unknown device {choice!r}; use auto, cpu, cuda or cuda:N")


def is_out_of_memory(exc: BaseException) -> bool:
    """True for CUDA (or CPU allocator) out-of-memory errors."""
    if isinstance(exc, getattr(torch, "OutOfMemoryError", ())):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
