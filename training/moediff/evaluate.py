"""MoEDiff-SR evaluation with the paper's Table III protocol (paper 003
section III-IV) on held-out T1 sample subjects.

Cases: for each held-out subject, ``cases`` 3T-like acquisitions (the
training degradation with ``thick_probability = 0``: every axis coarser by a
factor around 2.1, the paper's 1.5 -> 0.7 mm, plus blur, noise, bias field and
gradient-nonlinearity warp; seeded) of a slab of ``slab`` axial slices through
the middle of the subject's brain box (the paper evaluates 2D slices; a slab
keeps a CPU evaluation affordable).  Every method gets the LR scan on its own
grid and the HR grid as its target grid.

Rows: cubic; REMIx (when its checkpoint is given: the same inputs); a
single-expert latent diffusion of the same training budget (when given);
MoEDiff-SR with uniform gating (the trained model, every expert at 1/3),
with its own (global) gating, with spatial gating (when a spatial checkpoint
is given), and top-1 asynchronous.  Scores inside the HR brain mask: PSNR
(peak = HR max - min), SSIM (2D, mean over the slices), RMSE and GMSD (an offline perceptual
measure, :mod:`SuperResMoELib.evaluation.perceptual`; LPIPS needs weights that
cannot be downloaded) on intensities divided by the HR's robust maximum;
seconds per slab.  Per network: parameters, and FLOPs per 64 x 64 tile for
the whole sampler (``torch.utils.flop_counter``).

Caveat printed with every table: the subjects are warps of one template, so
"held out" means held out from training, not a new population; slabs of one
subject are not independent samples for a significance test.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from SuperResMoELib import sample_data
from SuperResMoELib.core.geometry import resample, sub_volume
from SuperResMoELib.core.intensity import robust_max
from SuperResMoELib.core.volume import Volume
from SuperResMoELib.evaluation.metrics import psnr, rmse, ssim_slices
from SuperResMoELib.evaluation.perceptual import gmsd
from SuperResMoELib.evaluation.segmentation import brain_mask
from SuperResMoELib.io.atomic import write_text_atomic
from SuperResMoELib.io.tables import markdown_table, write_csv
from SuperResMoELib.methods import EnhanceOptions, create_method

from ..figures import pyplot, save_figure
from ..remix.evaluate import HELD_OUT_SUBJECTS, brain_box
from ..statistics import wilcoxon_paired
from .degradation import MoEDiffDegradation, acquire, draw_case

log = logging.getLogger("superresmoe.training")

CAVEAT = ("The subjects are warps of one template (the MNI152 2009 T1), so \"held out\" means held out from "
          "training, not a new population; slabs of one subject are not independent samples, so the Wilcoxon "
          "p-values describe these cases only. The HR is template-derived: smoother than a real 7T scan.")
METRICS: tuple[str, ...] = ("psnr", "ssim", "rmse", "gmsd", "seconds")
#: Row labels, in table order, and the method / options each runs.
CUBIC, REMIX, SINGLE = "cubic", "REMIx", "single-expert diffusion"
UNIFORM, GLOBAL, SPATIAL, TOP1 = ("MoEDiff-SR, uniform gating", "MoEDiff-SR (global gating)",
                                  "MoEDiff-SR (spatial gating)", "MoEDiff-SR top-1 async")
#: Salt of the evaluation cases' draws (independent of training).
EVAL_SALT = 0x3E


def slab(hr: Volume, slices: int) -> Volume:
    """The brain box of ``hr`` cut to ``slices`` axial (k) slices through its middle."""
    box = brain_box(hr)
    k = box.spatial_shape[0]
    lo = max(0, (k - slices) // 2)
    return sub_volume(box, (lo, 0, 0), (min(k, lo + slices),) + tuple(box.spatial_shape[1:]))


def scores(hr: np.ndarray, image: np.ndarray, mask: np.ndarray, scale: float) -> dict[str, float]:
    """The Table III scores of one image (module docstring)."""
    peak = float(hr.max() - hr.min())
    return {"psnr": psnr(hr, image, data_range=peak, mask=mask), "ssim": ssim_slices(hr, image, data_range=peak),
            "rmse": rmse(hr / scale, image / scale, mask=mask), "gmsd": gmsd(hr, image, data_range=peak)}


def _runs(checkpoints: dict[str, str], steps: int) -> list[tuple[str, str, dict[str, Any]]]:
    """``(label, method, enhance options)`` of every row the checkpoints allow."""
    runs: list[tuple[str, str, dict[str, Any]]] = [(CUBIC, "cubic", {})]
    if "remix" in checkpoints:
        runs.append((REMIX, "remix", {"checkpoint": checkpoints["remix"]}))
    md = {"steps": steps}
    if "single" in checkpoints:
        runs.append((SINGLE, "moediff", {"checkpoint": checkpoints["single"], "extra": md}))
    g = checkpoints["moediff"]
    runs += [(UNIFORM, "moediff", {"checkpoint": g, "extra": {**md, "gating": "uniform"}}),
             (GLOBAL, "moediff", {"checkpoint": g, "extra": md})]
    if "spatial" in checkpoints:
        runs.append((SPATIAL, "moediff", {"checkpoint": checkpoints["spatial"], "extra": md}))
    runs.append((TOP1, "moediff", {"checkpoint": g, "extra": {**md, "sampler": "top1"}}))
    return runs


def evaluate_cases(checkpoints: dict[str, str], subjects: Sequence[int] = HELD_OUT_SUBJECTS[:2], cases: int = 1,
                   slices: int = 16, steps: int | None = None, degradation: MoEDiffDegradation | None = None,
                   device: str = "cpu", seed: int = 0, overlap: float = 0.25) -> list[dict[str, Any]]:
    """One row per (case, model) with :data:`METRICS` (see the module docstring).

    Args:
        checkpoints: ``moediff`` (required), optionally ``remix``, ``single``, ``spatial``.
        steps: sampler steps (default: the method's).
    """
    from SuperResMoELib.methods.moediff.method import DEFAULT_STEPS

    import dataclasses

    deg = dataclasses.replace(degradation or MoEDiffDegradation(), thick_probability=0.0)
    steps = steps or DEFAULT_STEPS
    rows: list[dict[str, Any]] = []
    for s in subjects:
        full = sample_data.t1_subject(int(s))
        scale = robust_max(np.asarray(full.array))
        hr = slab(full, slices)
        arr = np.asarray(hr.array, np.float32)
        mask = brain_mask(arr)
        for c in range(cases):
            rng = np.random.default_rng([seed, EVAL_SALT, int(s), c])
            case = draw_case(deg, rng)
            lr, _, _ = acquire(hr, full.grid, case, deg, rng, scale)
            for label, method, opts in _runs(checkpoints, steps):
                extra = {**opts.get("extra", {}), "target_grid": hr.grid}
                o = EnhanceOptions(checkpoint=opts.get("checkpoint"), overlap=overlap, extra=extra)
                t0 = time.perf_counter()
                if method == "cubic":
                    out = np.asarray(resample(lr, hr.grid, "cubic").array, np.float32)
                else:
                    out = np.asarray(create_method(method).enhance(lr, o, device=device).volume.array, np.float32)
                sec = time.perf_counter() - t0
                row = {"subject": int(s), "case": c, "factor": round(case["factors_ijk"][0], 3),
                       "model": label, **scores(arr, out, mask, scale), "seconds": sec}
                rows.append(row)
                log.info("subject %d case %d %s: PSNR %.2f dB SSIM %.4f (%.1f s)", s, c, label, row["psnr"],
                         row["ssim"], sec)
    return rows


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean +- std of every metric per model (table order)."""
    out = []
    for label in dict.fromkeys(r["model"] for r in rows):
        sel = [r for r in rows if r["model"] == label]
        row: dict[str, Any] = {"model": label, "n": len(sel)}
        for m in METRICS:
            v = np.array([r[m] for r in sel], float)
            row[m] = f"{v.mean():.4g} ± {v.std():.2g}" if m != "seconds" else f"{v.mean():.1f}"
        out.append(row)
    return out


def paired_tests(rows: list[dict[str, Any]], baseline: str) -> list[dict[str, Any]]:
    """Paired Wilcoxon of every model's PSNR against ``baseline`` over the cases."""
    base = [r["psnr"] for r in rows if r["model"] == baseline]
    out = []
    for label in dict.fromkeys(r["model"] for r in rows):
        if label == baseline:
            continue
        other = [r["psnr"] for r in rows if r["model"] == label]
        if len(other) != len(base) or len(base) < 2:
            continue
        w = wilcoxon_paired(other, base)
        out.append({"model": label, "vs": baseline, "mean_diff_db": float(np.mean(np.subtract(other, base))), **w})
    return out


def network_costs(checkpoint: str, tile: int = 64, steps: int | None = None) -> dict[str, Any]:
    """Parameters (millions) of each part and FLOPs (G) per ``tile`` x ``tile`` tile
    of the whole sampler in full and top-1 mode, counted by ``torch.utils.flop_counter``."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from SuperResMoELib.methods.moediff.method import DEFAULT_STEPS, MoEDiffMethod

    method = MoEDiffMethod()
    net, _, _ = method.load("t1", EnhanceOptions(checkpoint=checkpoint), "cpu")
    steps = steps or DEFAULT_STEPS
    params = {name: sum(p.numel() for p in mod.parameters()) / 1e6 for name, mod in net.named_children()}
    flops = {}
    x = torch.rand(1, 1, tile, tile)
    for mode in ("full", "top1"):
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            net.enhance_slices(x, steps=steps, mode=mode, generator=torch.Generator().manual_seed(0))
        flops[mode] = counter.get_total_flops() / 1e9
    return {"params_M": {k: round(v, 3) for k, v in params.items()}, "params_total_M": round(sum(params.values()), 3),
            "gflops_per_tile": {k: round(v, 3) for k, v in flops.items()}, "tile": tile, "steps": steps}


def steps_curve(checkpoint: str, steps: Sequence[int] = (1, 2, 5, 10, 20, 50, 100), subject: int = HELD_OUT_SUBJECTS[0],
                slices: int = 8, seed: int = 0, device: str = "cpu") -> list[dict[str, Any]]:
    """PSNR / SSIM and seconds of MoEDiff-SR (full and top-1) against the sampler
    steps, on one held-out case (a slab of ``slices`` slices)."""
    import dataclasses

    deg = dataclasses.replace(MoEDiffDegradation(), thick_probability=0.0)
    full = sample_data.t1_subject(int(subject))
    scale = robust_max(np.asarray(full.array))
    hr = slab(full, slices)
    arr = np.asarray(hr.array, np.float32)
    mask = brain_mask(arr)
    rng = np.random.default_rng([seed, EVAL_SALT, int(subject), 0])
    case = draw_case(deg, rng)
    lr, _, _ = acquire(hr, full.grid, case, deg, rng, scale)
    cubic = np.asarray(resample(lr, hr.grid, "cubic").array, np.float32)
    rows = [{"steps": 0, "sampler": "cubic", **scores(arr, cubic, mask, scale), "seconds": 0.0}]
    for mode in ("full", "top1"):
        for n in steps:
            o = EnhanceOptions(checkpoint=checkpoint, overlap=0.25,
                               extra={"steps": int(n), "sampler": mode, "target_grid": hr.grid})
            t0 = time.perf_counter()
            out = np.asarray(create_method("moediff").enhance(lr, o, device=device).volume.array, np.float32)
            rows.append({"steps": int(n), "sampler": mode, **scores(arr, out, mask, scale),
                         "seconds": time.perf_counter() - t0})
            log.info("steps %d %s: PSNR %.2f (%.1f s)", n, mode, rows[-1]["psnr"], rows[-1]["seconds"])
    return rows


def steps_figure(rows: list[dict[str, Any]], path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    cubic = next(r for r in rows if r["sampler"] == "cubic")
    for mode, style in (("full", "o-"), ("top1", "s--")):
        sel = [r for r in rows if r["sampler"] == mode]
        axes[0].plot([r["steps"] for r in sel], [r["psnr"] for r in sel], style, label=f"MoEDiff-SR {mode}")
        axes[1].plot([r["steps"] for r in sel], [r["seconds"] for r in sel], style, label=mode)
    axes[0].axhline(cubic["psnr"], color="grey", ls=":", label="cubic")
    for ax, what in zip(axes, ("PSNR (dB, brain mask)", "seconds per slab")):
        ax.set_xscale("log")
        ax.set_xlabel("sampler steps")
        ax.set_ylabel(what)
        ax.legend(fontsize=8)
    fig.suptitle("MoEDiff-SR: quality and time vs sampler steps (one held-out slab)", fontsize=9)
    save_figure(fig, path)


def expert_figure(checkpoint: str, path: Path, subject: int = HELD_OUT_SUBJECTS[0], steps: int | None = None,
                  seed: int = 0) -> dict[str, float]:
    """The paper's Table IV: per-expert absolute difference maps on one held-out
    axial slice (each expert alone, and the gated mixture); returns their PSNRs."""
    import dataclasses

    from SuperResMoELib.methods.moediff.method import DEFAULT_STEPS

    deg = dataclasses.replace(MoEDiffDegradation(), thick_probability=0.0)
    full = sample_data.t1_subject(int(subject))
    scale = robust_max(np.asarray(full.array))
    hr = slab(full, 1)
    arr = np.asarray(hr.array, np.float32)
    rng = np.random.default_rng([seed, EVAL_SALT, int(subject), 99])
    lr, _, _ = acquire(hr, full.grid, draw_case(deg, rng), deg, rng, scale)
    images = {"cubic": np.asarray(resample(lr, hr.grid, "cubic").array, np.float32)}
    for e in (1, 2, 3, None):
        o = EnhanceOptions(checkpoint=checkpoint, expert=e, overlap=0.25,
                           extra={"steps": steps or DEFAULT_STEPS, "target_grid": hr.grid})
        images[f"expert {e}" if e else "MoEDiff-SR"] = np.asarray(
            create_method("moediff").enhance(lr, o, device="cpu").volume.array, np.float32)
    plt = pyplot()
    fig, axes = plt.subplots(1, len(images) + 1, figsize=(2.6 * (len(images) + 1), 3))
    axes[0].imshow(arr[0] / scale, cmap="gray", vmin=0, vmax=1.1)
    axes[0].set_title("HR", fontsize=9)
    vmax = 0.15
    out = {}
    for ax, (name, img) in zip(axes[1:], images.items()):
        err = np.abs(img[0] - arr[0]) / scale
        im = ax.imshow(err, cmap="magma", vmin=0, vmax=vmax)
        out[name] = psnr(arr, img, data_range=float(arr.max() - arr.min()))
        ax.set_title(f"|{name} - HR|\n{out[name]:.2f} dB", fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.colorbar(im, ax=axes[-1], fraction=0.046)
    fig.suptitle("per-expert absolute difference to the HR (held-out subject, one axial slice; / robust max)",
                 fontsize=9)
    save_figure(fig, path)
    return out


def write_report(out: Path, rows: list[dict[str, Any]], extra: dict[str, Any]) -> str:
    """``moediff_table3.md`` / ``.csv`` / ``.json`` under ``out``; returns the Markdown."""
    out.mkdir(parents=True, exist_ok=True)
    write_csv(rows, out / "moediff_table3.csv")
    table = summary(rows)
    tests = [paired_tests(rows, b) for b in (SINGLE, CUBIC) if any(r["model"] == b for r in rows)]
    md = ["# MoEDiff-SR: Table III protocol on held-out sample subjects", "", CAVEAT, "",
          markdown_table(table, ["model", "n"] + list(METRICS)), ""]
    for t in tests:
        if t:
            md += [f"Paired Wilcoxon (PSNR) against {t[0]['vs']}:", "",
                   markdown_table([{k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in r.items()} for r in t],
                                  list(t[0])), ""]
    md += ["```json", json.dumps(extra, indent=1, default=str), "```", ""]
    text = "\n".join(md)
    write_text_atomic(out / "moediff_table3.md", text)
    write_text_atomic(out / "moediff_table3.json", json.dumps({"rows": rows, **extra}, indent=1, default=str))
    return text
