"""SS-MoE inference (Lin et al., MICCAI 2021) and its two baselines.

Three registry entries share this module; they differ only in the network a
checkpoint holds (``architecture["kind"]`` in its manifest,
:mod:`.checkpoint`):

* ``ssmoe`` - shared encoder, a gater that sees the bottleneck features and the
  frame's acquisition parameters (``gx gy gz b TI TE``), ``K`` expert decoders;
  hard routing: each LR patch goes through one expert.
* ``srunet`` - the SR U-Net baseline (phase 1 of SS-MoE training).
* ``hardmoe`` - the Hard-MoE baseline: ``K`` decoder heads mixed by a gater
  that sees the bottleneck only.

Test time follows the reference (``docs/ssmoe_reference_notes.md`` section 4)
where it matters and the project's engine elsewhere: windows of exactly the
task's LR patch (the gater was trained to route such patches), half
overlapping by default, outputs blended with Gaussian weights; all-zero
(background) patches are skipped (output 0, routing -1).  Frames of a 4D
input share the engine's batches (:mod:`SuperResMoELib.methods.driver`).
Intensities stay in the user's units: the network sees ``x * factor`` with the
checkpoint's ``intensity.factor`` and its output is divided by the same factor;
no per-volume normalisation (qMRI values must keep their meaning).

Tasks (:mod:`SuperResMoELib.core.tasks`, factors in IJK order): ``aniso`` =
``(1, 1, 2)`` (x2 along ``k``, the slice axis), ``iso`` = ``(2, 2, 2)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from SuperResMoELib.core.errors import CheckpointError, InputError
from SuperResMoELib.core.progress import CancelToken, ProgressCallback
from SuperResMoELib.core.tasks import SR_TASKS
from SuperResMoELib.core.volume import ACQUISITION_COLUMNS, Grid, Volume
from SuperResMoELib.methods.base import EnhanceOptions
from SuperResMoELib.methods.checkpointed import CheckpointedMethod
from SuperResMoELib.methods.ssmoe.checkpoint import (
    CHECKPOINT_METHOD,
    KINDS,
    N_PARAMS,
    backbone_config,
    build_network,
    intensity_factor,
)

if TYPE_CHECKING:  # torch loads only when a method runs
    import torch

    from SuperResMoELib.checkpoints.manifest import Manifest
    from SuperResMoELib.methods.driver import FramePlan, FramesOutput

#: Scale factors ``(s_i, s_j, s_k)`` of each task (from :data:`~SuperResMoELib.core.tasks.SR_TASKS`).
TASK_FACTORS: dict[str, tuple[float, float, float]] = {n: t.float_factors for n, t in SR_TASKS.items()}
#: LR patch ``(pk, pj, pi)`` of each task (the gater routes patches of this size).
TASK_PATCHES: dict[str, tuple[int, int, int]] = {n: t.lr_patch for n, t in SR_TASKS.items()}
#: Task when neither the task nor the scale is given.
DEFAULT_TASK = "aniso"
#: Network items (patch x frame) per batch come from the engine's voxel budget
#: (:data:`~SuperResMoELib.engine.windows.CPU_BATCH_VOXELS`): 64 aniso patches
#: (8x16x16) on the CPU, which was the fastest of 32/64/128/256/1024 on 2 cores
#: (bigger batches fall out of cache), 1024 on a GPU.
#: Relative tolerance when matching requested scale factors to a task.
SCALE_RTOL = 1e-3
#: Label of background (all-zero) patches in routing maps.
BACKGROUND = -1


class _Predictor:
    """Frame predictor (:class:`~SuperResMoELib.methods.driver.FramePredictor`):
    ``(M, 1, *lr_patch)`` user units and ``(M,)`` frame indices ->
    ``(M, 1, *hr_patch)`` (and ``{"expert": (M,)}`` for the mixtures);
    all-zero patches give 0 and label :data:`BACKGROUND`."""

    def __init__(self, net: torch.nn.Module, kind: str, factor: float, hr_patch: Sequence[int],
                 expert: int | None, rows: np.ndarray | None, n_frames: int) -> None:
        import torch

        self.net, self.kind, self.factor = net, kind, factor
        self.hr_patch = tuple(int(v) for v in hr_patch)
        self.expert = expert
        device = next(net.parameters()).device
        self.rows = None if rows is None else torch.as_tensor(rows, dtype=torch.float32, device=device)
        #: ``counts[frame][label]``: patches per routing label.
        self.counts: list[dict[int, int]] = [{} for _ in range(n_frames)]

    def to(self, device: torch.device) -> None:
        import torch

        self.net.to(device)
        # channels-last: on 2 CPU cores 1.3x faster on batches of 64 aniso patches (benchmarks/README.md)
        self.net.to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]
        if self.rows is not None:
            self.rows = self.rows.to(device)

    def _run(self, x: torch.Tensor, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.kind == "srunet":
            return self.net(x), None
        if self.kind == "ssmoe":
            assert self.rows is not None
            y, labels = self.net(x, self.rows.to(x.device)[frames], self.expert)
            return y, labels
        y, weights = self.net(x, self.expert)  # hardmoe: the forced head keeps the global residual
        return y, weights.argmax(dim=1)

    def __call__(self, items: torch.Tensor, frames: torch.Tensor):
        import torch

        m = items.shape[0]
        keep = items.reshape(m, -1).ne(0).any(dim=1)
        out = torch.zeros((m, items.shape[1]) + self.hr_patch, dtype=torch.float32, device=items.device)
        labels = torch.full((m,), BACKGROUND, dtype=torch.long, device=items.device)
        if bool(keep.any()):
            idx = keep.nonzero(as_tuple=True)[0]
            x = (items[idx].to(torch.float32) * self.factor).contiguous(memory_format=torch.channels_last_3d)
            y, lab = self._run(x, frames[idx])
            out[idx] = y.to(torch.float32).contiguous() / self.factor
            if lab is not None:
                labels[idx] = lab.to(torch.long)
        pairs = np.stack([frames.cpu().numpy(), labels.cpu().numpy()], axis=1)
        for (f, k), n in zip(*np.unique(pairs, axis=0, return_counts=True)):
            self.counts[int(f)][int(k)] = self.counts[int(f)].get(int(k), 0) + int(n)
        if self.kind == "srunet":
            return out
        return out, {"expert": labels.to(torch.float32)}


def _factors_match(f: np.ndarray, task: str) -> bool:
    return bool(np.allclose(f, TASK_FACTORS[task], rtol=SCALE_RTOL, atol=0.0))


def _describe_tasks() -> str:
    return "; ".join(f"{t} = scale {','.join(f'{v:g}' for v in f)}" for t, f in TASK_FACTORS.items())


class SSMoEMethod(CheckpointedMethod):
    """SS-MoE: acquisition-aware hard routing of 3D patches to expert decoders."""

    name = "ssmoe"
    title = "SS-MoE"
    description = ("Self-supervised mixture of experts (Lin et al. 2021): a gater routes each 3D patch, "
                   "using the acquisition parameters, to one of K expert decoders.")
    tasks = ("aniso", "iso")
    sample_kind = "mudi"
    checkpoint_method = CHECKPOINT_METHOD
    family_title = "an SS-MoE"
    kinds = KINDS
    kind: ClassVar[str] = "ssmoe"

    # ---------------------------------------------------------------- task
    def resolve_task(self, volume: Volume | None, options: EnhanceOptions | None = None) -> str:
        """The task to run: ``options.task``; else the one matching
        ``options.scale`` (or ``target_spacing``); else the explicit
        checkpoint's task; else :data:`DEFAULT_TASK`.

        Raises:
            InputError: unknown task, or factors matching no task (or not the
                given task).
        """
        opts = options or EnhanceOptions()
        if opts.task is not None and opts.task not in self.tasks:
            raise InputError(f"{self.name}: unknown task {opts.task!r}; supported tasks: {_describe_tasks()}")
        factors = self._requested_factors(volume, opts)
        if factors is not None:
            matches = [t for t in self.tasks if _factors_match(factors, t)]
            if not matches:
                raise InputError(
                    f"{self.name} super-resolves by fixed factors only; scale {np.round(factors, 4).tolist()} "
                    f"(i, j, k) matches no task. Supported tasks: {_describe_tasks()}"
                )
            if opts.task is not None and opts.task not in matches:
                raise InputError(
                    f"{self.name}: scale {np.round(factors, 4).tolist()} does not fit task {opts.task!r} "
                    f"(scale {','.join(f'{v:g}' for v in TASK_FACTORS[opts.task])})"
                )
            return opts.task or matches[0]
        if opts.task is not None:
            return opts.task
        if opts.checkpoint:
            from SuperResMoELib.checkpoints.store import read_manifest

            task = read_manifest(opts.checkpoint).task
            if task in self.tasks:
                return task
        return DEFAULT_TASK

    @staticmethod
    def _requested_factors(volume: Volume | None, opts: EnhanceOptions) -> np.ndarray | None:
        if opts.scale is not None:
            from SuperResMoELib.methods.base import scale_factors

            return scale_factors(opts)
        if opts.target_spacing is not None:
            spacing = np.broadcast_to(np.asarray(opts.target_spacing, dtype=np.float64), (3,))
            if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
                raise InputError(f"target spacing must be positive, got {opts.target_spacing}")
            if volume is None:
                raise InputError("a target spacing needs the input volume to derive the scale")
            return volume.grid.spacing / spacing
        return None

    def output_grid(self, volume: Volume, options: EnhanceOptions | None = None) -> Grid:
        """The SR grid of the task: ``scaled_grid`` by ``(1, 1, 2)`` (aniso) or
        ``(2, 2, 2)`` (iso), the physical extent kept."""
        from SuperResMoELib.core.geometry import scaled_grid

        return scaled_grid(volume.grid, TASK_FACTORS[self.resolve_task(volume, options)])

    # ---------------------------------------------------------- checkpoint
    def build_network(self, manifest: Manifest) -> torch.nn.Module:
        return build_network(manifest)

    # ---------------------------------------------------------- acquisition
    def _acquisitions(self, volume: Volume, opts: EnhanceOptions, net: Any) -> tuple[np.ndarray | None, dict]:
        """``(N, 6)`` acquisition rows (``None`` when the network reads none) and a note."""
        gater = getattr(net, "gater", None)
        n_params = int(getattr(gater, "n_params", 0)) if gater is not None else 0
        n = volume.n_frames
        if self.kind != "ssmoe" or n_params == 0:
            return None, {"source": "unused", "note": f"the {self.kind} network does not read acquisition parameters"}
        table = volume.acquisition
        if table is not None:
            missing = [c for c in ACQUISITION_COLUMNS if c not in table.columns]
            if missing:
                raise InputError(
                    f"the acquisition table lacks column(s) {', '.join(missing)}; SS-MoE needs "
                    f"{' '.join(ACQUISITION_COLUMNS)}"
                )
            rows = np.stack([table.column(c) for c in ACQUISITION_COLUMNS], axis=1)
            if len(rows) == 1 and n > 1:
                rows = np.repeat(rows, n, axis=0)
            return rows.astype(np.float32), {"source": "table",
                                             "note": "acquisition parameters per frame from the table"}
        given = opts.extra.get("acquisition") if opts.extra else None
        if given is not None:
            try:
                row = np.asarray(given, dtype=np.float64).reshape(-1)
            except (TypeError, ValueError):
                raise InputError(f"acquisition must be {N_PARAMS} numbers ({' '.join(ACQUISITION_COLUMNS)}), "
                                 f"got {given!r}") from None
            if row.size != N_PARAMS or not np.all(np.isfinite(row)):
                raise InputError(f"acquisition must be {N_PARAMS} finite numbers "
                                 f"({' '.join(ACQUISITION_COLUMNS)}), got {given!r}")
            return (np.repeat(row[None], n, axis=0).astype(np.float32),
                    {"source": "options", "values": row.tolist(),
                     "note": "acquisition parameters given with the options, used for every frame"})
        assert gater is not None  # an ssmoe network with parameters has a gater
        mean = gater.param_mean.detach().cpu().numpy().astype(np.float64)
        return (np.repeat(mean[None], n, axis=0).astype(np.float32),
                {"source": "default", "values": mean.round(6).tolist(),
                 "note": ("no acquisition parameters given: used the training protocol's mean acquisition "
                          f"({' '.join(ACQUISITION_COLUMNS)} = "
                          f"{' '.join(f'{v:.4g}' for v in mean)}; z-score 0 for the gater), "
                          "an average acquisition of the training protocol")})

    # -------------------------------------------------------------- enhance
    def check(self, volume: Volume, options: EnhanceOptions) -> str:
        """The task; refuses a patch size other than the task's and an expert for ``srunet``.

        Raises:
            InputError: unsupported scale/task, wrong patch size, expert for a network without experts.
        """
        task = self.resolve_task(volume, options)
        lr_patch = TASK_PATCHES[task]
        if options.patch_size is not None:
            p = options.patch_size
            asked = (p,) * 3 if isinstance(p, int) else tuple(int(v) for v in p)
            if asked != lr_patch:
                raise InputError(
                    f"{self.name} runs on LR patches of exactly {'x'.join(map(str, lr_patch))} voxels (k, j, i) "
                    f"for task {task}: the networks and the gater were trained on that size; got patch size "
                    f"{options.patch_size}. Leave the patch size at its default"
                )
        if options.expert is not None and self.kind == "srunet":
            raise InputError(f"{self.name} has no experts; do not give an expert")
        return task

    def plan(self, volume: Volume, frames: np.ndarray, target: Grid, task: str, options: EnhanceOptions,
             net: Any, manifest: Manifest, device: torch.device, progress: ProgressCallback,
             cancel: CancelToken) -> FramePlan:
        """Every frame on the LR grid through the network; the routing map for the mixtures."""
        from SuperResMoELib.methods.driver import FramePlan

        cfg = backbone_config(manifest)
        lr_patch = TASK_PATCHES[task]
        if cfg.lr_patch != lr_patch:  # pragma: no cover - one task table
            raise CheckpointError(f"checkpoint LR patch {cfg.lr_patch} differs from {lr_patch}")
        n_experts = int(manifest.architecture.get("n_experts", 1)) if self.kind != "srunet" else 0
        if options.expert is not None and not 0 <= int(options.expert) < n_experts:
            raise InputError(f"expert {options.expert} is out of range: this checkpoint has {n_experts} "
                             f"experts (0..{n_experts - 1})")
        factor = intensity_factor(manifest)
        rows, acq_info = self._acquisitions(volume, options, net)
        config = options.engine_config(lr_patch, patch=lr_patch)
        expert = None if options.expert is None else int(options.expert)
        predictor = _Predictor(net, self.kind, factor, cfg.hr_patch, expert, rows, len(frames))

        def finish(run: FramesOutput) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, Any]]:
            maps = {}
            if self.kind != "srunet":
                maps["routing"] = run.maps.get("expert", np.full(run.image.shape, BACKGROUND, np.float32))
            per_frame = [{("background" if k == BACKGROUND else str(k)): c for k, c in sorted(counts.items())}
                         for counts in predictor.counts]
            info = {"intensity_factor": factor, "n_experts": n_experts, "expert_forced": expert,
                    "experts_per_frame": per_frame if self.kind != "srunet" else [], "acquisition": acq_info,
                    "scale": list(TASK_FACTORS[task])}
            return run.image, maps, info

        return FramePlan(frames, np.arange(len(frames)), predictor, cfg.zoom, config, finish)


class SRUNetMethod(SSMoEMethod):
    """The SR U-Net baseline of the SS-MoE paper (one network for all patches)."""

    name = "srunet"
    title = "SR U-Net"
    description = "SR U-Net baseline of the SS-MoE paper: one 3D patch network, no experts."
    kind = "srunet"


class HardMoEMethod(SSMoEMethod):
    """The Hard-MoE baseline: decoder heads mixed by a gater without acquisition input."""

    name = "hardmoe"
    title = "Hard-MoE"
    description = ("Hard-MoE baseline of the SS-MoE paper: K decoder heads mixed by a softmax gater "
                   "(no acquisition input); the map shows the dominant head.")
    kind = "hardmoe"
