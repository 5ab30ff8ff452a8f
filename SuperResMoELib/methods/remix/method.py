"""REMIx inference (Morell-Ortega et al., MIDL 2024; paper 002) and its
"1 network" baseline.

Any input spacing and orientation goes to the target grid: the input's own
axes, the same physical extent, ``target_spacing`` mm voxels (default 1 mm
isotropic).  The input is first resampled onto that grid with cubic splines;
a residual 3D U-Net (:class:`~SuperResMoELib.nets.unet3d.ResidualUNet3D`)
then adds its correction, patch by patch through the shared driver
(:mod:`SuperResMoELib.methods.driver`).

Expert choice (``remix``, :mod:`.experts`): the input's voxel volume picks one
of the seven resolution experts; the user may force another.  Checkpoints of
the anisotropy-aware router (beyond the paper) send isotropic inputs to their
isotropic expert instead (``info["expert"] = "iso"``).  ``remix1`` runs
the single network trained on all resolutions.  One measured exception: an
isotropic low-resolution input goes to the single network when the experts
were trained on thick slices only (:func:`~.experts.single_network_reason`;
``info["routed_to"] = "remix1"`` and the reason say so).  The single network
is the one beside a user-given experts checkpoint (``<name>_single``) or, for
the checkpoint found in the search folders, the first single-network
checkpoint there; without one the experts run and a warning says why.

Intensities: each frame is divided by its robust maximum (the 99.5th
percentile of its positive voxels after resampling;
:mod:`SuperResMoELib.core.intensity`), as in training, and multiplied back, so
the output keeps the input's units.  Patches whose normalised maximum is below
:data:`NO_SIGNAL_FLOOR` (background) skip the network.  A frame with no
negative voxel (a magnitude image) gets no negative output voxel either: the
result is clamped at zero (``info["clamped_at_zero"]``, one flag per frame),
since a correction must not turn background negative.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from SuperResMoELib.core.errors import CheckpointError, InputError
from SuperResMoELib.core.progress import CancelToken, ProgressCallback, no_progress
from SuperResMoELib.core.volume import Grid, Volume
from SuperResMoELib.methods.base import EnhanceOptions, Result
from SuperResMoELib.methods.checkpointed import CheckpointedMethod
from SuperResMoELib.methods.remix.checkpoint import (
    CHECKPOINT_METHOD,
    KINDS,
    TASK,
    build_remix_network,
    has_isotropic_expert,
    intensity_percentile,
    unet_config,
)
from SuperResMoELib.methods.remix.experts import (
    ISOTROPIC_EXPERT,
    ISOTROPIC_SINGLE_FROM_MM3,
    choose_expert,
    expert_key,
    single_network_reason,
)
from SuperResMoELib.methods.resampled import normalised_on_target, target_grid

if TYPE_CHECKING:  # torch loads only when a method runs
    import torch

    from SuperResMoELib.checkpoints.manifest import Manifest
    from SuperResMoELib.methods.driver import FramePlan, FramesOutput
    from SuperResMoELib.nets.unet3d import UNet3DConfig

#: ``options.extra["routing"]``: ``"auto"`` (default; the measured single-network
#: exception and a checkpoint's isotropic expert apply) or ``"voxel-volume"`` (the
#: paper's rule only: the evaluation's "Experts (7 models)" rows, so the experts
#: are measured as experts).
ROUTINGS: tuple[str, ...] = ("auto", "voxel-volume")
#: ``options.extra`` that keeps the paper's voxel-volume rule on every input.
PAPER_ROUTING: dict[str, str] = {"routing": ROUTINGS[1]}
#: Output spacing (mm) when the user gives neither a spacing nor a scale.
DEFAULT_TARGET_SPACING: float = 1.0
#: Default patch side (voxels on the target grid); rounded up to the U-Net's multiple.
DEFAULT_PATCH: int = 64
#: Patches whose largest normalised voxel is at most this have no signal: they
#: skip the network and come back unchanged (the cubic resampling).
NO_SIGNAL_FLOOR: float = 1e-3


class _Predictor:
    """Frame predictor: ``(M, 1, k, j, i)`` normalised patches or tiles -> the same
    shape; items without signal (max at most ``floor``) are returned unchanged.

    The U-Net is fully convolutional, so it declares a
    :class:`~SuperResMoELib.engine.windows.HaloSpec` (its receptive field's
    reach rounded up to its pooling multiple, and its memory per voxel): the
    engine then runs it on halo-crop tiles, exactly as one whole-volume pass.
    The network runs in the channels-last memory layout (on 2 CPU cores 1.6x
    faster and 30 % smaller than the default layout; ``benchmarks/README.md``).
    """

    def __init__(self, net: torch.nn.Module, cfg: UNet3DConfig, floor: float = NO_SIGNAL_FLOOR) -> None:
        from SuperResMoELib.engine.windows import HaloSpec

        self.net = net
        self.floor = floor
        self.skipped = 0
        m, h = cfg.multiple, cfg.halo
        self.halo_spec = None if h < 0 else HaloSpec((h,) * 3, (m,) * 3, cfg.bytes_per_voxel(channels_last=True))

    def to(self, device: torch.device) -> None:
        import torch

        self.net.to(device)
        self.net.to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]

    def __call__(self, items: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        import torch

        x = items.to(torch.float32)
        m = x.shape[0]
        keep = x.reshape(m, -1).amax(dim=1) > self.floor
        n_keep = int(keep.sum())
        self.skipped += m - n_keep
        if n_keep == m:
            return self.net(x.contiguous(memory_format=torch.channels_last_3d)).to(torch.float32).contiguous()
        out = x.clone()
        if n_keep:
            idx = keep.nonzero(as_tuple=True)[0]
            y = self.net(x[idx].contiguous(memory_format=torch.channels_last_3d))
            out[idx] = y.to(torch.float32)
        return out


class REMIxMethod(CheckpointedMethod):
    """REMIx: seven resolution experts; the input's voxel volume picks one."""

    name = "remix"
    title = "REMIx"
    description = ("Resolution enhancement through mixture of experts (Morell-Ortega et al. 2024): any input "
                   "resolution to 1 mm isotropic; one of seven residual 3D U-Nets, picked by the voxel volume "
                   f"(isotropic inputs of {ISOTROPIC_SINGLE_FROM_MM3:g} mm^3 and more: the 1-network baseline, "
                   "measured better there).")
    tasks = (TASK,)
    sample_kind = "t1"
    checkpoint_method = CHECKPOINT_METHOD
    family_title = "a REMIx"
    kinds = KINDS
    kind: ClassVar[str] = "experts"
    #: ``--simulate`` on a 1 mm scan: a 1x1x5 mm thick-slice acquisition (the clinical case REMIx is for).
    simulate_factors = (1.0, 1.0, 5.0)

    def __init__(self) -> None:
        super().__init__()
        self._single: REMIxSingleMethod | None = None

    def method_for_kind(self, kind: str) -> str:
        return {"experts": "remix", "single": "remix1"}[kind]

    def build_network(self, manifest: Manifest) -> torch.nn.Module:
        return build_remix_network(manifest)

    def output_grid(self, volume: Volume, options: EnhanceOptions | None = None) -> Grid:
        """The target grid (:func:`~SuperResMoELib.methods.resampled.target_grid`;
        default :data:`DEFAULT_TARGET_SPACING` mm isotropic)."""
        return target_grid(volume, options, DEFAULT_TARGET_SPACING)

    def _patch(self, opts: EnhanceOptions, cfg: UNet3DConfig) -> tuple[int, int, int]:
        m = cfg.multiple
        p = opts.patch_size if opts.patch_size is not None else DEFAULT_PATCH
        sizes = (p,) * 3 if isinstance(p, int) else tuple(int(v) for v in p)
        if len(sizes) != 3 or min(sizes) < m:
            raise InputError(f"patch size must be one or three sizes of at least {m} voxels, got {p!r}")
        return tuple(int(math.ceil(s / m) * m) for s in sizes)  # type: ignore[return-value]

    def select(self, net: torch.nn.ModuleDict, spacing: np.ndarray, opts: EnhanceOptions) -> tuple[Any, dict]:
        """The network to run and the facts of the choice."""
        if self.kind == "single":
            v = float(np.prod(spacing))
            return net["net"], {"expert": None, "voxel_volume_mm3": v, "forced": False,
                                "reason": f"single network for every resolution (input {v:.2f} mm^3)"}
        routing = (opts.extra or {}).get("routing", ROUTINGS[0])
        router = expert_key(ISOTROPIC_EXPERT) in net and routing != PAPER_ROUTING["routing"]
        e, why = choose_expert(spacing, opts.expert, isotropic_expert=router)
        return net[expert_key(e)], why

    def enhance(self, volume: Volume, options: EnhanceOptions | None = None, device: str = "auto",
                progress: ProgressCallback = no_progress, cancel: CancelToken | None = None) -> Result:
        """Super-resolve ``volume`` with the chosen expert, or with the single
        network where the measured exception applies (module docstring)."""
        opts = options or EnhanceOptions()
        routed = self._single_network_route(volume, opts) if self.kind == "experts" else None
        if routed is None:
            return super().enhance(volume, opts, device, progress, cancel)
        single, single_opts, reason, warning, experts = routed
        if single is None:
            result = super().enhance(volume, opts, device, progress, cancel)
            result.info["warnings"] = [*result.info.get("warnings", []), warning]
            return result
        result = single.enhance(volume, single_opts, device, progress, cancel)
        label = volume.name or "input"
        result.volume = result.volume.with_array(result.volume.array, result.volume.ijk_to_ras,
                                                 name=f"{label}_{self.name}")
        result.info.update(method=self.name, routed_to=single.name, reason=reason, forced=False,
                           experts_checkpoint=str(experts))
        return result

    def _single_network_route(self, volume: Volume, opts: EnhanceOptions
                              ) -> tuple[REMIxSingleMethod | None, EnhanceOptions, str, str, Path] | None:
        """``(single method or None, its options, reason, warning, experts
        checkpoint)`` when the input goes to the single network; ``None`` when
        an expert runs."""
        from dataclasses import replace

        from SuperResMoELib.checkpoints.store import checkpoint_paths, read_manifest

        routing = (opts.extra or {}).get("routing", "auto")
        if routing not in ROUTINGS:
            raise InputError(f"REMIx routing must be one of {', '.join(ROUTINGS)}, got {routing!r}")
        if opts.expert is not None or routing == PAPER_ROUTING["routing"]:
            return None
        path = self.checkpoint_for(TASK, opts)
        manifest = read_manifest(path)
        if has_isotropic_expert(manifest):  # its own isotropic expert takes the isotropic inputs
            return None
        reason = single_network_reason(volume.grid.spacing, manifest.training_data)
        if reason is None:
            return None
        if self._single is None:  # kept, so its network stays cached between calls
            self._single = REMIxSingleMethod()
        single = self._single
        try:
            if opts.checkpoint:  # the single network exported beside the user's experts, never another one
                beside = checkpoint_paths(path.with_name(f"{path.stem}_single"))[0]
                single_opts = replace(opts, checkpoint=str(beside))
                single.checkpoint_for(TASK, single_opts)
            else:
                single_opts = replace(opts, checkpoint=None)
                single.find_checkpoint(TASK)
        except CheckpointError as exc:
            return None, opts, reason, (f"{reason.split(':')[0]}: the single network would be used, but none "
                                        f"was found ({str(exc).split(';')[0][:200]}); ran the experts"), path
        return single, single_opts, reason, "", path

    def check(self, volume: Volume, options: EnhanceOptions) -> str:
        """Refuses a bad forced expert (or any expert for ``remix1``) before any work."""
        if self.kind == "experts":
            choose_expert(volume.grid.spacing, options.expert)
        elif options.expert is not None:
            raise InputError("remix1 is a single network without experts; do not give an expert "
                             "(use --method remix to choose one)")
        return TASK

    def plan(self, volume: Volume, frames: np.ndarray, target: Grid, task: str, options: EnhanceOptions,
             net: Any, manifest: Manifest, device: torch.device, progress: ProgressCallback,
             cancel: CancelToken) -> FramePlan:
        """Each frame resampled to the target grid and normalised; frames without
        positive voxels keep their cubic resampling."""
        from SuperResMoELib.methods.driver import FramePlan

        cfg = unet_config(manifest)
        q = intensity_percentile(manifest)
        chosen, why = self.select(net, volume.grid.spacing, options)
        config = options.engine_config(DEFAULT_PATCH, patch=self._patch(options, cfg))
        n_frames = len(frames)
        # one target-grid array serves as the resampling, the engine input (normalised in
        # place) and the output (the engine writes each group back once it is done with it)
        resampled, scales, events = normalised_on_target(frames, volume.grid, target, q, progress, cancel)
        run_rows = np.array([n for n, s in enumerate(scales) if s > 0], dtype=np.int64)
        every = len(run_rows) == n_frames
        inputs = resampled if every else resampled[run_rows]  # a copy only when some frames are skipped
        non_negative = [bool(np.min(f) >= 0) for f in frames]
        predictor = _Predictor(chosen, cfg)

        def finish(run: FramesOutput) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, Any]]:
            out = resampled
            for row, n in enumerate(run_rows):
                if not every:
                    out[n] = run.image[row]
                out[n] *= scales[n]
                if non_negative[n]:  # magnitude images: no correction may push a voxel below zero
                    np.maximum(out[n], 0.0, out=out[n])
            info = {"patches_skipped": predictor.skipped, "intensity_scales": scales,
                    "clamped_at_zero": non_negative, **why}
            return out, {}, info

        return FramePlan(inputs, run_rows, predictor, (1, 1, 1), config, finish, message=why["reason"],
                         events=events, out=resampled if every else None)


class REMIxSingleMethod(REMIxMethod):
    """The "1 network" baseline of the REMIx paper: one U-Net for all resolutions."""

    name = "remix1"
    title = "REMIx 1-network"
    description = "REMIx baseline: one residual 3D U-Net trained on all resolutions (no experts)."
    kind = "single"
