"""The interface every super-resolution method implements.

``Method.enhance(volume, options, device, progress, cancel) -> Result``: the
input is a :class:`~SuperResMoELib.core.volume.Volume` (3D, or 4D with an
acquisition table) in the user's intensity units; the result holds the SR
volume in the same units on a finer grid that covers the same physical extent,
plus method-specific maps (expert/routing map, gating weights) on the SR grid
and an ``info`` dict describing what was done (expert chosen and why, device,
timings) for the GUI and the logs.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

import numpy as np

from SuperResMoELib.core.errors import InputError
from SuperResMoELib.core.options import DEFAULTS
from SuperResMoELib.core.types import PatchSize
from SuperResMoELib.core.progress import CancelToken, ProgressCallback, no_progress
from SuperResMoELib.core.volume import Grid, Volume

if TYPE_CHECKING:  # torch and scipy load only when a method runs
    from SuperResMoELib.engine.windows import EngineConfig

#: Largest magnitude accepted in an input volume: float32 processing (and the
#: squares inside losses and metrics) must not overflow.
MAX_ABS_INTENSITY = 1e30

#: Scale factors (s_i, s_j, s_k) when neither scale nor spacing is given:
#: x2 through-plane, the most common clinical case.
DEFAULT_SCALE: tuple[float, float, float] = (1.0, 1.0, 2.0)


@dataclass
class EnhanceOptions:
    """What the user asked for; ``None`` means "the method's default"
    (the defaults come from :data:`~SuperResMoELib.core.options.DEFAULTS`).

    Attributes:
        scale: factors ``(s_i, s_j, s_k)`` (or one number for all axes).
        target_spacing: output spacing in mm (one number = isotropic, or
            ``(i, j, k)``); used instead of ``scale`` by methods that resample
            to a target grid (cubic, REMIx).
        task: method-specific task name (e.g. SS-MoE ``aniso``/``iso``).
        checkpoint: path of a checkpoint to use instead of the bundled one.
        expert: force one expert (methods with experts).
        patch_size, overlap, batch_size, mixed_precision: patch engine settings.
        amp_dtype: the autocast precision on CUDA, ``"float16"`` or ``"bfloat16"``.
        tiling: ``"auto"``, ``"halo"`` or ``"sliding"``
            (:mod:`SuperResMoELib.engine.windows`).
        memory_budget: MiB the halo-crop tiles may use (``None``: the device's default).
        compile: run the network through ``torch.compile``.
        threads: torch CPU threads (``None``: the cores given to the process).
        nonfinite: ``"error"`` (default) or ``"zero"``: replace NaN/Inf by 0.
        extra: further method-specific options.
    """

    scale: float | Sequence[float] | None = None
    target_spacing: float | Sequence[float] | None = None
    task: str | None = None
    checkpoint: str | None = None
    expert: int | None = None
    patch_size: PatchSize | None = None
    overlap: float = DEFAULTS["overlap"]
    batch_size: int | None = None
    mixed_precision: bool = DEFAULTS["mixed_precision"]
    amp_dtype: str = DEFAULTS["amp_dtype"]
    tiling: str = DEFAULTS["tiling"]
    memory_budget: int | None = DEFAULTS["memory_budget"]
    compile: bool = DEFAULTS["compile"]
    threads: int | None = DEFAULTS["threads"]
    nonfinite: str = DEFAULTS["nonfinite"]
    extra: dict[str, Any] = field(default_factory=dict)

    def engine_config(self, default_patch: int | Sequence[int], patch: Sequence[int] | None = None,
                      default_batch: int | None = None) -> "EngineConfig":
        """The engine settings of these options (validated).

        Args:
            default_patch: the method's patch size when the user gave none.
            patch: the patch size to use whatever the user gave (a method that
                checked or rounded it).
            default_batch: the method's batch size when the user gave none
                (``None``: the engine's voxel budget).
        """
        from SuperResMoELib.engine.windows import EngineConfig

        p = patch if patch is not None else (self.patch_size if self.patch_size is not None else default_patch)
        patch_t = p if isinstance(p, int) else tuple(int(v) for v in p)
        budget = None if self.memory_budget is None else int(self.memory_budget) * 2**20
        batch = self.batch_size if self.batch_size is not None else default_batch
        # a patch size the user gave asks for patches: sliding windows, unless halo tiles are forced
        strategy = "sliding" if self.tiling == "auto" and self.patch_size is not None else self.tiling
        cfg = EngineConfig(patch_t, self.overlap, batch, self.mixed_precision,  # type: ignore[arg-type]
                           strategy=strategy, memory_budget=budget, amp_dtype=self.amp_dtype)
        cfg.validate()
        return cfg


@dataclass
class Result:
    """What a method returns.

    Attributes:
        volume: the SR volume, ``(K', J', I')`` or ``(N, K', J', I')``, user units.
        maps: named maps on the SR grid (e.g. ``"routing"``: expert per patch).
        info: JSON-serialisable facts about the run.
    """

    volume: Volume
    maps: dict[str, Volume] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


def prepare_array(volume: Volume, nonfinite: str = "error") -> np.ndarray:
    """The volume's voxels as float32 ``(K, J, I)`` or ``(N, K, J, I)``, checked.

    Integer and unsigned types are converted to float32 (so ``uint8`` 255 stays
    255.0); the input array is never modified.

    Raises:
        InputError: NaN/Inf voxels (unless ``nonfinite="zero"``) or values
            beyond :data:`MAX_ABS_INTENSITY`.
    """
    arr = np.asarray(volume.array)
    label = volume.name or "input"
    if arr.dtype.kind not in "fiub":
        raise InputError(f"{label}: unsupported voxel type {arr.dtype}")
    finite = np.isfinite(arr) if arr.dtype.kind == "f" else np.ones(arr.shape, bool)
    if arr.dtype.kind == "f" and finite.any():
        peak = float(np.abs(arr[finite]).max())
        if peak > MAX_ABS_INTENSITY:
            raise InputError(
                f"{label}: values up to {peak:.3g} do not fit in float32 processing "
                f"(limit {MAX_ABS_INTENSITY:.0e}); rescale the image"
            )
    out = arr.astype(np.float32)  # always a copy: the caller's array is never touched
    if not finite.all():
        if nonfinite != "zero":
            first = tuple(int(v) for v in np.argwhere(~finite)[0])
            raise InputError(
                f"{label}: {int((~finite).sum())} voxel(s) are NaN or Inf (first at array index "
                f"{first}); fix the image or pass --nonfinite zero to replace them by 0"
            )
        out[~finite] = 0.0
    return out


def scale_factors(options: EnhanceOptions, default: Sequence[float] = DEFAULT_SCALE) -> np.ndarray:
    """``(s_i, s_j, s_k)`` from ``options.scale`` (a number or three), else ``default``."""
    s = default if options.scale is None else options.scale
    f = np.broadcast_to(np.asarray(s, dtype=np.float64), (3,)).copy()
    if not np.all(np.isfinite(f)) or np.any(f <= 0):
        raise InputError(f"scale factors must be positive numbers, got {s}")
    return f


def output_grid(grid: Grid, options: EnhanceOptions, default_scale: Sequence[float] = DEFAULT_SCALE) -> Grid:
    """The SR grid: from ``target_spacing`` (mm, along the input's own axes)
    when given, else from the scale factors; the physical extent is kept."""
    from SuperResMoELib.core.geometry import scaled_grid

    if options.target_spacing is not None:
        spacing = np.broadcast_to(np.asarray(options.target_spacing, dtype=np.float64), (3,))
        if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
            raise InputError(f"target spacing must be positive, got {options.target_spacing}")
        return scaled_grid(grid, grid.spacing / spacing)
    return scaled_grid(grid, scale_factors(options, default_scale))


def grid_info(source: Grid, target: Grid) -> dict[str, list]:
    """Input and output sizes and spacings for ``Result.info``, all in one
    order, IJK (as every message): ``input_size_ijk``, ``input_spacing_ijk``,
    ``output_size_ijk``, ``output_spacing_ijk``."""
    return {"input_size_ijk": list(source.size_ijk), "input_spacing_ijk": source.spacing.round(6).tolist(),
            "output_size_ijk": list(target.size_ijk), "output_spacing_ijk": target.spacing.round(6).tolist()}


class Method(abc.ABC):
    """A super-resolution method.  Subclasses set the class attributes and
    implement :meth:`enhance`; :mod:`SuperResMoELib.methods` registers them."""

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    description: ClassVar[str] = ""
    tasks: ClassVar[tuple[str, ...]] = ()
    needs_checkpoint: ClassVar[bool] = False
    default_scale: ClassVar[tuple[float, float, float]] = DEFAULT_SCALE
    #: Sample data the demo runs the method on: ``"t1"``, ``"mudi"`` or ``"any"``.
    sample_kind: ClassVar[str] = "t1"
    #: Factors ``(s_i, s_j, s_k)`` of the degradation ``--simulate`` applies when
    #: the method's output grid is the input's own (``None``: ask for ``--scale``).
    simulate_factors: ClassVar[tuple[float, float, float] | None] = None

    def output_grid(self, volume: Volume, options: EnhanceOptions | None = None) -> Grid:
        """The grid :meth:`enhance` will produce for ``volume`` (known before running,
        so a reference can be checked up front)."""
        return output_grid(volume.grid, options or EnhanceOptions(), self.default_scale)

    @abc.abstractmethod
    def enhance(
        self,
        volume: Volume,
        options: EnhanceOptions | None = None,
        device: str = "auto",
        progress: ProgressCallback = no_progress,
        cancel: CancelToken | None = None,
    ) -> Result:
        """Super-resolve ``volume``; see the module docstring."""
