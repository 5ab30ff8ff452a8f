"""Compute devices: parse the user's choice and describe what is available."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

from SuperResMoELib.core.errors import DeviceError, ResourceError

#: Environment variable: torch intra-op threads (default: the cores given to the process).
ENV_THREADS = "SUPERRESMOE_THREADS"
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


def autocast_context(device: torch.device, enabled: bool, dtype: str = "float16") -> contextlib.AbstractContextManager:
    """Autocast to ``dtype`` (``"float16"``/``"bfloat16"``) on CUDA when
    ``enabled``; a no-op elsewhere (the CPU runs float32)."""
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=getattr(torch, dtype))
    return contextlib.nullcontext()


def move_predictor(predictor: object, device: torch.device) -> None:
    """``predictor.to(device)`` when the predictor has such a method."""
    mover = getattr(predictor, "to", None)
    if callable(mover):
        mover(device)


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` on ``device``; a CPU tensor bound for CUDA goes through pinned
    memory so that the copy runs asynchronously."""
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def free_device_memory(device: torch.device) -> int | None:
    """Free bytes on a CUDA device (``None`` elsewhere)."""
    if device.type != "cuda":
        return None
    free, _total = torch.cuda.mem_get_info(device)
    return int(free)


def cores_given() -> int:
    """CPU cores this process may run on (its affinity mask, which a batch
    scheduler or ``taskset`` narrows), else ``os.cpu_count()``."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def match_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads to ``threads`` or :func:`cores_given`
    (``SUPERRESMOE_THREADS`` overrides), and return the number in use.  torch's
    own default counts the machine's cores, not those given to the process, and
    oversubscribes a job that was given fewer."""
    env = os.environ.get(ENV_THREADS, "").strip()
    wanted = threads or (int(env) if env.isdigit() and int(env) > 0 else cores_given())
    if torch.get_num_threads() != wanted:
        torch.set_num_threads(wanted)
    return wanted


def compile_predictor(predictor: object) -> str:
    """Replace ``predictor.net`` by ``torch.compile(predictor.net)`` and say
    so (a predictor without a network module is left as it is)."""
    net = getattr(predictor, "net", None)
    if not isinstance(net, torch.nn.Module):
        return "--compile ignored: this method's predictor has no single network to compile"
    setattr(predictor, "net", torch.compile(net))
    return "network compiled with torch.compile (the first batches include the compilation)"


def recover_from_out_of_memory(exc: BaseException, device: torch.device, predictor: object,
                               shrink: Callable[[], str | None], smallest: str, cpu_advice: str) -> tuple[torch.device, str]:
    """The engines' answer to an error while running a predictor.

    Anything but out-of-memory is raised again.  Otherwise the CUDA cache is
    emptied and ``shrink()`` tries a smaller batch or tile (it returns the
    event's message, or ``None`` when nothing is smaller than ``smallest``);
    failing that, a GPU run moves the predictor to the CPU and goes on, and a
    CPU run stops with :class:`ResourceError` (``cpu_advice`` says what to do).

    Returns:
        ``(device to continue on, the event's message)``.
    """
    if not is_out_of_memory(exc):
        raise exc
    if device.type == "cuda":
        torch.cuda.empty_cache()
    note = shrink()
    if note is not None:
        return device, note
    if device.type == "cpu":
        raise ResourceError(f"out of memory on the CPU with {smallest}; {cpu_advice}") from None
    move_predictor(predictor, torch.device("cpu"))
    return torch.device("cpu"), f"out of memory on {device} with {smallest}: continuing on the CPU"
