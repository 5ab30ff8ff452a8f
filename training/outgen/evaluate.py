"""Scoring on the out-of-generator set (:mod:`training.outgen`), beside each
method's held-out tables.

* T1 (REMIx, MoEDiff-SR): the four scans of :mod:`.t1` -- the head cut to its
  brain's bounding box (plus a margin) first -- each enhanced onto its HR
  grid, scored as the REMIx Table 1 (PSNR, correlation and tissue Dice in
  the HR brain mask; :func:`training.remix.evaluate.scores`); the LR row is
  the LR resampled (cubic) onto the HR grid.
* qMRI (SS-MoE): the per-volume MSE of :func:`training.ssmoe.evaluate.per_volume_mse`
  with ``data="outgen"``, and :func:`ratio_rows`: each method's mean per-volume
  MSE over its SR U-Net's, on both sets side by side.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from SuperResMoELib.core.geometry import resample
from SuperResMoELib.evaluation.segmentation import brain_mask, segment_tissues
from SuperResMoELib.io.atomic import write_text_atomic
from SuperResMoELib.io.tables import markdown_table, write_csv
from SuperResMoELib.methods import EnhanceOptions, create_method

from . import OUTGEN_NOTE
from .t1 import SCANS, scans, t1_head

log = logging.getLogger("superresmoe.training")

LR_LABEL = "LR (cubic)"


def t1_rows(methods: Sequence[tuple[str, str, str | None] | tuple[str, str, str | None, dict[str, Any]]],
            device: str = "auto",
            options: dict[str, Any] | None = None, names: Sequence[str] | None = None,
            block_mm: float | None = None, progress=None) -> list[dict[str, Any]]:
    """One row per (scan, model): ``scan, model, expert, seconds`` and the scores.

    Args:
        methods: ``(label, registry name, checkpoint or None[, options.extra])``
            of each network (its own extras over those of ``options``).
        options: engine options (``overlap``, ...) and method extras (``"extra"``).
        names: scans of :data:`~.t1.SCANS` to run (default all).
        block_mm: only the head's central cube of this many mm (a small case
            for tests; default: the whole head cut to its brain box).
    """
    from training.remix.evaluate import brain_box, scores

    head = brain_box(t1_head()) if block_mm is None else t1_head(block_mm)
    names = list(names or SCANS)
    instances = {m[1]: create_method(m[1]) for m in methods}
    rows: list[dict[str, Any]] = []
    for n_scan, (scan, (lr, hr)) in enumerate((k, v) for k, v in scans(head).items() if k in names):
        hr_arr = np.asarray(hr.array, np.float32)
        mask = brain_mask(hr_arr)
        seg = segment_tissues(hr_arr, mask)
        t0 = time.perf_counter()
        back = resample(lr, hr.grid, "cubic")
        rows.append({"scan": scan, "model": LR_LABEL, "expert": "", "seconds": round(time.perf_counter() - t0, 1),
                     **scores(hr_arr, np.asarray(back.array), mask, seg)})
        for label, name, ckpt, *own in methods:
            extra = {"target_grid": hr.grid, **(options or {}).get("extra", {}), **(own[0] if own else {})}
            opts = EnhanceOptions(checkpoint=ckpt, extra=extra,
                                  **{k: v for k, v in (options or {}).items() if k != "extra"})
            t0 = time.perf_counter()
            res = instances[name].enhance(lr, opts, device)
            rows.append({"scan": scan, "model": label, "expert": res.info.get("expert") or "",
                         "seconds": round(time.perf_counter() - t0, 1),
                         **scores(hr_arr, np.asarray(res.volume.array), mask, seg)})
        log.info("out-of-generator %s: %s", scan,
                 ", ".join(f"{r['model']} {r['psnr']:.2f} dB" for r in rows[-1 - len(methods):]))
        if progress is not None:
            progress("evaluate", (n_scan + 1) / len(names), f"out-of-generator scan {scan}")
    return rows


def t1_summary(rows: list[dict[str, Any]], metric: str, versus: tuple[str, str] | None = None
               ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``(table, comparison)``: one row per model with ``metric`` per scan and
    the average; ``comparison`` of ``versus = (a, b)``: ``a - b`` on average and
    on how many scans ``a`` is ahead (higher is better)."""
    models = list(dict.fromkeys(r["model"] for r in rows))
    scan_names = list(dict.fromkeys(r["scan"] for r in rows))
    value = {(r["model"], r["scan"]): float(r[metric]) for r in rows}
    table = []
    for m in models:
        row: dict[str, Any] = {"model": m, **{s: value[(m, s)] for s in scan_names if (m, s) in value}}
        row["average"] = float(np.mean([value[(m, s)] for s in scan_names if (m, s) in value]))
        table.append(row)
    comparison: dict[str, Any] = {}
    if versus and all(any(r["model"] == v for r in rows) for v in versus):
        a, b = versus
        diffs = [value[(a, s)] - value[(b, s)] for s in scan_names if (a, s) in value and (b, s) in value]
        comparison = {"a": a, "b": b, "metric": metric, "mean_difference": float(np.mean(diffs)),
                      "a_ahead": int(sum(d > 0 for d in diffs)), "cases": len(diffs)}
    return table, comparison


def write_t1_report(out: Path, name: str, title: str, rows: list[dict[str, Any]],
                    versus: tuple[str, str] | None, extra: dict[str, Any] | None = None) -> str:
    """``<name>.md`` + ``<name>_cases.csv`` + one CSV per metric; returns the Markdown."""
    out.mkdir(parents=True, exist_ok=True)
    write_csv(rows, out / f"{name}_cases.csv")
    scan_names = list(dict.fromkeys(r["scan"] for r in rows))
    md = f"### {title}\n\n{OUTGEN_NOTE}.\n\nScores inside the HR brain mask of each scan.\n\n"
    for metric, fmt in (("psnr", "{:.2f}"), ("correlation", "{:.4f}"), ("dice", "{:.4f}")):
        table, cmp_ = t1_summary(rows, metric, versus)
        write_csv(table, out / f"{name}_{metric}.csv")
        md += f"**{metric.upper() if metric == 'psnr' else metric.capitalize()}**\n\n"
        md += markdown_table(table, ["model", *scan_names, "average"], fmt) + "\n"
        if cmp_:
            md += (f"{cmp_['a']} − {cmp_['b']}: {cmp_['mean_difference']:+.4g} on average; ahead on "
                   f"{cmp_['a_ahead']} of {cmp_['cases']} scans.\n\n")
    if extra:
        import json

        md += "```json\n" + json.dumps(extra, indent=1) + "\n```\n"
    write_text_atomic(out / f"{name}.md", md)
    return md


def t1_report(out: Path, name: str, title: str,
              models: Sequence[tuple[str, str, str] | tuple[str, str, str, dict[str, Any]]],
              checkpoints: dict[str, str], versus: tuple[str, str] | None, device: str = "auto",
              options: dict[str, Any] | None = None, block_mm: float | None = None,
              extra: dict[str, Any] | None = None, progress=None) -> str:
    """:func:`t1_rows` of the ``models`` (``(label, registry name, checkpoint
    kind[, options.extra])``) whose kind is in ``checkpoints``, written by :func:`write_t1_report`
    with the checkpoints, the overlap, the block, ``extra`` and the seconds it
    took; ``versus`` compares two labels when both ran.  Returns the Markdown."""
    t0 = time.perf_counter()
    methods = [(label, method, checkpoints[kind], *own) for label, method, kind, *own in models
               if kind in checkpoints]
    rows = t1_rows(methods, device, options, block_mm=block_mm, progress=progress)
    ran = {m[0] for m in methods}
    info = {"checkpoints": checkpoints, "overlap": (options or {}).get("overlap"), "block_mm": block_mm,
            **(extra or {}), "seconds": round(time.perf_counter() - t0, 1)}
    return write_t1_report(Path(out), name, title, rows, versus if versus and set(versus) <= ran else None, info)


def ratio_rows(held_out: dict[str, np.ndarray], outgen: dict[str, np.ndarray], baseline: str = "SR U-Net"
               ) -> list[dict[str, Any]]:
    """One row per method: its mean per-volume MSE over ``baseline``'s on the
    held-out subject and on the out-of-generator head."""
    rows = []
    for label in held_out:
        row: dict[str, Any] = {"method": label}
        for key, scores in (("held_out", held_out), ("out_of_generator", outgen)):
            if label in scores and baseline in scores:
                row[key] = float(np.mean(scores[label]) / np.mean(scores[baseline]))
        rows.append(row)
    return rows
