"""REMIx inference (Morell-Ortega et al., MIDL 2024; paper 002) and its
"1 network" baseline.

Any input spacing and orientation goes to the target grid: the input's own
axes, the same physical extent, ``target_spacing`` mm voxels (default 1 mm
isotropic).  The input is first resampled onto that grid with cubic splines;
a residual 3D U-Net (:class:`~SuperResMoELib.nets.unet3d.ResidualUNet3D`)
then adds its correction, patch by patch through the shared engine.

Expert choice (``remix``): the input's voxel volume ``v = s_i * s_j * s_k``
(mm³) picks expert ``clamp(floor(v + 0.5), 1, 7)`` - the bins of the paper's
seven resolution experts; the user may force another.  ``remix1`` runs the
single network trained on all resolutions.

Intensities: each frame is divided by its robust maximum (the 99.5th
percentile of its positive voxels after resampling; :mod:`..intensity`), as
in training, and multiplied back, so the output keeps the input's units.
A frame with no negative voxel (a magnitude image) gets no negative output
voxel either: the result is clamped at zero (``info["clamped_at_zero"]``,
one flag per frame), since a correction must not turn background negative.

Checkpoints: manifest ``method="remix"``, ``task="t1"``; ``architecture =
{"kind": "experts" | "single", "unet": UNet3DConfig fields, "experts": [1..7]}``;
tensors ``expert<v>.<param>`` (kind ``experts``, all seven in one file) or
``net.<param>`` (kind ``single``).
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from SuperResMoELib.core.errors import CheckpointError, InputError
from SuperResMoELib.core.progress import CancelToken, ProgressCallback, no_progress
from SuperResMoELib.core.volume import Grid, Volume
from SuperResMoELib.methods.base import EnhanceOptions, Result, output_grid, prepare_array
from SuperResMoELib.methods.checkpointed import CheckpointedMethod, architecture_config, network_kind

if TYPE_CHECKING:  # torch loads only when a method runs
    import torch

    from SuperResMoELib.checkpoints.store import Manifest
    from SuperResMoELib.nets.unet3d import UNet3DConfig

#: Manifest method and task of REMIx checkpoints.
CHECKPOINT_METHOD = "remix"
TASK = "t1"
#: Network kinds: all seven experts in one file, or the single network.
KINDS: tuple[str, ...] = ("experts", "single")
#: Expert bins: voxel volumes (mm³) 1..7.
EXPERTS: tuple[int, ...] = tuple(range(1, 8))
#: Output spacing (mm) when the user gives neither a spacing nor a scale.
DEFAULT_TARGET_SPACING: float = 1.0
#: Default patch side (voxels on the target grid); rounded up to the U-Net's multiple.
DEFAULT_PATCH: int = 64
#: Default intensity normalisation (see the module docstring).
DEFAULT_INTENSITY: dict[str, Any] = {"kind": "robust_max", "percentile": 99.5}


# ------------------------------------------------------------------ experts
def expert_for_voxel_volume(voxel_volume_mm3: float) -> int:
    """The expert of a voxel volume: rounded to the nearest mm³ (halves up),
    clamped to 1..7."""
    v = float(voxel_volume_mm3)
    if not math.isfinite(v) or v <= 0:
        raise InputError(f"voxel volume must be a positive number of mm^3, got {voxel_volume_mm3!r}")
    return int(min(max(math.floor(v + 0.5), EXPERTS[0]), EXPERTS[-1]))


def choose_expert(spacing: np.ndarray | tuple[float, float, float], forced: int | None = None) -> tuple[int, dict]:
    """``(expert, why)`` for an input of IJK ``spacing`` (mm).

    ``why`` holds the voxel volume, the automatic choice, whether the user
    forced the expert, and a one-line ``reason`` for the log and the GUI.

    Raises:
        InputError: a forced expert outside 1..7.
    """
    sp = np.asarray(spacing, dtype=np.float64)
    v = float(np.prod(sp))
    auto = expert_for_voxel_volume(v)
    dims = "x".join(f"{s:.2f}" for s in sp)
    rule = f"input voxel {dims} mm = {v:.2f} mm^3"
    if forced is None:
        reason = (f"{rule} -> expert {auto} (nearest whole mm^3, clamped to "
                  f"{EXPERTS[0]}..{EXPERTS[-1]})")
        return auto, {"expert": auto, "automatic": auto, "forced": False, "voxel_volume_mm3": v, "reason": reason}
    try:
        e = int(forced)
    except (TypeError, ValueError):
        e = -1
    if e not in EXPERTS or (isinstance(forced, float) and forced != e):
        raise InputError(f"REMIx expert must be one of {list(EXPERTS)} (mm^3 bins), got {forced!r}")
    reason = f"expert {e} chosen by the user ({rule} would pick expert {auto})"
    return e, {"expert": e, "automatic": auto, "forced": True, "voxel_volume_mm3": v, "reason": reason}


# -------------------------------------------------------------- checkpoints
def remix_manifest(kind: str, cfg: UNet3DConfig, **extra: Any) -> Manifest:
    """The manifest of a REMIx checkpoint (``kind`` = ``"experts"`` or ``"single"``).

    ``extra`` goes into the manifest's fields (``training_data``, ``metrics``,
    ``description``...) or, for unknown names, its ``extra``.
    """
    from SuperResMoELib.checkpoints.store import Manifest

    if kind not in KINDS:
        raise CheckpointError(f"unknown REMIx network kind {kind!r}; choose one of {', '.join(KINDS)}")
    known = {f.name for f in dataclasses.fields(Manifest)}
    kwargs = {k: v for k, v in extra.items() if k in known}
    unknown = {k: v for k, v in extra.items() if k not in known}
    if unknown:
        kwargs["extra"] = {**unknown, **kwargs.get("extra", {})}
    arch: dict[str, Any] = {"kind": kind, "unet": cfg.to_dict()}
    if kind == "experts":
        arch["experts"] = list(EXPERTS)
    return Manifest(method=CHECKPOINT_METHOD, task=TASK, architecture=arch, scale_factors=[1.0, 1.0, 1.0],
                    intensity=dict(DEFAULT_INTENSITY), **kwargs)


def unet_config(manifest: Manifest) -> UNet3DConfig:
    """The U-Net configuration recorded in a manifest.

    Raises:
        CheckpointError: missing or invalid ``architecture["unet"]``.
    """
    from SuperResMoELib.nets.unet3d import UNet3DConfig

    return architecture_config(manifest, "unet", UNet3DConfig)


def build_remix_network(manifest: Manifest) -> torch.nn.ModuleDict:
    """``ModuleDict`` ``{"expert1".."expert7"}`` or ``{"net"}`` of untrained U-Nets."""
    import torch

    from SuperResMoELib.nets.unet3d import ResidualUNet3D

    kind = network_kind(manifest)
    cfg = unet_config(manifest)
    if kind == "single":
        return torch.nn.ModuleDict({"net": ResidualUNet3D(cfg)})
    if kind != "experts":
        raise CheckpointError(f"manifest architecture kind {kind!r} is not one of {', '.join(KINDS)}")
    experts = manifest.architecture.get("experts")
    if list(experts or []) != list(EXPERTS):
        raise CheckpointError(f"an experts checkpoint must hold experts {list(EXPERTS)}, its manifest lists {experts!r}")
    return torch.nn.ModuleDict({f"expert{v}": ResidualUNet3D(cfg) for v in EXPERTS})


def intensity_percentile(manifest: Manifest) -> float:
    """The robust-maximum percentile of the manifest's intensity normalisation.

    Raises:
        CheckpointError: an intensity normalisation REMIx does not know.
    """
    spec = manifest.intensity
    if spec.get("kind") != "robust_max":
        raise CheckpointError(f"unsupported intensity normalisation {spec.get('kind')!r} (expected 'robust_max')")
    try:
        q = float(spec.get("percentile", DEFAULT_INTENSITY["percentile"]))
    except (TypeError, ValueError):
        q = float("nan")
    if not 0 < q <= 100:
        raise CheckpointError(f"manifest intensity percentile must be in (0, 100], got {spec.get('percentile')!r}")
    return q


# ------------------------------------------------------------------ predictor
class _Predictor:
    """``(B, 1, p, p, p)`` normalised patches -> ``(B, 1, p, p, p)``; patches
    without signal (max below ``floor``) are returned unchanged."""

    def __init__(self, net: torch.nn.Module, floor: float = 1e-3) -> None:
        self.net = net
        self.floor = floor
        self.skipped = 0

    def to(self, device: torch.device) -> None:
        self.net.to(device)

    def __call__(self, patches: torch.Tensor) -> torch.Tensor:
        import torch

        x = patches.to(torch.float32)
        b = x.shape[0]
        keep = x.reshape(b, -1).amax(dim=1) > self.floor
        out = x.clone()
        if bool(keep.any()):
            idx = keep.nonzero(as_tuple=True)[0]
            out[idx] = self.net(x[idx]).to(torch.float32)
        self.skipped += int(b - int(keep.sum()))
        return out


# --------------------------------------------------------------------- method
class REMIxMethod(CheckpointedMethod):
    """REMIx: seven resolution experts; the input's voxel volume picks one."""

    name = "remix"
    title = "REMIx"
    description = ("Resolution enhancement through mixture of experts (Morell-Ortega et al. 2024): any input "
                   "resolution to 1 mm isotropic; one of seven residual 3D U-Nets, picked by the voxel volume.")
    tasks = (TASK,)
    sample_kind = "t1"
    checkpoint_method = CHECKPOINT_METHOD
    family_title = "a REMIx"
    kinds = KINDS
    kind: ClassVar[str] = "experts"

    def method_for_kind(self, kind: str) -> str:
        return {"experts": "remix", "single": "remix1"}[kind]

    def build_network(self, manifest: Manifest) -> torch.nn.Module:
        return build_remix_network(manifest)

    def output_grid(self, volume: Volume, options: EnhanceOptions | None = None) -> Grid:
        """The target grid: ``options.extra["target_grid"]`` (a :class:`Grid`, e.g.
        a reference scan's, as the paper's MNI space) when given; else the
        input's axes and extent with ``target_spacing`` mm voxels (default
        :data:`DEFAULT_TARGET_SPACING`), or ``scale`` when given."""
        opts = options or EnhanceOptions()
        given = opts.extra.get("target_grid") if opts.extra else None
        if given is not None:
            if not isinstance(given, Grid):
                raise InputError(f"target_grid must be a Grid, got {type(given).__name__}")
            return given
        if opts.target_spacing is None and opts.scale is None:
            opts = dataclasses.replace(opts, target_spacing=DEFAULT_TARGET_SPACING)
        return output_grid(volume.grid, opts)

    def _patch(self, opts: EnhanceOptions, cfg: UNet3DConfig) -> tuple[int, int, int]:
        m = cfg.multiple
        p = opts.patch_size if opts.patch_size is not None else DEFAULT_PATCH
        sizes = (p,) * 3 if isinstance(p, int) else tuple(int(v) for v in p)
        if len(sizes) != 3 or min(sizes) < m:
            raise InputError(f"patch size must be one or three sizes of at least {m} voxels, got {p!r}")
        return tuple(int(math.ceil(s / m) * m) for s in sizes)  # type: ignore[return-value]

    def select(self, net: torch.nn.Module, spacing: np.ndarray, opts: EnhanceOptions) -> tuple[Any, dict]:
        """The network to run and the facts of the choice."""
        if self.kind == "single":
            if opts.expert is not None:
                raise InputError("remix1 is a single network without experts; do not give an expert "
                                 "(use --method remix to choose one)")
            v = float(np.prod(spacing))
            return net["net"], {"expert": None, "voxel_volume_mm3": v, "forced": False,
                                "reason": f"single network for every resolution (input {v:.2f} mm^3)"}
        e, why = choose_expert(spacing, opts.expert)
        return net[f"expert{e}"], why

    def enhance(
        self,
        volume: Volume,
        options: EnhanceOptions | None = None,
        device: str = "auto",
        progress: ProgressCallback = no_progress,
        cancel: CancelToken | None = None,
    ) -> Result:
        """Resample each frame to the target grid and refine it (see the module docstring).

        Raises:
            InputError: bad expert, spacing or patch size.
            CheckpointError: no usable checkpoint.
            CancelledError: ``cancel`` was set.
        """
        import torch

        from SuperResMoELib.engine.devices import resolve_device
        from SuperResMoELib.core.geometry import resample_array
        from SuperResMoELib.engine.sliding import run_patches
        from SuperResMoELib.core.intensity import robust_max
        from SuperResMoELib.engine.windows import EngineConfig

        opts = options or EnhanceOptions()
        cancel = cancel or CancelToken()
        t0 = time.perf_counter()
        arr = prepare_array(volume, opts.nonfinite)
        target = self.output_grid(volume, opts)
        if self.kind == "experts":  # a bad forced expert fails before any work
            choose_expert(volume.grid.spacing, opts.expert)
        dev = resolve_device(device)
        cancel.check()
        progress("enhance", 0.0, f"loading the {self.title} checkpoint")
        nets, path, manifest = self.load(TASK, opts, dev)
        cfg = unet_config(manifest)
        q = intensity_percentile(manifest)
        net, why = self.select(nets, volume.grid.spacing, opts)
        config = EngineConfig(self._patch(opts, cfg), opts.overlap, opts.batch_size, opts.mixed_precision)
        config.validate()
        predictor = _Predictor(net)
        frames = arr.reshape((-1,) + volume.spatial_shape)
        n_frames = len(frames)
        non_negative = [bool(np.min(f) >= 0) for f in frames]
        out = np.empty((n_frames,) + target.shape, np.float32)
        events: list[str] = []
        scales: list[float] = []
        n_patches = 0
        for n, frame in enumerate(frames):
            cancel.check()
            prefix = f"frame {n + 1}/{n_frames}: " if n_frames > 1 else ""
            progress("enhance", n / n_frames, prefix + "cubic resampling to the target grid")
            x = resample_array(frame, volume.grid, target, "cubic")
            s = robust_max(x, q)
            scales.append(s)
            if s <= 0:
                out[n] = x
                events.append(f"{prefix}no positive voxels: the cubic resampling is returned unchanged")
                continue

            def frame_progress(stage: str, fraction: float, message: str = "", _n: int = n, _p: str = prefix) -> None:
                progress("enhance", (_n + min(max(fraction, 0.0), 1.0)) / n_frames, _p + message)

            res = run_patches((x / s)[None], predictor, (1, 1, 1), config, dev, frame_progress, cancel)
            out[n] = res.image[0] * s
            if non_negative[n]:  # magnitude images: no correction may push a voxel below zero
                np.maximum(out[n], 0.0, out=out[n])
            events += [prefix + e for e in res.events]
            if res.device != str(dev) or res.batch_size != config.batch_size:
                dev = torch.device(res.device)
                config = dataclasses.replace(config, batch_size=res.batch_size)
            n_patches += res.n_patches
        label = volume.name or "input"
        sr = volume.with_array(out.reshape(arr.shape[:-3] + target.shape), target.ijk_to_ras,
                               name=f"{label}_{self.name}")
        progress("enhance", 1.0, why["reason"])
        info = {
            "method": self.name, "kind": self.kind, "task": TASK, "checkpoint": str(path), "device": str(dev),
            "events": events, "seconds": time.perf_counter() - t0, "frames": n_frames, "patches": n_patches,
            "patches_skipped": predictor.skipped, "patch_size": list(config.patch()),
            "batch_size": int(config.batch_for(dev.type)), "intensity_scales": scales,
            "input_spacing": volume.grid.spacing.round(6).tolist(), "clamped_at_zero": non_negative, **why,
            "output_shape": list(target.shape), "output_spacing": target.spacing.round(6).tolist(),
        }
        return Result(sr, {}, info)


class REMIxSingleMethod(REMIxMethod):
    """The "1 network" baseline of the REMIx paper: one U-Net for all resolutions."""

    name = "remix1"
    title = "REMIx 1-network"
    description = "REMIx baseline: one residual 3D U-Net trained on all resolutions (no experts)."
    kind = "single"


__all__ = ["REMIxMethod", "REMIxSingleMethod", "build_remix_network", "choose_expert", "expert_for_voxel_volume",
           "remix_manifest", "unet_config"]
