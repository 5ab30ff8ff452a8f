"""SS-MoE inference (Lin et al., MICCAI 2021) and its two baselines.

Three registry entries share this module; they differ only in the network a
checkpoint holds (``architecture["kind"]`` in its manifest):

* ``ssmoe`` - shared encoder, a gater that sees the bottleneck features and the
  frame's acquisition parameters (``gx gy gz b TI TE``), ``K`` expert decoders;
  hard routing: each LR patch goes through one expert.
* ``srunet`` - the SR U-Net baseline (phase 1 of SS-MoE training).
* ``hardmoe`` - the Hard-MoE baseline: ``K`` decoder heads mixed by a gater
  that sees the bottleneck only.

All three are stored as ``method="ssmoe"`` checkpoints (see
:func:`ssmoe_manifest`, which the training code uses to write them); the
tensors are the network's ``state_dict()``.

Test time follows the reference (``docs/ssmoe_reference_notes.md`` section 4)
where it matters and the project's engine elsewhere: windows of exactly the
task's LR patch (the gater was trained to route such patches), half
overlapping by default, outputs blended with Gaussian weights; all-zero
(background) patches are skipped (output 0, routing -1).  Intensities stay in
the user's units: the network sees ``x * factor`` with the checkpoint's
``intensity.factor`` and its output is divided by the same factor; no
per-volume normalisation (qMRI values must keep their meaning).

Tasks (factors in IJK order): ``aniso`` = ``(1, 1, 2)`` (x2 along ``k``, the
slice axis), ``iso`` = ``(2, 2, 2)``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from SuperResMoELib.core.errors import CheckpointError, InputError
from SuperResMoELib.core.tasks import SR_TASKS
from SuperResMoELib.core.progress import CancelToken, ProgressCallback, no_progress
from SuperResMoELib.core.volume import ACQUISITION_COLUMNS, Grid, Volume
from SuperResMoELib.methods.base import EnhanceOptions, Result, prepare_array
from SuperResMoELib.methods.checkpointed import CheckpointedMethod, architecture_config, network_kind

if TYPE_CHECKING:  # torch loads only when a method runs
    import torch

    from SuperResMoELib.checkpoints.store import Manifest
    from SuperResMoELib.nets.srunet import SRUNetConfig

#: Method name every SS-MoE family checkpoint is stored under.
CHECKPOINT_METHOD = "ssmoe"
#: Network kinds a checkpoint may hold.
KINDS: tuple[str, ...] = ("ssmoe", "srunet", "hardmoe")
#: Scale factors ``(s_i, s_j, s_k)`` of each task (from :data:`~SuperResMoELib.core.tasks.SR_TASKS`).
TASK_FACTORS: dict[str, tuple[float, float, float]] = {n: t.float_factors for n, t in SR_TASKS.items()}
#: LR patch ``(pk, pj, pi)`` of each task (the gater routes patches of this size).
TASK_PATCHES: dict[str, tuple[int, int, int]] = {n: t.lr_patch for n, t in SR_TASKS.items()}
#: Task when neither the task nor the scale is given.
DEFAULT_TASK = "aniso"
#: Default patches per batch (the patches are tiny).  On the CPU, 64 was the
#: fastest of 32/64/128/256/1024 (2 cores, width 16, 8 frames of 33x78x62:
#: 19-26 s at 64 against 33-37 s at 256 and 50 s at 1024: bigger batches fall
#: out of cache).
CPU_BATCH_SIZE = 64
GPU_BATCH_SIZE = 1024
#: Number of acquisition parameters the gater reads.
N_PARAMS = len(ACQUISITION_COLUMNS)
#: Relative tolerance when matching requested scale factors to a task.
SCALE_RTOL = 1e-3
#: Label of background (all-zero) patches in routing maps.
BACKGROUND = -1


# ---------------------------------------------------------------- checkpoints
def ssmoe_manifest(kind: str, cfg: SRUNetConfig, n_experts: int, intensity_factor: float,
                   **extra: Any) -> Manifest:
    """The manifest of an SS-MoE family checkpoint.

    Args:
        kind: ``"ssmoe"``, ``"srunet"`` or ``"hardmoe"``.
        cfg: backbone configuration (its task names the checkpoint's task).
        n_experts: ``K`` (stored for every kind; ignored by ``srunet``).
        intensity_factor: the network input is ``user units * factor`` (and
            its output is divided by it).
        **extra: further :class:`~SuperResMoELib.checkpoints.Manifest` fields
            (``training_data``, ``metrics``, ``description``, ...); unknown
            names go into ``Manifest.extra``.

    Raises:
        CheckpointError: unknown kind, ``n_experts < 1`` or a factor that is
            not a positive finite number.
    """
    from SuperResMoELib.checkpoints.store import Manifest

    if kind not in KINDS:
        raise CheckpointError(f"unknown SS-MoE network kind {kind!r}; choose one of {', '.join(KINDS)}")
    if int(n_experts) < 1:
        raise CheckpointError(f"n_experts must be at least 1, got {n_experts}")
    f = float(intensity_factor)
    if not math.isfinite(f) or f <= 0:
        raise CheckpointError(f"intensity factor must be a positive number, got {intensity_factor}")
    known = {fl.name for fl in dataclasses.fields(Manifest)}
    kwargs = {k: v for k, v in extra.items() if k in known}
    unknown = {k: v for k, v in extra.items() if k not in known}
    if unknown:
        kwargs["extra"] = {**unknown, **kwargs.get("extra", {})}
    return Manifest(
        method=CHECKPOINT_METHOD,
        task=cfg.task,
        architecture={"kind": kind, "srunet": cfg.to_dict(), "n_experts": int(n_experts), "n_params": N_PARAMS},
        scale_factors=[float(z) for z in reversed(cfg.zoom)],
        intensity={"kind": "scale", "factor": f},
        **kwargs,
    )


def backbone_config(manifest: Manifest) -> SRUNetConfig:
    """The SR U-Net configuration recorded in a manifest.

    Raises:
        CheckpointError: missing or invalid ``architecture["srunet"]``.
    """
    from SuperResMoELib.nets.srunet import SRUNetConfig

    return architecture_config(manifest, "srunet", SRUNetConfig)


def build_network(manifest: Manifest) -> torch.nn.Module:
    """An untrained :class:`SRUNet`, :class:`SSMoE` or :class:`HardMoE` as the
    manifest describes (load the checkpoint's tensors into it).

    Raises:
        CheckpointError: unknown kind or invalid architecture fields.
    """
    from SuperResMoELib.nets.moe import HardMoE, SSMoE
    from SuperResMoELib.nets.srunet import SRUNet

    kind = network_kind(manifest)
    if kind not in KINDS:
        raise CheckpointError(f"manifest architecture kind {kind!r} is not one of {', '.join(KINDS)}")
    cfg = backbone_config(manifest)
    arch = manifest.architecture
    try:
        k = int(arch.get("n_experts", 1))
        p = int(arch.get("n_params", N_PARAMS))
    except (TypeError, ValueError):
        raise CheckpointError("manifest architecture fields n_experts/n_params must be integers") from None
    if k < 1 or p < 0:
        raise CheckpointError(f"manifest architecture has n_experts={k}, n_params={p}")
    if kind == "srunet":
        return SRUNet(cfg)
    if kind == "hardmoe":
        return HardMoE(cfg, k)
    return SSMoE(cfg, k, p)


def intensity_factor(manifest: Manifest) -> float:
    """The factor user intensities are multiplied by before the network.

    Raises:
        CheckpointError: an intensity normalisation this method does not know.
    """
    spec = manifest.intensity
    kind = spec.get("kind", "scale")
    if kind == "none":
        return 1.0
    if kind != "scale":
        raise CheckpointError(f"unsupported intensity normalisation {kind!r} in the manifest (expected 'scale')")
    try:
        f = float(spec.get("factor", 1.0))
    except (TypeError, ValueError):
        f = float("nan")
    if not math.isfinite(f) or f <= 0:
        raise CheckpointError(f"manifest intensity factor must be a positive number, got {spec.get('factor')!r}")
    return f


# ------------------------------------------------------------------ predictor
class _Predictor:
    """Patch predictor for :func:`~SuperResMoELib.inference.run_patches`:
    ``(B, 1, *lr_patch)`` user units -> ``((B, 1, *hr_patch), {"expert": (B,)})``."""

    def __init__(self, net: torch.nn.Module, kind: str, factor: float, hr_patch: Sequence[int],
                 expert: int | None) -> None:
        self.net, self.kind, self.factor = net, kind, factor
        self.hr_patch = tuple(int(v) for v in hr_patch)
        self.expert = expert
        self.params: torch.Tensor | None = None
        self.counts: dict[int, int] = {}

    def to(self, device: torch.device) -> None:
        self.net.to(device)
        if self.params is not None:
            self.params = self.params.to(device)

    def set_params(self, values: np.ndarray | None) -> None:
        import torch

        device = next(self.net.parameters()).device
        self.params = None if values is None else torch.as_tensor(values, dtype=torch.float32, device=device)
        self.counts = {}

    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        import torch

        if self.kind == "srunet":
            return self.net(x), None
        if self.kind == "ssmoe":
            assert self.params is not None
            params = self.params.to(x.device).expand(x.shape[0], -1)
            y, labels = self.net(x, params, self.expert)
            return y, labels
        net = self.net  # hardmoe
        if self.expert is None:
            y, weights = net(x)
            return y, weights.argmax(dim=1)
        feats = net.encoder(x)
        y = net.heads[self.expert](net.skips(feats.skips), feats.bottleneck)
        return y, torch.full((x.shape[0],), self.expert, dtype=torch.long, device=x.device)

    def __call__(self, patches: torch.Tensor):
        import torch

        b = patches.shape[0]
        keep = patches.reshape(b, -1).ne(0).any(dim=1)
        out = torch.zeros((b, patches.shape[1]) + self.hr_patch, dtype=torch.float32, device=patches.device)
        labels = torch.full((b,), BACKGROUND, dtype=torch.long, device=patches.device)
        if bool(keep.any()):
            idx = keep.nonzero(as_tuple=True)[0]
            x = patches[idx].to(torch.float32) * self.factor
            y, lab = self._run(x)
            out[idx] = y.to(torch.float32) / self.factor
            if lab is not None:
                labels[idx] = lab.to(torch.long)
        for k, n in zip(*np.unique(labels.cpu().numpy(), return_counts=True)):
            self.counts[int(k)] = self.counts.get(int(k), 0) + int(n)
        if self.kind == "srunet":
            return out
        return out, {"expert": labels.to(torch.float32)}


# --------------------------------------------------------------------- method
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
        mean = gater.param_mean.detach().cpu().numpy().astype(np.float64)
        return (np.repeat(mean[None], n, axis=0).astype(np.float32),
                {"source": "default", "values": mean.round(6).tolist(),
                 "note": ("no acquisition parameters given: used the training protocol's mean acquisition "
                          f"({' '.join(ACQUISITION_COLUMNS)} = "
                          f"{' '.join(f'{v:.4g}' for v in mean)}; z-score 0 for the gater), "
                          "an average acquisition of the training protocol")})

    # -------------------------------------------------------------- enhance
    def enhance(
        self,
        volume: Volume,
        options: EnhanceOptions | None = None,
        device: str = "auto",
        progress: ProgressCallback = no_progress,
        cancel: CancelToken | None = None,
    ) -> Result:
        """Super-resolve each frame patch by patch (see the module docstring).

        Raises:
            InputError: unsupported scale/task, patch size other than the
                task's, expert out of range, bad acquisition parameters.
            CheckpointError: no usable checkpoint.
            CancelledError: ``cancel`` was set.
        """
        import torch

        from SuperResMoELib.engine.devices import resolve_device
        from SuperResMoELib.engine.sliding import run_patches
        from SuperResMoELib.engine.windows import EngineConfig

        opts = options or EnhanceOptions()
        cancel = cancel or CancelToken()
        t0 = time.perf_counter()
        task = self.resolve_task(volume, opts)
        target = self.output_grid(volume, opts)
        lr_patch = TASK_PATCHES[task]
        if opts.patch_size is not None:
            asked = (opts.patch_size,) * 3 if isinstance(opts.patch_size, int) else tuple(int(p) for p in opts.patch_size)
            if asked != lr_patch:
                raise InputError(
                    f"{self.name} runs on LR patches of exactly {'x'.join(map(str, lr_patch))} voxels (k, j, i) "
                    f"for task {task}: the networks and the gater were trained on that size; got patch size "
                    f"{opts.patch_size}. Leave the patch size at its default"
                )
        arr = prepare_array(volume, opts.nonfinite)
        dev = resolve_device(device)
        cancel.check()
        progress("enhance", 0.0, f"loading the {self.title} checkpoint")
        net, path, manifest = self.load(task, opts, dev)
        cfg = backbone_config(manifest)
        if cfg.lr_patch != lr_patch:  # pragma: no cover - TASKS and TASK_PATCHES agree
            raise CheckpointError(f"checkpoint {path}: LR patch {cfg.lr_patch} differs from {lr_patch}")
        n_experts = int(manifest.architecture.get("n_experts", 1)) if self.kind != "srunet" else 0
        if opts.expert is not None:
            if self.kind == "srunet":
                raise InputError(f"{self.name} has no experts; do not give an expert")
            if not 0 <= int(opts.expert) < n_experts:
                raise InputError(f"expert {opts.expert} is out of range: this checkpoint has {n_experts} "
                                 f"experts (0..{n_experts - 1})")
        factor = intensity_factor(manifest)
        rows, acq_info = self._acquisitions(volume, opts, net)
        batch = opts.batch_size if opts.batch_size is not None else (CPU_BATCH_SIZE if dev.type == "cpu" else GPU_BATCH_SIZE)
        config = EngineConfig(lr_patch, opts.overlap, batch, opts.mixed_precision)
        config.validate()
        predictor = _Predictor(net, self.kind, factor, cfg.hr_patch,
                               None if opts.expert is None else int(opts.expert))
        frames = arr.reshape((-1,) + volume.spatial_shape)
        n_frames = len(frames)
        out = np.empty((n_frames,) + target.shape, np.float32)
        routing = np.empty((n_frames,) + target.shape, np.float32) if self.kind != "srunet" else None
        events: list[str] = []
        per_frame: list[dict[str, int]] = []
        n_patches = 0
        try:
            for n, frame in enumerate(frames):
                cancel.check()
                predictor.set_params(None if rows is None else rows[n])

                def frame_progress(stage: str, fraction: float, message: str = "", _n: int = n) -> None:
                    prefix = f"frame {_n + 1}/{n_frames}: " if n_frames > 1 else ""
                    progress("enhance", (_n + min(max(fraction, 0.0), 1.0)) / n_frames, prefix + message)

                res = run_patches(frame[None], predictor, cfg.zoom, config, dev, frame_progress, cancel)
                if res.image.shape[1:] != target.shape:  # pragma: no cover - engine and grid agree
                    raise InputError(f"engine output {res.image.shape[1:]} does not fit the SR grid {target.shape}")
                out[n] = res.image[0]
                if routing is not None:
                    routing[n] = res.patch_maps.get("expert", np.full(target.shape, BACKGROUND, np.float32))
                events += [f"frame {n}: {e}" if n_frames > 1 else e for e in res.events]
                # keep what the engine learnt (smaller batch, CPU fallback) for the next frames
                if res.device != str(dev) or res.batch_size != config.batch_size:
                    dev = torch.device(res.device)
                    config = dataclasses.replace(config, batch_size=res.batch_size)
                per_frame.append({("background" if k == BACKGROUND else str(k)): c
                                  for k, c in sorted(predictor.counts.items())})
                n_patches += res.n_patches
        finally:
            predictor.params = None
        shape = arr.shape[:-3] + target.shape
        label = volume.name or "input"
        sr = volume.with_array(out.reshape(shape), target.ijk_to_ras, name=f"{label}_{self.name}")
        maps: dict[str, Volume] = {}
        if routing is not None:
            maps["routing"] = Volume.on_grid(routing.reshape(shape), target, name=f"{label}_routing")
        progress("enhance", 1.0, f"{n_frames} frame(s), {n_patches} patches on {dev}")
        info = {
            "method": self.name, "kind": self.kind, "task": task, "checkpoint": str(path),
            "device": str(dev), "events": events, "seconds": time.perf_counter() - t0,
            "frames": n_frames, "patches": n_patches, "patch_size": list(lr_patch),
            "batch_size": int(config.batch_for(dev.type)), "intensity_factor": factor,
            "n_experts": n_experts, "expert_forced": None if opts.expert is None else int(opts.expert),
            "experts_per_frame": per_frame if self.kind != "srunet" else [],
            "acquisition": acq_info,
            "scale": list(TASK_FACTORS[task]),
            "output_shape": list(target.shape), "output_spacing": target.spacing.round(6).tolist(),
        }
        return Result(sr, maps, info)


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


__all__ = [
    "HardMoEMethod", "SRUNetMethod", "SSMoEMethod", "build_network", "intensity_factor", "network_kind",
    "ssmoe_manifest",
]
