"""SS-MoE evaluation with the paper's protocol (paper 001, section 3; Table 1,
Table 2, Fig. 1) on a held-out MUDI-like subject.

Every volume (acquisition row) of the held-out subject is degraded to the
task's LR (block average, as the data generator does), super-resolved by each
method, and scored by the per-volume MSE of the reference code:
``mean over all voxels of (GT - SR)^2 * [GT != 0]`` in the data's own units.
The per-volume scores are summarised by mean, variance, median, quartiles and
max; methods are compared by a two-sided paired Wilcoxon signed-rank test.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from SuperResMoELib.io.atomic import write_text_atomic
from SuperResMoELib.io.tables import markdown_table, write_csv
from SuperResMoELib.evaluation.metrics import distribution_stats, mse_ssmoe
from SuperResMoELib.methods import EnhanceOptions, create_method

from ..figures import pyplot, save_figure
from ..statistics import wilcoxon_paired
from .sources import open_source

log = logging.getLogger("superresmoe.training")

#: Frames enhanced per call (bounds memory: 4D chunks of this many volumes).
CHUNK_FRAMES = 112
#: Statistics reported per method, in table order.
STAT_KEYS: tuple[str, ...] = ("mean", "variance", "median", "q1", "q3", "max")


def per_volume_mse(
    task: str,
    methods: dict[str, tuple[str, str | None] | tuple[str, str | None, dict[str, Any]]],
    rows: Sequence[int] | None = None,
    subject: int | None = None,
    device: str = "auto",
    progress=None,
    data: str = "sample",
    data_seed: int = 0,
) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, float]]:
    """Per-volume SS-MoE MSE of each method on the held-out subject.

    Args:
        task: ``aniso`` or ``iso``.
        methods: label -> (registry name, checkpoint path or ``None``[, further
            :class:`EnhanceOptions` fields, e.g. ``{"expert": 2}``]).
        rows: acquisition rows to evaluate (default: all 1344).
        subject: subject index (default: the source's held-out subject).
        data: ``"sample"`` or ``"mudi:<folder>"`` (:mod:`.sources`).

    Returns:
        ``(rows, {label: (n_rows,) scores}, {label: seconds})``.
    """
    source = open_source(data, data_seed)
    subject = source.held_out if subject is None else subject
    rows_arr = np.arange(len(source.table())) if rows is None else np.asarray(rows)
    scores = {label: np.empty(len(rows_arr)) for label in methods}
    seconds = {label: 0.0 for label in methods}
    scale = (1.0, 1.0, 2.0) if task == "aniso" else (2.0, 2.0, 2.0)
    for start in range(0, len(rows_arr), CHUNK_FRAMES):
        chunk = rows_arr[start:start + CHUNK_FRAMES]
        lr, hr = source.pair(subject, chunk, task)
        gt = np.asarray(hr.array)
        for label, (name, ckpt, *extra) in methods.items():
            opts = EnhanceOptions(scale=scale, task=task if name != "cubic" else None, checkpoint=ckpt,
                                  **(extra[0] if extra else {}))
            t0 = time.perf_counter()
            sr = np.asarray(create_method(name).enhance(lr, opts, device).volume.array)
            seconds[label] += time.perf_counter() - t0
            if sr.shape != gt.shape:
                raise RuntimeError(f"{label}: SR shape {sr.shape} differs from the reference {gt.shape}")
            scores[label][start:start + len(chunk)] = [mse_ssmoe(g, s) for g, s in zip(gt, sr)]
        if progress is not None:
            progress("evaluate", min(1.0, (start + len(chunk)) / len(rows_arr)),
                     f"{start + len(chunk)}/{len(rows_arr)} volumes")
    return rows_arr, scores, seconds


def stats_rows(scores: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """One row per method: the distribution statistics of its per-volume MSE."""
    rows = []
    for label, s in scores.items():
        st = distribution_stats(s)
        rows.append({"method": label, **{k: st[k] for k in STAT_KEYS}, "n": int(st["n"])})
    return rows


def wilcoxon_rows(scores: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Two-sided paired Wilcoxon signed-rank test for every pair of methods."""
    labels = list(scores)
    out = []
    for a in range(len(labels)):
        for b in range(a + 1, len(labels)):
            w = wilcoxon_paired(scores[labels[a]], scores[labels[b]])
            out.append({"a": labels[a], "b": labels[b], "p_value": w["p_value"],
                        "median_difference": w["median_difference"],
                        "a_better_fraction": float(np.mean(scores[labels[a]] < scores[labels[b]]))})
    return out


def histogram_figure(scores: dict[str, np.ndarray], path: Path, title: str, bins: int = 30) -> None:
    """Per-volume MSE distributions on a log scale (the paper's Fig. 1 style)."""
    plt = pyplot()

    positive = np.concatenate([s[s > 0] for s in scores.values()])
    edges = np.logspace(np.log10(positive.min()), np.log10(positive.max()), bins + 1)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    for label, s in scores.items():
        ax.hist(np.clip(s, edges[0], None), bins=edges, histtype="step", linewidth=1.6, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("per-volume MSE (data units$^2$, log scale)")
    ax.set_ylabel("volumes")
    ax.set_title(title)
    ax.legend()
    save_figure(fig, path)


def write_report(out: Path, name: str, title: str, scores: dict[str, np.ndarray], rows: np.ndarray,
                 seconds: dict[str, float], extra: dict[str, Any] | None = None,
                 what: str = "volumes of the held-out subject") -> str:
    """Markdown + CSV (stats, Wilcoxon, per-volume scores) + figure; returns the Markdown."""
    out.mkdir(parents=True, exist_ok=True)
    st, wx = stats_rows(scores), wilcoxon_rows(scores)
    for r in st:
        r["seconds"] = round(seconds.get(r["method"], 0.0), 1)
    write_csv(st, out / f"{name}_stats.csv")
    if wx:
        write_csv(wx, out / f"{name}_wilcoxon.csv")
    per = [{"row": int(r), **{k: float(v[i]) for k, v in scores.items()}} for i, r in enumerate(rows)]
    write_csv(per, out / f"{name}_per_volume.csv")
    histogram_figure(scores, out / f"{name}_mse_hist.png", title)
    md = f"### {title}\n\n{len(rows)} {what}; per-volume MSE "
    md += "= mean over all voxels of (GT − SR)²·[GT ≠ 0], data units.\n\n"
    md += markdown_table(st, ["method", *STAT_KEYS, "seconds"]) + "\n"
    if wx:
        md += ("Two-sided paired Wilcoxon signed-rank tests (the volumes of one subject are not independent "
               "samples: the p-values describe this subject's volumes, not a population):\n\n")
        md += markdown_table(wx, ["a", "b", "p_value", "median_difference", "a_better_fraction"], "{:.3g}") + "\n"
    md += f"![per-volume MSE]({name}_mse_hist.png)\n"
    if extra:
        md += "\n```json\n" + json.dumps(extra, indent=1) + "\n```\n"
    write_text_atomic(out / f"{name}.md", md)
    return md
