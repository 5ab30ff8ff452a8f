"""MoEDiff-SR on one whole 197 x 233 x 189 volume: seconds and peak memory.

The volume: held-out T1 sample subject 4 (1 mm template grid), degraded with
the 3T-like training degradation (a factor ~2.1 on every axis, blur, noise,
bias field, warp); the method enhances it back onto the 1 mm grid, slices
across k, default sampler steps.  Each configuration (full gating, top-1, and
anything given with ``--configs``) runs in its own subprocess, so its peak RSS
(and on CUDA its peak allocated GPU memory) is its own; the ratios are of runs
made side by side in one invocation.

    .venv/bin/python benchmarks/bench_moediff.py --checkpoint <moediff_t1> [--device cuda] [--steps N]
        [--out benchmarks/results/moediff_cpu.md]

Without ``--checkpoint`` the bundled one is used.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def one(cfg: dict) -> dict:
    """Run one configuration in this process; returns its measurements."""
    import dataclasses

    import numpy as np
    import torch

    from SuperResMoELib import sample_data
    from SuperResMoELib.core.intensity import robust_max
    from SuperResMoELib.evaluation.metrics import psnr
    from SuperResMoELib.evaluation.segmentation import brain_mask
    from SuperResMoELib.methods import EnhanceOptions, create_method
    from training.moediff.degradation import MoEDiffDegradation, acquire, draw_case

    hr = sample_data.t1_subject(4)
    deg = dataclasses.replace(MoEDiffDegradation(), thick_probability=0.0)
    rng = np.random.default_rng([0, 0x3E, 4, 0])
    lr, _, _ = acquire(hr, hr.grid, draw_case(deg, rng), deg, rng, robust_max(np.asarray(hr.array)))
    extra = {"target_grid": hr.grid, "sampler": cfg["sampler"]}
    if cfg.get("steps"):
        extra["steps"] = cfg["steps"]
    opts = EnhanceOptions(checkpoint=cfg.get("checkpoint"), overlap=cfg.get("overlap", 0.25), extra=extra)
    if cfg["device"].startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    res = create_method("moediff").enhance(lr, opts, device=cfg["device"])
    seconds = time.perf_counter() - t0
    arr = np.asarray(hr.array)
    out = {"config": cfg, "seconds": round(seconds, 1), "lr_shape_kji": list(lr.spatial_shape),
           "sr_shape_kji": list(res.volume.spatial_shape), "tiles_run": res.info["tiles_run"],
           "tiles_skipped": res.info["tiles_skipped"], "steps": res.info["steps"],
           "psnr_brain": round(psnr(arr, np.asarray(res.volume.array), mask=brain_mask(arr),
                                    data_range=float(arr.max() - arr.min())), 3),
           "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2, 2),
           "threads": torch.get_num_threads()}
    if cfg["device"].startswith("cuda"):
        out["peak_gpu_gb"] = round(torch.cuda.max_memory_allocated() / 1024 ** 3, 2)
        out["gpu"] = torch.cuda.get_device_name()
    return out


def render(results: list[dict]) -> str:
    base = results[0]["seconds"]
    lines = ["# MoEDiff-SR: one 197 x 233 x 189 volume", "",
             "Held-out sample subject 4, 3T-like degradation (factor ~2.1), back onto the 1 mm grid; slices "
             "across k; tile 64, overlap 0.25. Each row in its own process; ratios against the first row, "
             "measured side by side in one run.", "",
             "| sampler | steps | device | seconds | x first | peak RSS (GB) | peak GPU (GB) | tiles run / skipped | PSNR (brain) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        c = r["config"]
        lines.append(f"| {c['sampler']} | {r['steps']} | {c['device']} | {r['seconds']} | "
                     f"{base / r['seconds']:.2f} | {r['peak_rss_gb']} | {r.get('peak_gpu_gb', '-')} | "
                     f"{r['tiles_run']} / {r['tiles_skipped']} | {r['psnr_brain']} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="moediff_t1 checkpoint (default: the bundled one)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    p.add_argument("--steps", type=int, help="sampler steps (default: the method's)")
    p.add_argument("--out", help="Markdown file for the table (a .json beside it holds the raw numbers)")
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(one(json.loads(args.one))))
        return 0
    results = []
    for sampler in ("full", "top1"):
        cfg = {"sampler": sampler, "device": args.device, "checkpoint": args.checkpoint, "steps": args.steps}
        proc = subprocess.run([sys.executable, __file__, "--one", json.dumps(cfg)], capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return proc.returncode
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), flush=True)
    text = render(results)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
        Path(args.out).with_suffix(".json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
