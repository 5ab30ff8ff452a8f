"""Window layout of the patch engine: its settings and where windows start.

Kept free of torch so that options can be validated (and the command line can
start) without loading it.
"""

from __future__ import annotations

from dataclasses import dataclass

from SuperResMoELib.core.errors import InputError


#: Default patches per batch on the CPU and on a GPU (``batch_size=None``).
CPU_BATCH_SIZE = 2
GPU_BATCH_SIZE = 8


@dataclass(frozen=True)
class EngineConfig:
    """Settings of the sliding-window engine.

    Attributes:
        patch_size: LR input patch ``(pk, pj, pi)`` in voxels (an int = cube).
        overlap: fraction of a patch shared with its neighbour, in ``[0, 1)``.
        batch_size: patches per predictor call (halved on out-of-memory);
            ``None`` = :data:`CPU_BATCH_SIZE` on the CPU, :data:`GPU_BATCH_SIZE`
            on a GPU (on the CPU, larger batches fall out of cache and run
            slower: see ``benchmarks/README.md``).
        mixed_precision: float16 autocast on CUDA (ignored on CPU).
        blend: ``"gaussian"`` (importance ``exp(-d^2 / 2 (sigma_scale*size)^2)``,
            as MONAI) or ``"constant"`` (plain averaging).
        sigma_scale: Gaussian sigma as a fraction of the output patch size.
        device_stitch_max_bytes: keep the stitching buffers on the compute
            device when they need at most this many bytes; else on the CPU.
    """

    patch_size: int | tuple[int, int, int] = 32
    overlap: float = 0.5
    batch_size: int | None = None
    mixed_precision: bool = True
    blend: str = "gaussian"
    sigma_scale: float = 0.125
    device_stitch_max_bytes: int = 1 << 30

    def patch(self) -> tuple[int, int, int]:
        p = (self.patch_size,) * 3 if isinstance(self.patch_size, int) else tuple(self.patch_size)
        if len(p) != 3 or min(p) < 1:
            raise InputError(f"patch size must be one or three positive integers, got {self.patch_size}")
        return tuple(int(v) for v in p)  # type: ignore[return-value]

    def batch_for(self, device_type: str) -> int:
        """The batch size to start with on a device of this type (``"cpu"``, ``"cuda"``)."""
        if self.batch_size is not None:
            return self.batch_size
        return CPU_BATCH_SIZE if device_type == "cpu" else GPU_BATCH_SIZE

    def validate(self) -> None:
        self.patch()
        if not 0.0 <= self.overlap < 1.0:
            raise InputError(f"overlap must be in [0, 1), got {self.overlap}")
        if self.batch_size is not None and self.batch_size < 1:
            raise InputError(f"batch size must be at least 1, got {self.batch_size}")
        if self.blend not in ("gaussian", "constant"):
            raise InputError(f"blend must be 'gaussian' or 'constant', got {self.blend!r}")


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
