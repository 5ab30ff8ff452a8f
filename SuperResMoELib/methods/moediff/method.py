"""MoEDiff-SR inference (Wang et al.; paper 003): the input resampled onto the
target grid, then every 2D slice along the slice axis refined by latent
diffusion with three gated experts, and the slices stacked.

* **Grid**: as REMIx (:mod:`SuperResMoELib.methods.resampled`): the input's
  axes and extent, ``--spacing`` mm voxels (default 1 mm) or ``--scale``.
* **Slice axis** (``--slice-axis``): ``auto`` takes the axis whose spacing
  changes least between input and output (ties: k, then j), so a thick-slice
  scan is refined in slices that hold its thick axis; ``i``/``j``/``k`` force
  one; ``all`` runs the three orientations and averages them (about three
  times the time; the expert map is the argmax of the averaged gates).
* **Tiles**: each slice is cut into tiles of the checkpoint's training tile
  (64 x 64 by default; ``--patch-size`` sets another multiple of the
  network's multiple, 16) by the shared engine -- 2D windows are 3D windows of
  depth 1 -- overlapping by ``--overlap`` and blended with Gaussian weights.
  Tiles without signal (normalised maximum at most :data:`NO_SIGNAL_FLOOR`)
  skip the networks and keep the cubic resampling.
* **Sampler** (``--steps``, default :data:`DEFAULT_STEPS`; ``--sampler full``
  or ``top1``, the paper's asynchronous mode: only the highest-gated expert
  runs; ``--expert N`` forces one expert; ``--seed``): DDIM, deterministic
  (eta = 0) from seeded initial noise.  ``--samples N > 1`` draws N samples
  (each from its own noise) and returns their mean, with the per-voxel standard
  deviation as the ``uncertainty`` map.
* **Intensities**: each frame divided by its robust maximum and multiplied
  back; magnitude inputs (no negative voxel) give no negative output voxel.

Maps: ``routing`` (the expert with the largest blended gate per voxel, 0..2;
-1 where no tile ran), ``gate1..3`` (blended gate weights), ``uncertainty``
(with ``--samples > 1``, user units).
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
from SuperResMoELib.methods.base import EnhanceOptions, Result
from SuperResMoELib.methods.checkpointed import CheckpointedMethod
from SuperResMoELib.methods.moediff.checkpoint import CHECKPOINT_METHOD, KIND, TASK, build_moediff_network
from SuperResMoELib.methods.resampled import normalised_on_target, target_grid

if TYPE_CHECKING:  # torch loads only when a method runs
    import torch

    from SuperResMoELib.checkpoints.manifest import Manifest
    from SuperResMoELib.methods.driver import FramePlan, FramesOutput
    from SuperResMoELib.methods.moediff.model import MoEDiffSR

#: Output spacing (mm) when the user gives neither a spacing nor a scale.
DEFAULT_TARGET_SPACING: float = 1.0
#: Sampler steps when ``--steps`` is not given (see ``docs/results/moediff`` for the quality-vs-steps curve).
DEFAULT_STEPS: int = 2
#: Slice-axis choices.
SLICE_AXES: tuple[str, ...] = ("auto", "i", "j", "k", "all")
#: Array axis (KJI order) of each IJK axis name.
ARRAY_AXIS: dict[str, int] = {"k": 0, "j": 1, "i": 2}
#: Tiles per network call when ``--batch-size`` is not given (small 2D tiles: large
#: batches run far faster per tile, ~30 % on 1 CPU thread from 4 to 32).
CPU_TILES_PER_BATCH: int = 32
GPU_TILES_PER_BATCH: int = 256
#: Tiles whose largest normalised voxel is at most this skip the networks.
NO_SIGNAL_FLOOR: float = 1e-3
#: The routing map's value where no tile ran.
BACKGROUND: int = -1


def default_slice_axis(source: Grid, target: Grid) -> tuple[str, str]:
    """``(axis, why)``: the IJK axis whose spacing changes least from ``source``
    to ``target`` (by ``|log(ratio)|``; ties: k, then j, then i)."""
    change = np.abs(np.log(np.asarray(source.spacing) / np.asarray(target.spacing)))
    order = ("k", "j", "i")
    idx = {"i": 0, "j": 1, "k": 2}
    best = min(order, key=lambda a: (round(float(change[idx[a]]), 6), order.index(a)))
    ratios = ", ".join(f"{a} x{float(source.spacing[idx[a]] / target.spacing[idx[a]]):.2f}" for a in ("i", "j", "k"))
    return best, f"slices across {best}: its spacing changes least ({ratios})"


def _int_option(extra: dict[str, Any], key: str, default: int, low: int, what: str) -> int:
    v = extra.get(key)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or int(v) < low:
        raise InputError(f"{what} must be an integer of at least {low}, got {v!r}")
    return int(v)


@dataclasses.dataclass(frozen=True)
class SamplerSettings:
    """The sampler options of one run (from ``options.extra``; see the module docstring)."""

    steps: int
    samples: int
    mode: str
    seed: int
    slice_axis: str

    @classmethod
    def from_options(cls, options: EnhanceOptions) -> SamplerSettings:
        """Raises ``InputError`` for a bad value, naming the option."""
        from SuperResMoELib.methods.moediff.sampler import MODES

        extra = options.extra or {}
        mode = extra.get("sampler") or "full"
        if mode not in MODES:
            raise InputError(f"--sampler must be one of {', '.join(MODES)}, got {mode!r}")
        axis = extra.get("slice_axis") or "auto"
        if axis not in SLICE_AXES:
            raise InputError(f"--slice-axis must be one of {', '.join(SLICE_AXES)}, got {axis!r}")
        return cls(_int_option(extra, "steps", DEFAULT_STEPS, 1, "--steps"),
                   _int_option(extra, "samples", 1, 1, "--samples"), mode,
                   _int_option(extra, "seed", 0, 0, "--seed"), axis)


class _SlicePredictor:
    """Engine predictor: ``(M, 1, 1, t, t)`` normalised tiles -> refined tiles,
    with the tiles' mean gate per expert as per-patch values ``gate<i>`` (0 for
    tiles without signal, which come back unchanged).  Row ``r`` of the plan's
    inputs is sample ``r % samples`` of its frame: each call draws its initial
    noise from a generator seeded by ``(seed, call number)``."""

    def __init__(self, net: MoEDiffSR, settings: SamplerSettings, expert: int | None, uniform: bool = False) -> None:
        self.net = net
        self.uniform = uniform
        self.settings = settings
        self.expert = expert
        self.calls = 0
        self.skipped = 0
        self.expert_calls = [0] * net.n_experts
        self.gate_sums = np.zeros(net.n_experts)
        self.tiles_run = 0

    def to(self, device: torch.device) -> None:
        self.net.to(device)

    def __call__(self, items: torch.Tensor, frames: torch.Tensor) -> Any:
        import torch

        net = self.net
        x = items.to(torch.float32)
        m = x.shape[0]
        tiles = x.reshape((m, 1) + tuple(x.shape[-2:]))
        keep = tiles.reshape(m, -1).amax(dim=1) > NO_SIGNAL_FLOOR
        out = tiles.clone()
        gates = torch.zeros((m, net.n_experts), dtype=torch.float32, device=x.device)
        if bool(keep.any()):
            idx = keep.nonzero(as_tuple=True)[0]
            gen = torch.Generator().manual_seed(self.settings.seed * 1_000_003 + self.calls)
            res = net.enhance_slices(tiles[idx], steps=self.settings.steps, mode=self.settings.mode,
                                     generator=gen, force_expert=self.expert, uniform_gates=self.uniform)
            out[idx] = res.sr.to(torch.float32)
            g = res.gates.to(torch.float32)
            gates[idx] = g if g.ndim == 2 else g.mean(dim=(2, 3))
            self.expert_calls = [a + b for a, b in zip(self.expert_calls, res.expert_calls)]
            self.gate_sums += gates[idx].sum(dim=0).cpu().numpy()
            self.tiles_run += int(idx.numel())
        self.calls += 1
        self.skipped += int(m - int(keep.sum()))
        return out.reshape(x.shape), {f"gate{i + 1}": gates[:, i] for i in range(net.n_experts)}


class MoEDiffMethod(CheckpointedMethod):
    """MoEDiff-SR: three latent-diffusion experts gated per slice tile."""

    name = "moediff"
    title = "MoEDiff-SR"
    description = ("Mixture-of-experts guided latent diffusion (Wang et al.): the input resampled to the target grid "
                   "(default 1 mm), then every slice refined by three gated diffusion experts.")
    tasks = (TASK,)
    sample_kind = "t1"
    checkpoint_method = CHECKPOINT_METHOD
    family_title = "a MoEDiff-SR"
    kinds = (KIND,)
    kind: ClassVar[str] = KIND
    #: ``--simulate`` on a 1 mm scan: a 2 mm isotropic acquisition (the 3T-like case, voxel ratio ~2).
    simulate_factors = (2.0, 2.0, 2.0)

    def build_network(self, manifest: Manifest) -> torch.nn.Module:
        """The network of ``manifest``; refuses one that reads the corrections b/g
        (the Table I ablation variants): a scan to enhance comes without them.

        Raises:
            CheckpointError: a correction-reading architecture, or as :func:`build_moediff_network`.
        """
        net = build_moediff_network(manifest)
        if net.arch.extra_inputs:
            raise CheckpointError(
                f"this MoEDiff-SR checkpoint reads the corrections {list(net.arch.extra_inputs)} (bias field b / "
                "gradient-nonlinearity warp g) beside the scan; it is a training ablation (Table I) and cannot "
                "enhance a scan alone: use a checkpoint trained without --extra-inputs")
        return net

    def load(self, task: str, options: EnhanceOptions | None = None, device: str | torch.device = "cpu"):
        """As :meth:`CheckpointedMethod.load`, with the latent scale taken from the
        manifest (exact; the fp16 weights round it)."""
        net, path, manifest = super().load(task, options, device)
        scale = manifest.architecture.get("latent_scale")
        if isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0:
            net.latent_scale.fill_(float(scale))
        return net, path, manifest

    def output_grid(self, volume: Volume, options: EnhanceOptions | None = None) -> Grid:
        """The target grid (default :data:`DEFAULT_TARGET_SPACING` mm isotropic)."""
        return target_grid(volume, options, DEFAULT_TARGET_SPACING)

    def check(self, volume: Volume, options: EnhanceOptions) -> str:
        """Refuses bad sampler options and a forced expert outside 1..3 before any work."""
        SamplerSettings.from_options(options)
        if options.expert is not None and not 1 <= int(options.expert) <= 3:
            raise InputError(f"MoEDiff-SR has experts 1, 2 and 3; --expert {options.expert} does not exist")
        return TASK

    def _tile(self, options: EnhanceOptions, net: MoEDiffSR) -> int:
        m = net.multiple
        p = options.patch_size
        if p is None:
            return int(net.arch.tile)
        sizes = [p] if isinstance(p, int) else [int(v) for v in p]
        side = max(sizes)
        if side < m:
            raise InputError(f"MoEDiff-SR tiles are square slices of at least {m} pixels, got --patch-size {p!r}")
        return int(math.ceil(side / m) * m)

    def enhance(self, volume: Volume, options: EnhanceOptions | None = None, device: str = "auto",
                progress: ProgressCallback = no_progress, cancel: CancelToken | None = None) -> Result:
        """As :meth:`CheckpointedMethod.enhance`; ``--slice-axis all`` runs the three
        orientations and averages the images and the gate maps."""
        opts = options or EnhanceOptions()
        settings = SamplerSettings.from_options(opts)
        if settings.slice_axis != "all":
            return super().enhance(volume, opts, device, progress, cancel)
        t0 = time.perf_counter()
        results: list[Result] = []
        for n, axis in enumerate(("k", "j", "i")):
            sub = dataclasses.replace(opts, extra={**opts.extra, "slice_axis": axis})

            def part(stage: str, fraction: float, message: str = "", _n: int = n, _a: str = axis) -> None:
                progress(stage, (_n + min(max(fraction, 0.0), 1.0)) / 3.0, f"slices across {_a}: {message}")

            results.append(super().enhance(volume, sub, device, part, cancel))
        first = results[0]
        sr = first.volume.with_array(np.mean([np.asarray(r.volume.array) for r in results], axis=0).astype(np.float32))
        maps = {}
        for name, vol in first.maps.items():
            if name == "routing":
                continue
            maps[name] = vol.with_array(np.mean([np.asarray(r.maps[name].array) for r in results], axis=0))
        gates = [maps[k] for k in sorted(maps) if k.startswith("gate")]
        if gates and "routing" in first.maps:
            g = np.stack([np.asarray(v.array) for v in gates])
            routing = np.where(g.sum(axis=0) > 0, np.argmax(g, axis=0), BACKGROUND).astype(np.float32)
            maps["routing"] = first.maps["routing"].with_array(routing)
        info = dict(first.info)
        info.update({"slice_axis": "all", "fusion": "mean of the slices across k, j and i",
                     "orientations": {a: {"seconds": r.info["seconds"], "slice_axis_reason": r.info.get("slice_axis_reason"),
                                          "gates": r.info.get("gates")} for a, r in zip("kji", results)},
                     "seconds": time.perf_counter() - t0})
        return Result(sr, maps, info)

    def plan(self, volume: Volume, frames: np.ndarray, target: Grid, task: str, options: EnhanceOptions,
             net: Any, manifest: Manifest, device: torch.device, progress: ProgressCallback,
             cancel: CancelToken) -> FramePlan:
        """Frames resampled and normalised, moved so the slice axis comes first,
        repeated once per sample; tiles of depth 1 through the engine."""
        from SuperResMoELib.methods.driver import FramePlan
        from SuperResMoELib.methods.remix.checkpoint import intensity_percentile

        settings = SamplerSettings.from_options(options)
        if settings.slice_axis == "auto":
            axis_name, why = default_slice_axis(volume.grid, target)
        else:
            axis_name, why = settings.slice_axis, f"slices across {settings.slice_axis} (--slice-axis)"
        axis = ARRAY_AXIS[axis_name]
        resampled, scales, events = normalised_on_target(frames, volume.grid, target, intensity_percentile(manifest),
                                                         progress, cancel)
        n_frames, s = len(frames), settings.samples
        run_frames_idx = np.array([n for n, sc in enumerate(scales) if sc > 0], dtype=np.int64)
        moved = np.moveaxis(resampled, 1 + axis, 1)  # (N, slices, rows, cols)
        inputs = np.ascontiguousarray(np.repeat(moved[run_frames_idx], s, axis=0))
        tile = self._tile(options, net)
        batch = CPU_TILES_PER_BATCH if device.type == "cpu" else GPU_TILES_PER_BATCH
        config = options.engine_config((1, tile, tile), patch=(1, tile, tile), default_batch=batch)
        # extra["gating"] = "uniform": every expert at 1/K (the evaluation's ablation; not a user option)
        predictor = _SlicePredictor(net, settings, options.expert, (options.extra or {}).get("gating") == "uniform")
        non_negative = [bool(np.min(f) >= 0) for f in frames]
        k = net.n_experts

        def finish(run: FramesOutput) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, Any]]:
            out = resampled
            gate_maps = {f"gate{i + 1}": np.zeros_like(resampled) for i in range(k)}
            uncertainty = np.zeros_like(resampled) if s > 1 else None
            for row, n in enumerate(run_frames_idx):
                block = run.image[row * s:(row + 1) * s]  # (samples, slices, rows, cols)
                mean = np.moveaxis(block.mean(axis=0), 0, axis)
                out[n] = mean * scales[n]
                if non_negative[n]:
                    np.maximum(out[n], 0.0, out=out[n])
                if uncertainty is not None:
                    uncertainty[n] = np.moveaxis(block.std(axis=0), 0, axis) * scales[n]
                for i in range(k):
                    g = run.maps[f"gate{i + 1}"][row * s:(row + 1) * s].mean(axis=0)
                    gate_maps[f"gate{i + 1}"][n] = np.moveaxis(g, 0, axis)
            g_all = np.stack([gate_maps[f"gate{i + 1}"] for i in range(k)])
            routing = np.where(g_all.sum(axis=0) > 1e-6, np.argmax(g_all, axis=0), BACKGROUND).astype(np.float32)
            maps: dict[str, np.ndarray] = {"routing": routing, **gate_maps}
            if uncertainty is not None:
                maps["uncertainty"] = uncertainty
            info = {"steps": settings.steps, "sampler": settings.mode, "samples": s, "seed": settings.seed,
                    "slice_axis": axis_name, "slice_axis_reason": why, "tile": tile, "n_experts": k,
                    "gating": "uniform (at inference)" if predictor.uniform else net.arch.gating_mode,
                    "forced_expert": options.expert,
                    "tiles_skipped": predictor.skipped, "tiles_run": predictor.tiles_run,
                    "expert_calls": predictor.expert_calls, "intensity_scales": scales,
                    "clamped_at_zero": non_negative,
                    "gates": gate_summary(g_all, axis, predictor), "schedules": [sc.steps for sc in net.schedules]}
            return out, maps, info

        message = f"{why}; {settings.steps} {settings.mode} sampler step(s), {s} sample(s)"
        return FramePlan(inputs, np.repeat(run_frames_idx, s), predictor, (1, 1, 1), config, finish,
                         message=message, events=events)


def gate_summary(gates: np.ndarray, axis: int, predictor: _SlicePredictor) -> dict[str, Any]:
    """The gate weights per slice, summarised: over the slices that ran, the
    mean and standard deviation of each expert's mean gate, and how many slices
    each expert leads; plus the mean gate of every tile that ran.

    Args:
        gates: ``(K, N, K', J', I')`` blended gate maps (0 where nothing ran).
        axis: the slice axis (array axis of the frames).
    """
    k = gates.shape[0]
    g = np.moveaxis(gates, 2 + axis, 1)
    g = g.reshape(k, g.shape[1], -1)  # (K, slices, frames x voxels)
    covered = g.sum(axis=0) > 1e-6  # (slices, voxels)
    per_slice = []
    for sl in range(g.shape[1]):
        m = covered[sl]
        if m.any():
            per_slice.append(g[:, sl, m].mean(axis=1))
    tiles = predictor.gate_sums / max(predictor.tiles_run, 1)
    if not per_slice:
        return {"slices": 0, "tile_mean": tiles.round(4).tolist()}
    ps = np.stack(per_slice)  # (slices, K)
    leads = np.bincount(ps.argmax(axis=1), minlength=k)
    return {"slices": int(len(ps)), "mean": ps.mean(axis=0).round(4).tolist(), "std": ps.std(axis=0).round(4).tolist(),
            "slices_led": leads.tolist(), "tile_mean": tiles.round(4).tolist()}
