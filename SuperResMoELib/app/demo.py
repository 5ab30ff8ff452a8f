"""``superresmoe demo``: build the sample LR/HR pairs offline, enhance them with
every method that can run, and report the metrics against the HR reference.

By default the demo is quick (under a minute on 2 CPU cores): the T1 pair is
cut to a central block of :data:`T1_BLOCK_LR` LR voxels (and the HR block it
covers) and the MUDI-like qMRI pair keeps :data:`MUDI_ROWS` frames; ``--full``
runs the whole T1 volume and :data:`MUDI_ROWS_FULL` frames (about 8 minutes
on 2 CPU cores).  A line is logged when each method starts and ends (with its
seconds), whether or not the output is a terminal.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from SuperResMoELib.core.progress import CancelToken, ProgressCallback

log = logging.getLogger("superresmoe")


@dataclass(frozen=True)
class DemoCase:
    """One sample pair: its files in the sample-data folder."""

    kind: str
    lr: str
    hr: str
    table: str | None = None


#: The sample pairs, in order (the T1 case always runs).
CASES: tuple[DemoCase, ...] = (
    DemoCase("t1", "t1_lr.nii.gz", "t1_hr.nii.gz"),
    DemoCase("mudi", "mudi_lr_aniso.nii.gz", "mudi_hr.nii.gz", "parameters_new.txt"),
)
#: The central block of the T1 LR volume the quick demo enhances, (i, j, k) voxels.
T1_BLOCK_LR: tuple[int, int, int] = (112, 128, 24)
#: MUDI-like frames (acquisition rows) of the quick and the full demo.
MUDI_ROWS: int = 4
MUDI_ROWS_FULL: int = 64


def central_blocks(lr: Any, hr: Any, block_ijk: tuple[int, int, int]) -> tuple[Any, Any]:
    """The central ``block_ijk`` LR voxels and the HR voxels they cover (the
    grids are edge-aligned: HR index = LR index x zoom)."""
    from SuperResMoELib.core.geometry import sub_volume

    zoom = np.round(lr.spacing / hr.spacing).astype(int)[::-1]  # (zk, zj, zi)
    size = np.minimum(np.asarray(block_ijk[::-1]), np.asarray(lr.spatial_shape))
    start = (np.asarray(lr.spatial_shape) - size) // 2
    lr_c = sub_volume(lr, start, start + size)
    hr_c = sub_volume(hr, start * zoom, (start + size) * zoom)
    return lr_c, hr_c


def _case_files(case: DemoCase, folder: Path, seed: int, full: bool, progress: ProgressCallback
                ) -> tuple[Path, Path, Path | None, list[str]]:
    """Write the case's sample data; for the quick T1 case, its central blocks."""
    from SuperResMoELib import io
    from SuperResMoELib.sample_data import write_sample_data

    data = write_sample_data(folder, kind=case.kind, seed=seed,
                             mudi_rows=MUDI_ROWS_FULL if full else MUDI_ROWS, progress=progress)
    written = [str(f) for f in data["files"]]
    lr_path, hr_path = folder / case.lr, folder / case.hr
    if case.kind == "t1" and not full:
        lr, hr = central_blocks(io.read_volume(lr_path), io.read_volume(hr_path), T1_BLOCK_LR)
        lr_path, hr_path = folder / "t1_lr_block.nii.gz", folder / "t1_hr_block.nii.gz"
        io.write_volume(lr, lr_path)
        io.write_volume(hr, hr_path)
        written += [str(lr_path), str(hr_path)]
    return lr_path, hr_path, (folder / case.table if case.table else None), written


def run_demo(out: Path, methods: list[str], device: str, seed: int, full: bool, progress: ProgressCallback,
             cancel: CancelToken) -> dict[str, Any]:
    """Run the demo; returns ``{"files", "metrics", "cases"}`` (see the module docstring)."""
    from SuperResMoELib import io
    from SuperResMoELib.app.pipeline import EnhanceJob, run_job
    from SuperResMoELib.io.tables import flatten, write_csv
    from SuperResMoELib.methods import EnhanceOptions, get_method_class

    rows: list[dict[str, Any]] = []
    written: list[str] = []
    cases: dict[str, Any] = {}
    t_demo = time.perf_counter()
    for case in CASES:
        case_methods = [n for n in methods if get_method_class(n).sample_kind in (case.kind, "any")]
        if case.kind != "t1" and not any(get_method_class(n).sample_kind == case.kind for n in case_methods):
            continue  # no method made for this data
        log.info("demo: building the sample %s pair", case.kind)
        lr_path, hr_path, table, files = _case_files(case, out / "data", seed, full, progress)
        written += files
        lr, hr = io.read_volume(lr_path), io.read_volume(hr_path)
        scale = tuple(float(v) for v in np.round(lr.spacing / hr.spacing, 6))
        cases[case.kind] = {"lr": lr.grid.describe(), "hr": hr.grid.describe(), "scale": scale,
                            "frames": lr.n_frames, "full": full}
        for name in case_methods:
            cancel.check()
            log.info("demo %s: %s started", case.kind, name)
            job = EnhanceJob(input=lr_path, output=out / f"{case.kind}_sr_{name}.nii.gz", method=name,
                             options=EnhanceOptions(scale=scale), device=device, reference=hr_path, table=table)
            s = run_job(job, progress, cancel)
            log.info("demo %s: %s done in %.1f s", case.kind, name, s["seconds"])
            written += s["files"]
            m = flatten(s["metrics"])
            rows.append({"data": case.kind, "method": name,
                         "PSNR_dB": m.get("psnr", m.get("mean_psnr")), "SSIM": m.get("ssim", float("nan")),
                         "MSE_ssmoe": m.get("mse_ssmoe", m.get("mse_ssmoe_per_frame_mean")),
                         "seconds": round(s["seconds"], 2)})
    write_csv(rows, out / "demo_metrics.csv")
    written.append(str(out / "demo_metrics.csv"))
    log.info("demo: finished in %.0f s", time.perf_counter() - t_demo)
    return {"files": written, "metrics": rows, "cases": cases}
