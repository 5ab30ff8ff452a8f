#!/usr/bin/env python
"""SSIM side by side in one run: the library's torch SSIM
(:mod:`SuperResMoELib.evaluation.ssim`) against scikit-image's
``structural_similarity`` (gaussian weights, sigma 2.5, no sample covariance)
on the same pair, 3D and per axial slice; prints the values, their difference,
the seconds (best of ``--repeat``) and one ``RATIO`` line per mode.

    .venv/bin/python benchmarks/bench_ssim.py                 # the embedded T1 subject 4 (197x233x188)
    .venv/bin/python benchmarks/bench_ssim.py --quick         # a 96^3 crop
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def best(fn, repeat: int) -> tuple[float, float]:
    value, times = None, []
    for _ in range(repeat):
        t = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t)
    return float(value), min(times)


def main(argv: list[str] | None = None) -> int:
    import torch
    from skimage.metrics import structural_similarity

    from SuperResMoELib import sample_data
    from SuperResMoELib.evaluation.metrics import SSIM_SIGMA, ssim3d, ssim_slices

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a 96^3 crop instead of the whole volume")
    p.add_argument("--repeat", type=int, default=3, help="runs per measurement (best is kept; default 3)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    ref = np.asarray(sample_data.t1_subject(4).array, np.float64)
    if args.quick:
        ref = ref[40:136, 60:156, 50:146]
    pred = ref + np.random.default_rng(0).normal(0, 0.02, ref.shape)
    dr = float(ref.max() - ref.min())
    kw = dict(gaussian_weights=True, sigma=SSIM_SIGMA, use_sample_covariance=False, data_range=dr)
    print(f"volume {ref.shape} (K, J, I), torch threads {args.threads}, best of {args.repeat}")
    ratios = {}
    for mode in ("3d", "slices"):
        if mode == "3d":
            ours = best(lambda: ssim3d(ref, pred, data_range=dr), args.repeat)
            theirs = best(lambda: structural_similarity(ref, pred, **kw), args.repeat)
        else:
            ours = best(lambda: ssim_slices(ref, pred, data_range=dr), args.repeat)
            theirs = best(lambda: np.mean([structural_similarity(ref[k], pred[k], **kw)
                                           for k in range(ref.shape[0])]), args.repeat)
        ratios[mode] = ours[1] / theirs[1]
        print(f"{mode:7s} torch {ours[0]:.6f} in {ours[1]:.2f} s | scikit-image {theirs[0]:.6f} in {theirs[1]:.2f} s"
              f" | |diff| {abs(ours[0] - theirs[0]):.1e}")
    for mode, r in ratios.items():
        print(f"RATIO ssim_{mode}_vs_skimage {r:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
