"""REMIx evaluation with the paper's Table 1 protocol (paper 002 section 3)
on held-out T1 sample subjects.

For each expert bin (1..7 mm³) ``cases`` acquisitions are drawn with the
training distribution (:mod:`.degradation`, its own seed) on held-out subjects
(case ``c`` uses subject ``subjects[c % len(subjects)]``).  Each HR subject is
cut to its brain's bounding box (plus a margin), acquired on the drawn grid
and interpolated back (cubic): that is the "LR" row, on the HR grid like the
paper's LR images in MNI space.  The networks run on the LR scan itself with
the HR grid as target grid (``remix``: expert chosen from the LR voxel volume;
``remix1``: the single network).

Scores, all inside the HR brain mask (:func:`~SuperResMoELib.evaluation.segmentation.brain_mask`):
PSNR (peak = the HR's max - min), Pearson correlation, and the mean Dice over
CSF/GM/WM between a tissue segmentation of the HR and of each image (a
three-class Gaussian mixture fitted to each image,
:func:`~SuperResMoELib.evaluation.segmentation.segment_tissues`, standing in for
SynthSeg, which cannot be installed here).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from SuperResMoELib import sample_data
from SuperResMoELib.io.atomic import write_text_atomic
from SuperResMoELib.methods import EnhanceOptions, create_method
from SuperResMoELib.methods.remix.method import PAPER_ROUTING, ROUTINGS
from SuperResMoELib.evaluation.metrics import correlation, psnr
from SuperResMoELib.evaluation.segmentation import brain_mask, dice, segment_tissues
from SuperResMoELib.io.tables import markdown_table, write_csv
from SuperResMoELib.core.volume import Volume

from ..figures import pyplot, save_figure
from .data import sub_volume
from .degradation import DegradationConfig, degrade, describe, draw_acquisition

log = logging.getLogger("superresmoe.training")

#: Held-out T1 sample subjects (training uses 0..3).
HELD_OUT_SUBJECTS: tuple[int, ...] = (4, 5, 6, 7, 8)
#: Margin (voxels) around the brain's bounding box kept for evaluation.
BOX_MARGIN = 8
#: Row labels, in table order.
LR_LABEL, SINGLE_LABEL, EXPERTS_LABEL = "LR (cubic)", "1 network", "Experts (7 models)"
#: The row of an anisotropy-router checkpoint as its router runs it (isotropic inputs to its isotropic expert).
ROUTER_LABEL = "Experts + isotropic expert (anisotropy router)"


def has_isotropic_expert(checkpoint: str | None) -> bool:
    """Whether an experts checkpoint (a path; ``None``: none given) holds the isotropic expert."""
    from SuperResMoELib.checkpoints.store import read_manifest
    from SuperResMoELib.methods.remix.checkpoint import has_isotropic_expert as _has

    return checkpoint is not None and _has(read_manifest(checkpoint))


def remix_models(checkpoints: dict[str, str | None]) -> list[tuple[str, str, str, dict[str, Any]]]:
    """``(label, registry name, checkpoint kind, options.extra)`` of each row
    whose kind is in ``checkpoints``: the 1 network, the experts by the
    paper's voxel-volume rule and, for an anisotropy-router checkpoint, the
    experts as its router runs them."""
    models: list[tuple[str, str, str, dict[str, Any]]] = []
    if "single" in checkpoints:
        models.append((SINGLE_LABEL, "remix1", "single", {}))
    if "experts" in checkpoints:
        # the experts as experts (the paper's voxel-volume rule), not the automatic choice's exception
        models.append((EXPERTS_LABEL, "remix", "experts", dict(PAPER_ROUTING)))
        if has_isotropic_expert(checkpoints["experts"]):
            models.append((ROUTER_LABEL, "remix", "experts", {"routing": ROUTINGS[0]}))
    return models


def versus(models: Sequence[tuple[str, str, str, dict[str, Any]]]) -> tuple[str, str]:
    """The mixture-versus-baseline comparison of a report: the router's row
    when there is one, else the paper's experts, against the 1 network."""
    labels = {m[0] for m in models}
    return (ROUTER_LABEL if ROUTER_LABEL in labels else EXPERTS_LABEL), SINGLE_LABEL
METRICS: tuple[str, ...] = ("psnr", "correlation", "dice")


def brain_box(hr: Volume, margin: int = BOX_MARGIN) -> Volume:
    """``hr`` cut to the bounding box of its brain mask plus ``margin`` voxels."""
    mask = brain_mask(np.asarray(hr.array))
    idx = np.argwhere(mask)
    lo = np.maximum(idx.min(0) - margin, 0)
    hi = np.minimum(idx.max(0) + 1 + margin, mask.shape)
    return sub_volume(hr, lo, hi)


def brain_psnr(hr: np.ndarray, image: np.ndarray, mask: np.ndarray) -> float:
    """PSNR (dB) of ``image`` against ``hr`` inside ``mask``, peak = the HR's max - min."""
    return psnr(hr, image, data_range=float(hr.max() - hr.min()), mask=mask)


def scores(hr: np.ndarray, image: np.ndarray, mask: np.ndarray, seg_hr: np.ndarray) -> dict[str, float]:
    """PSNR (:func:`brain_psnr`), correlation and mean tissue Dice of ``image`` against ``hr``."""
    d = dice(seg_hr, segment_tissues(image, mask))
    return {"psnr": brain_psnr(hr, image, mask),
            "correlation": correlation(hr, image, mask), "dice": d["mean"],
            **{f"dice_{k}": v for k, v in d.items() if k != "mean"}}


def evaluate_cases(
    checkpoints: dict[str, str | None],
    bins: Sequence[int],
    cases: int,
    degradation: DegradationConfig,
    subjects: Sequence[int] = HELD_OUT_SUBJECTS,
    seed: int = 1234,
    device: str = "auto",
    options: dict[str, Any] | None = None,
    progress=None,
    load_subject: Callable[[int], Volume] = sample_data.t1_subject,
) -> list[dict[str, Any]]:
    """One row per (bin, case, model) with the case's acquisition and scores.

    Args:
        checkpoints: ``{"experts": path or None (bundled), "single": ...}``;
            a missing key skips that model.
        options: engine options for the networks (``overlap``, ``patch_size``...).
        load_subject: subject index -> HR T1 volume (default: the sample subjects).
    """
    rows: list[dict[str, Any]] = []
    methods = remix_models(checkpoints)
    instances = {name: create_method(name) for _, name, _, _ in methods}
    hr_cache: dict[int, tuple[Volume, np.ndarray, np.ndarray]] = {}
    total = len(bins) * cases
    for nb, b in enumerate(bins):
        for c in range(cases):
            rng = np.random.default_rng([seed, int(b), c])
            s = int(subjects[c % len(subjects)])
            if s not in hr_cache:
                hr_vol = brain_box(load_subject(s))
                hr_arr = np.asarray(hr_vol.array, dtype=np.float32)
                mask = brain_mask(hr_arr)
                hr_cache[s] = (hr_vol, mask, segment_tissues(hr_arr, mask))
            hr_vol, mask, seg_hr = hr_cache[s]
            hr_arr = np.asarray(hr_vol.array, dtype=np.float32)
            lr_grid, info = draw_acquisition(hr_vol.grid, int(b), degradation, rng)
            t0 = time.perf_counter()
            lr, back = degrade(hr_vol, lr_grid, info, degradation, rng)
            base = {"bin": int(b), "case": c, "subject": s, "acquisition": describe(info),
                    "voxel_volume_mm3": round(info["voxel_volume_mm3"], 3)}
            rows.append({**base, "model": LR_LABEL, "expert": "", "seconds": round(time.perf_counter() - t0, 1),
                         **scores(hr_arr, np.asarray(back.array), mask, seg_hr)})
            for label, name, kind, extra in methods:
                opts = EnhanceOptions(checkpoint=checkpoints[kind], extra={"target_grid": hr_vol.grid, **extra},
                                      **(options or {}))
                t0 = time.perf_counter()
                res = instances[name].enhance(lr, opts, device)
                rows.append({**base, "model": label, "expert": res.info.get("expert") or "",
                             "seconds": round(time.perf_counter() - t0, 1),
                             **scores(hr_arr, np.asarray(res.volume.array), mask, seg_hr)})
            log.info("bin %d case %d (%s): %s", b, c, base["acquisition"],
                     ", ".join(f"{r['model']} {r['psnr']:.2f} dB" for r in rows[-1 - len(methods):]))
            if progress is not None:
                progress("evaluate", (nb * cases + c + 1) / total, f"bin {b} case {c + 1}/{cases}")
    return rows


def summary(rows: list[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    """One row per model: the mean of ``metric`` per bin and on average."""
    models = list(dict.fromkeys(r["model"] for r in rows))
    bins = sorted({r["bin"] for r in rows})
    out = []
    for m in models:
        row: dict[str, Any] = {"model": m}
        for b in bins:
            row[f"{b} mm³"] = float(np.mean([r[metric] for r in rows if r["model"] == m and r["bin"] == b]))
        row["average"] = float(np.mean([row[f"{b} mm³"] for b in bins]))
        out.append(row)
    return out


def psnr_figure(rows: list[dict[str, Any]], path: Path) -> None:
    """PSNR against the voxel-volume bin, one line per model (mean ± s.d. over cases)."""
    plt = pyplot()

    bins = sorted({r["bin"] for r in rows})
    fig, ax = plt.subplots(figsize=(6.5, 4), dpi=120)
    for m in dict.fromkeys(r["model"] for r in rows):
        v = [[r["psnr"] for r in rows if r["model"] == m and r["bin"] == b] for b in bins]
        ax.errorbar(bins, [np.mean(x) for x in v], yerr=[np.std(x) for x in v], marker="o", capsize=3, label=m)
    ax.set_xlabel("input voxel volume (mm³) = expert bin")
    ax.set_ylabel("PSNR in the brain (dB)")
    ax.set_title("REMIx on held-out sample subjects")
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path)


def write_report(out: Path, rows: list[dict[str, Any]], extra: dict[str, Any]) -> str:
    """``remix_table1.md`` + CSVs (per case, per metric) + ``remix_psnr.png``; returns the Markdown."""
    out.mkdir(parents=True, exist_ok=True)
    write_csv(rows, out / "remix_cases.csv")
    bins = sorted({r["bin"] for r in rows})
    keys = ["model", *[f"{b} mm³" for b in bins], "average"]
    n_cases = len({(r["bin"], r["case"]) for r in rows})
    md = (f"### REMIx Table 1 (held-out sample subjects)\n\n{n_cases} cases ({n_cases // max(1, len(bins))} per "
          "bin); scores inside the HR brain mask. Dice: mean over CSF/GM/WM of a 3-class Gaussian-mixture "
          "tissue segmentation (SynthSeg is not available here).\n\n")
    for metric, fmt in (("psnr", "{:.2f}"), ("correlation", "{:.4f}"), ("dice", "{:.4f}")):
        table = summary(rows, metric)
        write_csv(table, out / f"remix_table1_{metric}.csv")
        md += f"**{metric.upper() if metric == 'psnr' else metric.capitalize()}**\n\n" + markdown_table(table, keys, fmt)
        md += "\n"
    psnr_figure(rows, out / "remix_psnr.png")
    md += "![PSNR per bin](remix_psnr.png)\n\n```json\n" + json.dumps(extra, indent=1) + "\n```\n"
    write_text_atomic(out / "remix_table1.md", md)
    return md


def degradation_figure(path: Path, degradation: DegradationConfig, bins: Sequence[int], per_bin: int = 3,
                       subject: int = HELD_OUT_SUBJECTS[0], seed: int = 99) -> None:
    """A grid of LR samples (rows: bins; columns: draws), the axial slice
    through the middle of the brain after acquisition and cubic interpolation
    back to the 1 mm grid, titled with the drawn acquisition."""
    plt = pyplot()

    hr = brain_box(sample_data.t1_subject(subject))
    k = hr.array.shape[0] // 2
    fig, axes = plt.subplots(len(bins), per_bin + 1, figsize=(2.3 * (per_bin + 1), 2.5 * len(bins)), dpi=90)
    vmax = float(np.percentile(hr.array, 99.5))
    for r, b in enumerate(bins):
        axes[r, 0].imshow(np.asarray(hr.array[k]), cmap="gray", vmin=0, vmax=vmax, origin="lower")
        axes[r, 0].set_title("HR 1 mm" if r == 0 else "", fontsize=8)
        axes[r, 0].set_ylabel(f"{b} mm³", fontsize=10)
        for c in range(per_bin):
            rng = np.random.default_rng([seed, int(b), c])
            g, info = draw_acquisition(hr.grid, int(b), degradation, rng)
            _, back = degrade(hr, g, info, degradation, rng)
            axes[r, c + 1].imshow(np.asarray(back.array[k]), cmap="gray", vmin=0, vmax=vmax, origin="lower")
            axes[r, c + 1].set_title(describe(info).replace(" = ", "\n= ").replace(", gap", "\ngap"), fontsize=6)
        for a in axes[r]:
            a.set_xticks([])
            a.set_yticks([])
    fig.suptitle("REMIx training degradations (axial slice, back on the 1 mm grid)", fontsize=10)
    save_figure(fig, path)
