"""Writing the sample data as NIfTI files (and the MUDI acquisition table) into a folder."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path


from SuperResMoELib.core.errors import InputError
from SuperResMoELib.core.progress import no_progress
from SuperResMoELib.core.volume import Volume
from SuperResMoELib.sample_data.mudi import MUDI_HELD_OUT, mudi_downsample, mudi_subject
from SuperResMoELib.sample_data.seeds import _check_index
from SuperResMoELib.sample_data.t1 import T1_HELD_OUT, t1_pair

logger = logging.getLogger("superresmoe.sample_data")

#: Sample data kinds :func:`write_sample_data` knows.
SAMPLE_KINDS: tuple[str, ...] = ("t1", "mudi", "all")


def write_sample_data(
    out_dir: str | os.PathLike,
    kind: str = "all",
    seed: int = 0,
    subject: int | None = None,
    mudi_rows: int | None = 64,
    progress: Callable[[str, float, str], None] | None = None,
) -> dict:
    """Write sample data as NIfTI files into ``out_dir``.

    * ``"t1"``: ``t1_hr.nii.gz`` and ``t1_lr.nii.gz`` (:func:`t1_pair` with
      its defaults: 1 x 1 x 4 mm, Gaussian profile, 1 % Rician noise) of
      ``subject`` (default :data:`T1_HELD_OUT`).
    * ``"mudi"``: ``mudi_hr.nii.gz`` (4D, the first ``mudi_rows`` rows, all if
      None), ``mudi_lr_aniso.nii.gz``, ``mudi_lr_iso.nii.gz`` (block averages
      of it) and ``parameters_new.txt`` (one ``gx gy gz b TI TE`` row per frame)
      of ``subject`` (default :data:`MUDI_HELD_OUT`).
    * ``"all"``: both.

    Returns:
        ``{"files": [str paths], "seconds": wall time, "kind": kind,
        "seed": seed, "subject": {"t1": s, "mudi": s}}``.
    """
    from SuperResMoELib.io.formats import write_acquisition_table, write_volume

    if kind not in SAMPLE_KINDS:
        raise InputError(f"unknown sample data kind {kind!r}; choose one of {list(SAMPLE_KINDS)}")
    seed = _check_index(seed, "seed")
    if subject is not None:
        subject = _check_index(subject, "subject")
    if mudi_rows is not None:
        mudi_rows = _check_index(mudi_rows, "mudi_rows")
        if mudi_rows < 1:
            raise InputError("mudi_rows must be at least 1 (or None for all rows)")
    report: Callable[[str, float, str], None] = progress or no_progress
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    files: list[str] = []
    subjects: dict[str, int] = {}

    def write(volume: Volume, name: str) -> None:
        path = out / name
        write_volume(volume, path, table=False)
        files.append(str(path))

    if kind in ("t1", "all"):
        s = T1_HELD_OUT if subject is None else subject
        subjects["t1"] = s
        report("sample_data", 0.0, f"T1 subject {s}")
        lr, hr = t1_pair(s, seed=seed)
        report("sample_data", 0.3 if kind == "all" else 0.6, "writing T1 pair")
        write(hr, "t1_hr.nii.gz")
        write(lr, "t1_lr.nii.gz")
    if kind in ("mudi", "all"):
        base = 0.5 if kind == "all" else 0.0
        s = MUDI_HELD_OUT if subject is None else subject
        subjects["mudi"] = s
        report("sample_data", base, f"MUDI subject {s}")
        mudi = mudi_subject(s, seed)
        rows: slice | list[int] = slice(None) if mudi_rows is None else list(range(min(mudi_rows, len(mudi.table))))
        hr = mudi.hr(rows)
        report("sample_data", base + 0.5 * (1.0 - base), "writing MUDI volumes")
        write(hr, "mudi_hr.nii.gz")
        for task in ("aniso", "iso"):
            lr, _ = mudi_downsample(hr, task)
            write(lr, f"mudi_lr_{task}.nii.gz")
        params = out / "parameters_new.txt"
        write_acquisition_table(hr.acquisition, params)  # type: ignore[arg-type]
        files.append(str(params))
    seconds = time.perf_counter() - t0
    report("sample_data", 1.0, f"wrote {len(files)} files in {seconds:.1f} s")
    logger.info("wrote %d sample data files (%s) to %s in %.2f s", len(files), kind, out, seconds)
    return {"files": files, "seconds": seconds, "kind": kind, "seed": seed, "subject": subjects}
