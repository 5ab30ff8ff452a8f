"""Window layout of the patch engine: its settings, where windows start, and
how large the halo-crop tiles may be.

Kept free of torch so that options can be validated (and the command line can
start) without loading it.

Two tiling strategies (:data:`STRATEGIES`):

* ``sliding`` - fixed-size windows, overlapping, outputs blended with Gaussian
  (or constant) weights.  Any predictor; the only choice for networks whose
  output depends on the window as a whole (SS-MoE routes each patch, MoEDiff-SR
  gates each tile).
* ``halo`` - tiles as large as the memory budget allows (the whole volume when
  it fits), each read with a halo of the network's receptive field and only its
  valid interior written: the result equals one whole-volume pass to float
  tolerance.  Only for fully convolutional predictors that declare a
  :class:`HaloSpec`.

``auto`` (the default) takes ``halo`` when the predictor declares one, else
``sliding``; the engine reports what it chose and why.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from SuperResMoELib.core.errors import InputError

#: Tiling strategies; ``auto`` picks one from the predictor (module docstring).
STRATEGIES: tuple[str, ...] = ("auto", "halo", "sliding")
#: Autocast precisions on CUDA (``mixed_precision``); the CPU always runs float32.
AMP_DTYPES: tuple[str, ...] = ("float16", "bfloat16")

#: Input voxels per batch of the sliding strategy when ``batch_size`` is ``None``
#: (network items = this // patch voxels, at least 1).  On the CPU a batch must
#: stay in cache: 2 cores ran SS-MoE's 8x16x16 patches fastest at 64 per batch
#: (131,072 voxels) and a 3-layer width-16 net on 32^3 patches faster at 2 than
#: at 8 (``benchmarks/README.md``); a GPU needs large batches to fill.
CPU_BATCH_VOXELS: int = 1 << 17
GPU_BATCH_VOXELS: int = 1 << 21
#: Halo-crop network memory on the CPU when no budget is given: this many bytes,
#: or :data:`CPU_BUDGET_FRACTION` of the available memory when that is less.
CPU_BUDGET_BYTES: int = 2 << 30
CPU_BUDGET_FRACTION: float = 0.4
#: Fraction of a GPU's free memory the halo-crop tiles may use.
GPU_BUDGET_FRACTION: float = 0.6


@dataclass(frozen=True)
class HaloSpec:
    """What a fully convolutional predictor tells the halo-crop tiler.

    Attributes:
        halo: input voxels ``(hk, hj, hi)`` on each side that an output voxel
            depends on (its receptive field's reach), a multiple of ``multiple``.
        multiple: tile sizes and starts along ``(K, J, I)`` must be multiples of
            this (the pooling grid of a U-Net) for the tiles to see the same
            pooling cells as one whole-volume pass.
        bytes_per_voxel: forward-pass memory per input voxel of one item
            (activations included; an upper estimate).
    """

    halo: tuple[int, int, int]
    multiple: tuple[int, int, int]
    bytes_per_voxel: float

    def __post_init__(self) -> None:
        if any(h < 0 for h in self.halo) or any(m < 1 for m in self.multiple) or self.bytes_per_voxel <= 0:
            raise ValueError(f"invalid halo spec {self}")
        if any(h % m for h, m in zip(self.halo, self.multiple)):
            raise ValueError(f"halo {self.halo} must be a multiple of {self.multiple}")


@dataclass(frozen=True)
class Tile:
    """One halo-crop tile, in (padded) input voxels along ``(K, J, I)``:
    the network reads ``[read_start, read_stop)`` and the output of
    ``[core_start, core_stop)`` is kept."""

    core_start: tuple[int, int, int]
    core_stop: tuple[int, int, int]
    read_start: tuple[int, int, int]
    read_stop: tuple[int, int, int]

    @property
    def read_shape(self) -> tuple[int, int, int]:
        return tuple(b - a for a, b in zip(self.read_start, self.read_stop))  # type: ignore[return-value]


@dataclass(frozen=True)
class EngineConfig:
    """Settings of the patch engine.

    Attributes:
        patch_size: LR input patch ``(pk, pj, pi)`` in voxels (an int = cube)
            of the sliding strategy.
        overlap: fraction of a patch shared with its neighbour, in ``[0, 1)``
            (sliding strategy).
        batch_size: patches per predictor call (halved on out-of-memory);
            ``None`` = as many as :data:`CPU_BATCH_VOXELS` /
            :data:`GPU_BATCH_VOXELS` input voxels hold (:meth:`batch_for`).
        mixed_precision: autocast on CUDA (ignored on CPU).
        amp_dtype: the autocast precision, ``"float16"`` or ``"bfloat16"``.
        blend: ``"gaussian"`` (importance ``exp(-d^2 / 2 (sigma_scale*size)^2)``,
            as MONAI) or ``"constant"`` (plain averaging).
        sigma_scale: Gaussian sigma as a fraction of the output patch size.
        device_stitch_max_bytes: keep the stitching buffers on the compute
            device when they need at most this many bytes; else on the CPU.
        strategy: ``"auto"``, ``"halo"`` or ``"sliding"`` (module docstring).
        memory_budget: bytes the halo-crop tiles' forward passes may use
            (``None``: :func:`default_memory_budget`).
    """

    patch_size: int | tuple[int, int, int] = 32
    overlap: float = 0.5
    batch_size: int | None = None
    mixed_precision: bool = True
    blend: str = "gaussian"
    sigma_scale: float = 0.125
    device_stitch_max_bytes: int = 1 << 30
    strategy: str = "auto"
    memory_budget: int | None = None
    amp_dtype: str = "float16"

    def patch(self) -> tuple[int, int, int]:
        p = (self.patch_size,) * 3 if isinstance(self.patch_size, int) else tuple(self.patch_size)
        if len(p) != 3 or min(p) < 1:
            raise InputError(f"patch size must be one or three positive integers, got {self.patch_size}")
        return tuple(int(v) for v in p)  # type: ignore[return-value]

    def batch_for(self, device_type: str) -> int:
        """Patches per batch to start with on a device of this type (``"cpu"``,
        ``"cuda"``): ``batch_size``, else the device's voxel budget over the
        patch's voxels."""
        if self.batch_size is not None:
            return self.batch_size
        voxels = CPU_BATCH_VOXELS if device_type == "cpu" else GPU_BATCH_VOXELS
        return max(1, voxels // math.prod(self.patch()))

    def resolve_strategy(self, halo: HaloSpec | None) -> tuple[str, str]:
        """``(strategy, reason)`` for a predictor declaring ``halo`` (or none).

        Raises:
            InputError: ``halo`` asked for a predictor that cannot be tiled so.
        """
        if self.strategy == "sliding":
            return "sliding", "sliding windows asked for (--tiling sliding, or a patch size given)"
        if halo is None:
            if self.strategy == "halo":
                raise InputError("halo-crop tiling needs a fully convolutional network; this method's network "
                                 "sees each window as a whole: use the sliding strategy")
            return "sliding", "the network sees each window as a whole: sliding windows, blended"
        why = "asked for" if self.strategy == "halo" else "the network is fully convolutional"
        return "halo", f"halo-crop tiles ({why}): equal to one whole-volume pass"

    def validate(self) -> None:
        self.patch()
        if not 0.0 <= self.overlap < 1.0:
            raise InputError(f"overlap must be in [0, 1), got {self.overlap}")
        if self.batch_size is not None and self.batch_size < 1:
            raise InputError(f"batch size must be at least 1, got {self.batch_size}")
        if self.blend not in ("gaussian", "constant"):
            raise InputError(f"blend must be 'gaussian' or 'constant', got {self.blend!r}")
        if self.strategy not in STRATEGIES:
            raise InputError(f"tiling must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if self.memory_budget is not None and self.memory_budget < 1 << 20:
            raise InputError(f"memory budget must be at least 1 MiB, got {self.memory_budget} bytes")
        if self.amp_dtype not in AMP_DTYPES:
            raise InputError(f"mixed precision must be one of {', '.join(AMP_DTYPES)}, got {self.amp_dtype!r}")


def available_memory() -> int | None:
    """Bytes of memory available to new allocations (Linux ``MemAvailable``,
    else free physical pages), or ``None`` when unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, OSError, ValueError):
        return None


def default_memory_budget(device_type: str, free_device_bytes: int | None = None) -> int:
    """Bytes the halo-crop tiles may use on a device: on the CPU
    :data:`CPU_BUDGET_BYTES` or :data:`CPU_BUDGET_FRACTION` of the available
    memory, whichever is less; on a GPU :data:`GPU_BUDGET_FRACTION` of its free
    memory (``free_device_bytes``)."""
    if device_type == "cpu":
        avail = available_memory()
        return CPU_BUDGET_BYTES if avail is None else max(1 << 28, min(CPU_BUDGET_BYTES, int(avail * CPU_BUDGET_FRACTION)))
    if free_device_bytes is None:
        return CPU_BUDGET_BYTES
    return max(1 << 28, int(free_device_bytes * GPU_BUDGET_FRACTION))


def _cores(size: int, parts: int, multiple: int) -> list[tuple[int, int]]:
    """``[start, stop)`` of ``parts`` near-equal pieces of ``[0, size)`` with
    starts at multiples of ``multiple`` (``size`` is a multiple of it)."""
    cells = size // multiple
    bounds = [round(n * cells / parts) * multiple for n in range(parts + 1)]
    return [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def plan_tiles(shape: tuple[int, int, int], spec: HaloSpec, max_voxels: int) -> list[Tile]:
    """Halo-crop tiles covering ``shape`` (each size a multiple of
    ``spec.multiple``) whose read regions hold at most ``max_voxels`` voxels,
    with the fewest voxels read in total (ties: fewer tiles).  The whole
    volume is one tile when it fits; a tile never reads outside ``shape``.

    Raises:
        InputError: not even the smallest tile (one pooling cell plus its
            halo on every side) fits ``max_voxels``.
    """
    if any(n % m for n, m in zip(shape, spec.multiple)):
        raise ValueError(f"shape {shape} is not a multiple of {spec.multiple}")
    if math.prod(shape) <= max_voxels:
        return [Tile((0, 0, 0), shape, (0, 0, 0), shape)]
    cells = [n // m for n, m in zip(shape, spec.multiple)]
    # per axis and number of pieces: the longest read and the voxels read in all
    longest: list[list[int]] = []
    summed: list[list[int]] = []
    for axis in range(3):
        n, h, m = shape[axis], spec.halo[axis], spec.multiple[axis]
        longest.append([0])
        summed.append([0])
        for parts in range(1, cells[axis] + 1):
            pieces = _cores(n, parts, m)
            longest[axis].append(max(min(b + h, n) - max(a - h, 0) for a, b in pieces))
            summed[axis].append(sum(min(b + h, n) - max(a - h, 0) for a, b in pieces))
    best: tuple[int, int, tuple[int, int, int]] | None = None
    for nk in range(1, cells[0] + 1):
        for nj in range(1, cells[1] + 1):
            area = longest[0][nk] * longest[1][nj]
            if area > max_voxels:
                continue
            ni = next((n for n in range(1, cells[2] + 1) if area * longest[2][n] <= max_voxels), None)
            if ni is None:
                continue
            key = (summed[0][nk] * summed[1][nj] * summed[2][ni], nk * nj * ni, (nk, nj, ni))
            if best is None or key[:2] < best[:2]:
                best = key
    if best is None:
        need = math.prod(min(n, m + 2 * h) for n, m, h in zip(shape, spec.multiple, spec.halo))
        raise InputError(f"the memory budget holds {max_voxels} voxels per tile, but the smallest halo-crop tile "
                         f"needs {need}; raise the memory budget or use the sliding strategy")
    tiles = []
    per_axis = [_cores(n, p, m) for n, p, m in zip(shape, best[2], spec.multiple)]
    for ck in per_axis[0]:
        for cj in per_axis[1]:
            for ci in per_axis[2]:
                core = (ck, cj, ci)
                tiles.append(Tile(tuple(c[0] for c in core), tuple(c[1] for c in core),  # type: ignore[arg-type]
                                  tuple(max(c[0] - h, 0) for c, h in zip(core, spec.halo)),  # type: ignore[arg-type]
                                  tuple(min(c[1] + h, n) for c, h, n in zip(core, spec.halo, shape))))  # type: ignore[arg-type]
    return tiles


def window_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Start indices of windows of length ``patch`` covering ``[0, size)``.

    The stride is ``max(1, round(patch * (1 - overlap)))``; the last window is
    shifted back to end exactly at ``size`` (requires ``size >= patch``).
    """
    if size <= patch:
        return [0]
    stride = max(1, int(round(patch * (1.0 - overlap))))
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return starts
