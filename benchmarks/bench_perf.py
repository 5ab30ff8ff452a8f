"""The performance targets, measured side by side in one run.

Prints one ``RATIO <name> <value>`` line per ratio (and ``PEAK_RSS_MB``) at the
end and writes every measurement to a JSON file:

* ``remix_vs_monai`` - our default network pass of a REMIx expert over the T1
  sample on the 1 mm grid (the engine's automatic strategy: halo-crop tiles)
  / MONAI ``sliding_window_inference`` (ROI 64^3, overlap 0.5, gaussian) with
  the same network callable;
* ``remix_vs_whole`` - the same pass / one whole-volume forward pass (edge
  padded to the U-Net's multiple); ``MAXDIFF remix_vs_whole`` is the largest
  absolute difference between the two (normalised intensities, ~0..1);
* ``remix_tiled_vs_whole`` - our pass with half the memory it needs
  for one tile (several halo-crop tiles, as a volume too large for memory
  gets) / the whole-volume pass, with its ``MAXDIFF``;
* ``remix_sliding_vs_whole`` - the engine's former default (sliding 64^3
  windows, overlap 0.5, Gaussian blending) / the whole-volume pass: the "before";
* ``remix_end_to_end_s`` (``SECONDS``) - ``superresmoe enhance --method remix``
  on the T1 sample files (LR 1x1x4 mm -> 1 mm, with a reference: metrics and
  error maps written), a subprocess, wall time;
* ``ssmoe_vs_reference`` - SS-MoE (bundled aniso checkpoint) through its
  default path / the reference code's patching (zero padding by half a patch,
  every 8x16x16 window at stride 4, one network call per window, uniform
  averaging), on the same Super MUDI-sized frames (LR 82x92x28: the sample's
  LR frames zero-padded in-plane and cut to 28 slices); ``SSMOE_1344_FRAMES_MIN``
  extrapolates our per-frame time, measured over more frames, to a full subject;
* ``cubic_vs_scipy`` - our cubic resampling (``resample_array``) /
  ``scipy.ndimage.affine_transform`` order 3 on the same grids (T1 LR -> 1 mm);
* ``channels_last_vs_contiguous`` - the whole-volume pass in the channels-last
  memory layout (what REMIx runs) / the default layout; on CUDA also
  ``remix_float16_vs_float32`` and ``remix_bfloat16_vs_float32`` (autocast);
* ``compiled_vs_eager`` (with ``--compile``, run last) - the whole-volume pass
  under ``torch.compile`` / eager (the compiling first call timed apart);
* ``PEAK_RSS_MB`` - peak RSS of a subprocess that super-resolves a
  512x512x80 volume of 1x1x5 mm to 512x512x400 voxels with REMIx.

``--quick`` (under 5 minutes on 2 cores) uses a central crop of the T1 volume
for the network ratios, fewer frames and repeats; the 512x512x400 run is the
same.  Every timing is the best of ``--repeats`` runs after a warm-up run.

    .venv/bin/python benchmarks/bench_perf.py [--quick] [--device cpu|cuda] [--out benchmarks/results/perf_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def best_of(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """``(best seconds, last result)`` of ``repeats`` timed calls after one warm-up call."""
    result = fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


# ---------------------------------------------------------------- REMIx network
def remix_input(quick: bool):
    """The REMIx engine input: T1 sample LR (held-out subject 4, 1x1x4 mm)
    cubic-resampled to 1 mm and normalised as the method does, ``(1, K, J, I)``."""
    import numpy as np

    from SuperResMoELib import sample_data
    from SuperResMoELib.core.geometry import resample_array
    from SuperResMoELib.core.intensity import robust_max
    from SuperResMoELib.methods.resampled import target_grid

    lr, hr = sample_data.t1_pair(4, (1.0, 1.0, 4.0))
    target = target_grid(lr, None, 1.0)
    x = resample_array(np.asarray(lr.array, np.float32), lr.grid, target, "cubic")
    x /= robust_max(x, 99.5)
    if quick:  # a central crop
        c = [n // 2 for n in x.shape]
        x = np.ascontiguousarray(x[c[0] - 48:c[0] + 48, c[1] - 56:c[1] + 56, c[2] - 48:c[2] + 48])
    return lr, x[None]


def bench_remix(device: str, quick: bool, repeats: int) -> dict:
    import numpy as np
    import torch
    import torch.nn.functional as F

    try:
        from monai.inferers import sliding_window_inference
    except ImportError:
        raise SystemExit("bench_perf.py needs MONAI for remix_vs_monai: pip install 'superresmoe[bench]' "
                         "(or pass --only without remix)") from None

    from SuperResMoELib.engine.sliding import run_patches
    from SuperResMoELib.engine.windows import EngineConfig
    from SuperResMoELib.methods import create_method
    from SuperResMoELib.methods.base import EnhanceOptions
    from SuperResMoELib.methods.remix.checkpoint import unet_config
    from SuperResMoELib.methods.remix.experts import choose_expert
    from SuperResMoELib.methods.remix.method import _Predictor

    lr, x = remix_input(quick)
    method = create_method("remix")
    dev = torch.device(device)
    nets, _, manifest = method.load("t1", EnhanceOptions(), dev)
    expert, _ = choose_expert(lr.grid.spacing, None)
    cfg = unet_config(manifest)
    predictor = _Predictor(nets[f"expert{expert}"], cfg, floor=-1.0)  # no background skipping: same work everywhere
    predictor.to(dev)
    net = predictor.net

    def call(t: torch.Tensor) -> torch.Tensor:  # the one network callable every contender uses
        return net(t.contiguous(memory_format=torch.channels_last_3d)).contiguous()

    class Engine:  # the engine's predictor: the method's wrapper (channels-last, halo spec)
        halo_spec = predictor.halo_spec

        def __call__(self, t):
            b, c = t.shape[:2]
            return predictor(t.reshape((b * c, 1) + tuple(t.shape[2:])), None).reshape(t.shape)

    m = cfg.multiple
    xt = torch.from_numpy(x)[None]
    pad = [(-n) % m for n in x.shape[1:]]

    def whole() -> np.ndarray:
        with torch.inference_mode():
            t = F.pad(xt, (0, pad[2], 0, pad[1], 0, pad[0]), mode="replicate").to(dev)
            y = call(t)[0, 0, :x.shape[1], :x.shape[2], :x.shape[3]]
            return y.float().cpu().numpy()

    def ours() -> Any:
        return run_patches(x, Engine(), (1, 1, 1), EngineConfig(mixed_precision=False), device=dev)

    def sliding() -> Any:
        return run_patches(x, Engine(), (1, 1, 1), EngineConfig(64, 0.5, 2, False, strategy="sliding"), device=dev)

    def monai() -> np.ndarray:
        with torch.inference_mode():
            y = sliding_window_inference(xt.to(dev), (64, 64, 64), 2, call, overlap=0.5, mode="gaussian",
                                         sigma_scale=0.125)
            return y[0, 0].float().cpu().numpy()

    import copy

    contiguous = copy.deepcopy(net).to(memory_format=torch.contiguous_format)

    def whole_contiguous() -> np.ndarray:  # the default memory layout, for the channels-last ratio
        with torch.inference_mode():
            t = F.pad(xt, (0, pad[2], 0, pad[1], 0, pad[0]), mode="replicate").to(dev)
            return contiguous(t)[0, 0, :x.shape[1], :x.shape[2], :x.shape[3]].float().cpu().numpy()

    def ours_tiled() -> Any:  # a budget that forces several tiles: what a volume too large for memory gets
        budget = int(predictor.halo_spec.bytes_per_voxel * x[0].size / 2)
        return run_patches(x, Engine(), (1, 1, 1), EngineConfig(mixed_precision=False, memory_budget=budget),
                           device=dev)

    t_whole, ref = best_of(whole, repeats)
    t_ours, res = best_of(ours, repeats)
    t_tiled, tiled = best_of(ours_tiled, max(1, repeats - 1))
    t_monai, mon = best_of(monai, repeats)
    t_slide, sl = best_of(sliding, max(1, repeats - 1))
    t_contig, _ = best_of(whole_contiguous, max(1, repeats - 1))
    seconds = {"ours": t_ours, "whole": t_whole, "monai": t_monai, "sliding_overlap_0.5": t_slide,
               "whole_contiguous_layout": t_contig, "ours_half_the_memory": t_tiled}
    diffs = {"ours": float(np.abs(res.image[0] - ref).max()), "monai": float(np.abs(mon - ref).max()),
             "sliding_overlap_0.5": float(np.abs(sl.image[0] - ref).max()),
             "ours_half_the_memory": float(np.abs(tiled.image[0] - ref).max())}
    ratios = {"remix_vs_monai": t_ours / t_monai, "remix_vs_whole": t_ours / t_whole,
              "remix_tiled_vs_whole": t_tiled / t_whole,
              "remix_sliding_vs_whole": t_slide / t_whole, "monai_vs_whole": t_monai / t_whole,
              "channels_last_vs_contiguous": t_whole / t_contig}
    if dev.type == "cuda":  # autocast precisions through our default pass
        for dtype in ("float16", "bfloat16"):
            t_amp, amp = best_of(lambda d=dtype: run_patches(x, Engine(), (1, 1, 1), EngineConfig(amp_dtype=d),
                                                             device=dev), repeats)
            seconds[f"ours_{dtype}"] = t_amp
            diffs[f"ours_{dtype}"] = float(np.abs(amp.image[0] - ref).max())
            ratios[f"remix_{dtype}_vs_float32"] = t_amp / t_ours
    return {
        "input_kji": list(x.shape[1:]), "expert": expert, "network": cfg.to_dict(), "device": device,
        "seconds": seconds, "ours_tiling": res.tiling, "tiled_tiling": tiled.tiling,
        "max_abs_diff_vs_whole": diffs, "ratios": ratios,
    }


def bench_compile(device: str, quick: bool, repeats: int) -> dict:
    """The REMIx whole-volume pass eager and under ``torch.compile`` (the first,
    compiling call is timed apart)."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from SuperResMoELib.methods import create_method
    from SuperResMoELib.methods.base import EnhanceOptions
    from SuperResMoELib.methods.remix.checkpoint import unet_config

    _, x = remix_input(quick)
    dev = torch.device(device)
    nets, _, manifest = create_method("remix").load("t1", EnhanceOptions(), dev)
    net = nets["expert4"].to(memory_format=torch.channels_last_3d)
    m = unet_config(manifest).multiple
    pad = [(-n) % m for n in x.shape[1:]]
    t = F.pad(torch.from_numpy(x)[None], (0, pad[2], 0, pad[1], 0, pad[0]), mode="replicate").to(dev)
    t = t.contiguous(memory_format=torch.channels_last_3d)

    def run(module) -> np.ndarray:
        with torch.inference_mode():
            return module(t).float().cpu().numpy()

    t_eager, ref = best_of(lambda: run(net), repeats)
    compiled = torch.compile(net)
    t0 = time.perf_counter()
    run(compiled)
    t_first = time.perf_counter() - t0
    t_comp, out = best_of(lambda: run(compiled), repeats)
    return {"input_kji": list(t.shape[2:]), "seconds": {"eager": t_eager, "compiled": t_comp, "first_call": t_first},
            "max_abs_diff": float(np.abs(out - ref).max()), "ratios": {"compiled_vs_eager": t_comp / t_eager}}


# ---------------------------------------------------------------- end to end
def bench_remix_end_to_end(device: str, work: Path) -> dict:
    """``superresmoe enhance --method remix`` on the T1 sample files (a subprocess)."""
    data = work / "samples"
    subprocess.run([sys.executable, "-m", "SuperResMoELib", "sample-data", "--out", str(data), "--kind", "t1",
                    "--progress", "none"], check=True, capture_output=True, cwd=ROOT)
    cmd = [sys.executable, "-m", "SuperResMoELib", "enhance", "-i", str(data / "t1_lr.nii.gz"), "-o",
           str(work / "t1_remix.nii.gz"), "-m", "remix", "--reference", str(data / "t1_hr.nii.gz"),
           "--device", device, "--progress", "json"]
    t0 = time.perf_counter()
    run = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - t0
    last = json.loads(run.stdout.strip().splitlines()[-1])["result"]["outputs"][0]
    return {"command": "superresmoe enhance -i t1_lr.nii.gz -o t1_remix.nii.gz -m remix --reference t1_hr.nii.gz",
            "seconds": seconds, "method_seconds": last["info"]["seconds"], "psnr": last["metrics"]["psnr"],
            "tiling": last["info"]["tiling"]}


# ---------------------------------------------------------------- SS-MoE
def super_mudi_frames(n_frames: int):
    """``(lr (N, 28, 92, 82) KJI, hr (N, 56, 92, 82), grid, table)``: the MUDI
    sample's aniso LR/HR frames zero-padded in-plane to the Super MUDI size."""
    import numpy as np

    from SuperResMoELib import sample_data
    from SuperResMoELib.core.volume import Grid, Volume

    subject = sample_data.mudi_subject(4)
    lr, hr = subject.lr(list(range(n_frames)), "aniso")
    a, h = np.asarray(lr.array), np.asarray(hr.array)  # (N, 33, 78, 62), (N, 66, 78, 62)
    out = np.zeros((n_frames, 28, 92, 82), np.float32)
    out_hr = np.zeros((n_frames, 56, 92, 82), np.float32)
    k0 = (a.shape[1] - 28) // 2
    j0, i0 = (92 - a.shape[2]) // 2, (82 - a.shape[3]) // 2
    out[:, :, j0:j0 + a.shape[2], i0:i0 + a.shape[3]] = a[:, k0:k0 + 28]
    out_hr[:, :, j0:j0 + a.shape[2], i0:i0 + a.shape[3]] = h[:, 2 * k0:2 * k0 + 56]
    vol = Volume(out, lr.grid.ijk_to_ras, name="super_mudi_lr", acquisition=lr.acquisition)
    return vol, out_hr, Grid


def reference_patching(net, frames, rows, factor: float, device) -> Any:
    """The reference's test-time patching: zero-pad LR by half a patch, every
    (8, 16, 16) window at stride 4 through the network alone, 16^3 outputs
    averaged uniformly, unpadded.  ``frames (N, 28, 92, 82)`` -> ``(N, 56, 92, 82)``."""
    import numpy as np
    import torch

    pk, pj, pi = 8, 16, 16
    out = np.zeros((len(frames), 56, 92, 82), np.float32)
    with torch.inference_mode():
        for n, f in enumerate(frames):
            x = np.pad(f, ((4, 4), (8, 8), (8, 8)))
            acc = np.zeros((2 * x.shape[0], x.shape[1], x.shape[2]), np.float32)
            cnt = np.zeros_like(acc)
            row = torch.as_tensor(rows[n:n + 1], device=device)
            for k in range(0, x.shape[0] - pk + 1, 4):
                for j in range(0, x.shape[1] - pj + 1, 4):
                    for i in range(0, x.shape[2] - pi + 1, 4):
                        p = torch.from_numpy(x[k:k + pk, j:j + pj, i:i + pi][None, None] * factor).to(device)
                        y, _ = net(p, row)
                        acc[2 * k:2 * k + 16, j:j + 16, i:i + 16] += y[0, 0].float().cpu().numpy() / factor
                        cnt[2 * k:2 * k + 16, j:j + 16, i:i + 16] += 1
            out[n] = (acc / np.maximum(cnt, 1))[8:-8, 8:-8, 8:-8]
    return out


def bench_ssmoe(device: str, quick: bool, repeats: int) -> dict:
    import numpy as np
    import torch

    from SuperResMoELib.evaluation.metrics import psnr
    from SuperResMoELib.methods import create_method
    from SuperResMoELib.methods.base import EnhanceOptions
    from SuperResMoELib.methods.ssmoe.checkpoint import intensity_factor

    n_ref = 1 if quick else 2
    n_ours = 8 if quick else 32
    vol, hr, _ = super_mudi_frames(n_ours)
    method = create_method("ssmoe")
    net, _, manifest = method.load("aniso", EnhanceOptions(), device)
    factor = intensity_factor(manifest)
    sub = vol.with_array(np.asarray(vol.array)[:n_ref], acquisition=vol.acquisition.rows(list(range(n_ref))))

    t_ours, res = best_of(lambda: method.enhance(sub, EnhanceOptions(), device), repeats)
    rows, _ = method._acquisitions(sub, EnhanceOptions(), net)
    t0 = time.perf_counter()
    ref = reference_patching(net, np.asarray(sub.array), rows, factor, torch.device(device))
    t_ref = time.perf_counter() - t0
    ours = np.asarray(res.volume.array).reshape(ref.shape)
    peak = float(hr.max())

    def quality(sr: np.ndarray) -> dict:
        """PSNR over each frame (peak: the frames' HR maximum) and the mean squared error in the brain."""
        sr = sr.reshape(hr.shape[:1] + hr.shape[1:])[: len(hr)]
        return {"psnr": float(np.mean([psnr(hr[n], sr[n], peak) for n in range(len(sr))])),
                "brain_mse": float(np.mean([np.mean((hr[n] - sr[n])[hr[n] > 0] ** 2) for n in range(len(sr))]))}

    many: dict[str, Any] = {}
    for overlap in (0.5, 0.25):  # the default, and the faster setting for whole subjects
        t_many, run = best_of(lambda o=overlap: method.enhance(vol, EnhanceOptions(overlap=o), device),
                              max(1, repeats - 1))
        many[f"overlap_{overlap:g}"] = {"seconds": t_many, "seconds_per_frame": t_many / n_ours,
                                        "subject_1344_frames_min": t_many / n_ours * 1344 / 60,
                                        "windows_per_frame": run.info["patches"] // n_ours,
                                        **quality(np.asarray(run.volume.array))}
    ref_peak = float(hr[:n_ref].max())
    return {
        "lr_kji": list(vol.spatial_shape), "frames_ratio": n_ref, "frames_throughput": n_ours, "device": device,
        "checkpoint": "bundled ssmoe_aniso (width 8, 4 experts)",
        "seconds": {"ours": t_ours, "reference": t_ref},
        "windows_per_frame": {"ours": res.info["patches"] // n_ref, "reference": 8 * 24 * 21},
        "psnr_vs_hr": {"ours": float(np.mean([psnr(hr[n], ours[n], ref_peak) for n in range(n_ref)])),
                       "reference": float(np.mean([psnr(hr[n], ref[n], ref_peak) for n in range(n_ref)]))},
        "max_abs_diff_ours_vs_reference": float(np.abs(ours - ref).max()),
        "throughput": many, "subject_1344_frames_min": many["overlap_0.5"]["subject_1344_frames_min"],
        "ratios": {"ssmoe_vs_reference": t_ours / t_ref},
    }


# ---------------------------------------------------------------- cubic
def bench_cubic(repeats: int) -> dict:
    import numpy as np
    from scipy import ndimage

    from SuperResMoELib import sample_data
    from SuperResMoELib.core.geometry import _kji_affine, index_map, resample_array
    from SuperResMoELib.methods.resampled import target_grid

    lr, _ = sample_data.t1_pair(4, (1.0, 1.0, 4.0))
    target = target_grid(lr, None, 1.0)
    a = np.asarray(lr.array, np.float32)
    lin, off = _kji_affine(index_map(lr.grid, target))

    def scipy_way():
        return ndimage.affine_transform(a, lin, offset=off, output_shape=target.shape, order=3, mode="nearest",
                                        output=np.float32)

    t_ours, ours = best_of(lambda: resample_array(a, lr.grid, target, "cubic"), repeats)
    t_scipy, ref = best_of(scipy_way, repeats)
    return {"source_kji": list(a.shape), "target_kji": list(target.shape), "seconds": {"ours": t_ours, "scipy": t_scipy},
            "max_abs_diff": float(np.abs(ours - ref).max()), "value_range": float(a.max() - a.min()),
            "ratios": {"cubic_vs_scipy": t_ours / t_scipy}}


# ---------------------------------------------------------------- peak RSS
def big_remix_child(device: str) -> None:
    """In a subprocess: REMIx on a 512x512x80 volume of 1x1x5 mm (-> 512x512x400)."""
    import numpy as np

    from SuperResMoELib.core.volume import Volume
    from SuperResMoELib.methods import create_method
    from SuperResMoELib.methods.base import EnhanceOptions

    k, j, i = (np.linspace(-1, 1, n, dtype=np.float32) ** 2 for n in (80, 512, 512))
    arr = np.empty((80, 512, 512), np.float32)  # a head-like blob, built slice by slice (84 MB, no temporaries)
    ji = j[:, None] + i[None, :]
    for n in range(80):
        np.subtract(1.2 - k[n], ji, out=arr[n])
    np.clip(arr, 0, None, out=arr)
    arr *= 800.0
    vol = Volume(arr, np.diag([1.0, 1.0, 5.0, 1.0]), name="big")
    base = peak_rss_mb()
    t0 = time.perf_counter()
    res = create_method("remix").enhance(vol, EnhanceOptions(), device)
    print(json.dumps({"seconds": time.perf_counter() - t0, "output_kji": list(res.volume.spatial_shape),
                      "peak_rss_mb": peak_rss_mb(), "rss_before_mb": base, "tiling": res.info["tiling"]}))


def peak_rss_mb() -> float:
    """This process's peak resident memory in MiB: ``VmHWM`` (Linux; its own
    address space only - ``ru_maxrss`` of a child started by ``fork`` + ``exec``
    also counts the parent's peak at the fork), else ``ru_maxrss``."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform != "darwin" else 2**20)


def bench_peak_rss(device: str) -> dict:
    run = subprocess.run([sys.executable, __file__, "--big-child", "--device", device], check=True,
                         capture_output=True, text=True, cwd=ROOT)
    return json.loads(run.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a smaller set, under 5 minutes on 2 cores")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per contender (default 2, quick 1)")
    ap.add_argument("--only", default="remix,end_to_end,ssmoe,cubic,rss", help="comma-separated parts to run")
    ap.add_argument("--out", type=Path, default=None, help="JSON file (default benchmarks/results/perf_<device>.json)")
    ap.add_argument("--compile", action="store_true", help="also time the whole-volume pass under torch.compile (last)")
    ap.add_argument("--big-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.big_child:
        big_remix_child(args.device)
        return 0
    import torch

    from SuperResMoELib.engine.devices import match_threads

    threads = match_threads()
    repeats = args.repeats or (1 if args.quick else 2)
    parts = [p.strip() for p in args.only.split(",") if p.strip()] + (["compile"] if args.compile else [])
    out = args.out or ROOT / "benchmarks" / "results" / f"perf_{args.device.split(':')[0]}{'_quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    report: dict[str, Any] = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "threads": threads,
                    "torch": torch.__version__, "device": args.device,
                    "gpu": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else None},
        "quick": args.quick, "repeats": repeats, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    lines: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for part in parts:
            t0 = time.perf_counter()
            if part == "remix":
                r = bench_remix(args.device, args.quick, repeats)
                lines += [f"MAXDIFF remix_vs_whole {r['max_abs_diff_vs_whole']['ours']:.3g}",
                          f"MAXDIFF remix_tiled_vs_whole {r['max_abs_diff_vs_whole']['ours_half_the_memory']:.3g}",
                          f"MAXDIFF remix_sliding_vs_whole {r['max_abs_diff_vs_whole']['sliding_overlap_0.5']:.3g}",
                          f"MAXDIFF monai_vs_whole {r['max_abs_diff_vs_whole']['monai']:.3g}"]
            elif part == "end_to_end":
                r = bench_remix_end_to_end(args.device, Path(tmp))
                lines += [f"SECONDS remix_end_to_end {r['seconds']:.1f}"]
            elif part == "ssmoe":
                r = bench_ssmoe(args.device, args.quick, repeats)
                lines += [f"SSMOE_1344_FRAMES_MIN {r['subject_1344_frames_min']:.1f}",
                          f"SSMOE_1344_FRAMES_MIN_OVERLAP_0.25 "
                          f"{r['throughput']['overlap_0.25']['subject_1344_frames_min']:.1f}"]
            elif part == "cubic":
                r = bench_cubic(repeats)
            elif part == "compile":
                r = bench_compile(args.device, args.quick, repeats)
            elif part == "rss":
                r = bench_peak_rss(args.device)
                lines += [f"PEAK_RSS_MB {r['peak_rss_mb']:.0f}"]
            else:
                ap.error(f"unknown part {part!r}")
            r["wall_seconds"] = time.perf_counter() - t0
            report[part] = r
            lines += [f"RATIO {k} {v:.3f}" for k, v in r.get("ratios", {}).items()]
            print(f"[{part}] {r['wall_seconds']:.0f} s", file=sys.stderr, flush=True)
            out.write_text(json.dumps(report, indent=2) + "\n")  # after every part: a killed run keeps its numbers
    report["wall_seconds"] = time.perf_counter() - t_start
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out} ({report['wall_seconds']:.0f} s)")
    for line in sorted(lines, key=lambda s: not s.startswith("RATIO")):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
