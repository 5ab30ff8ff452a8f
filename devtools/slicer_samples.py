"""Build the compact sample files the Slicer module ships (``SuperResMoE/Resources/SampleData/``)::

    python -m devtools.slicer_samples          # needs the library's extras and slicer-core

They are cut from the embedded sample data (:mod:`SuperResMoELib.sample_data`,
generated offline from the MNI152 template), so that a sample tile in a fresh
Slicer loads at once, with Slicer's own readers, without nilearn and without
generating anything:

* T1 pair: a 48-slice axial slab of the held-out T1 subject's brain box at
  1 mm (``SuperResMoE_T1_HR.nrrd``) and the same slab of its 1 x 1 x 4 mm LR
  scan (``SuperResMoE_T1_LR.nrrd``); intensities x 1000 as int16.
* MUDI-like qMRI: 12 of the held-out subject's frames (every fifth row of the
  acquisition table) on a central 2.5 mm block, as volume sequences Slicer reads
  with its Sequences module - the HR (``SuperResMoE_MUDI_HR.seq.nrrd``) and its
  aniso LR (``SuperResMoE_MUDI_LR.seq.nrrd``, k block-averaged x 2), int16 - and
  the acquisition table (``SuperResMoE_MUDI_acquisition.tsv``: columns
  ``gx gy gz b TI TE``, one row per frame).

``manifest.json`` beside them records how they were made and their sha256;
the full-size samples stay one ``superresmoe sample-data`` away.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "SuperResMoE" / "Resources" / "SampleData"
#: T1: slab of HR slices (a multiple of the LR factor 4), intensity scale to int16.
T1_SLAB, T1_SCALE, T1_FACTOR = 48, 1000.0, 4
#: MUDI-like: every n-th acquisition row, how many, and the central block (K, J, I voxels).
MUDI_ROW_STEP, MUDI_FRAMES, MUDI_BLOCK = 5, 12, (32, 40, 36)
#: File names, in the order the Slicer module registers them.
FILES = {"t1": ("SuperResMoE_T1_LR.nrrd", "SuperResMoE_T1_HR.nrrd"),
         "mudi": ("SuperResMoE_MUDI_LR.seq.nrrd", "SuperResMoE_MUDI_HR.seq.nrrd",
                  "SuperResMoE_MUDI_acquisition.tsv")}


def _box(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    idx = np.argwhere(mask)
    return idx.min(axis=0), idx.max(axis=0) + 1


def t1_volumes():
    """``(lr, hr)`` slabs (int16 volumes on aligned grids)."""
    from SuperResMoELib.core.geometry import sub_volume
    from SuperResMoELib.sample_data import T1_HELD_OUT, t1_pair

    lr, hr = t1_pair(T1_HELD_OUT)
    arr = np.asarray(hr.array)
    lo, hi = _box(arr > 0.05 * arr.max())
    mid = (lo[0] + hi[0]) // 2
    k0 = (mid - T1_SLAB // 2) // T1_FACTOR * T1_FACTOR
    hr_slab = sub_volume(hr, (k0, lo[1], lo[2]), (k0 + T1_SLAB, hi[1], hi[2]))
    lr_slab = sub_volume(lr, (k0 // T1_FACTOR, lo[1], lo[2]), ((k0 + T1_SLAB) // T1_FACTOR, hi[1], hi[2]))

    def as_int16(v):
        return v.with_array(np.clip(np.round(np.asarray(v.array) * T1_SCALE), 0, 32767).astype(np.int16))

    return as_int16(lr_slab), as_int16(hr_slab)


def mudi_volumes():
    """``(lr, hr, table)``: 4D int16 volumes and their acquisition table."""
    from SuperResMoELib.core.geometry import sub_volume
    from SuperResMoELib.sample_data import MUDI_HELD_OUT, mudi_subject
    from SuperResMoELib.sample_data.mudi import mudi_downsample

    subj = mudi_subject(MUDI_HELD_OUT)
    rows = list(range(0, len(subj.table), MUDI_ROW_STEP))[:MUDI_FRAMES]
    hr = subj.hr(rows)
    shape = np.asarray(hr.array).shape[1:]
    start = [(n - b) // 2 for n, b in zip(shape, MUDI_BLOCK)]
    hr = sub_volume(hr, start, [s + b for s, b in zip(start, MUDI_BLOCK)])
    lr, _ = mudi_downsample(hr, "aniso")

    def as_int16(v):
        return v.with_array(np.clip(np.round(np.asarray(v.array)), 0, 32767).astype(np.int16))

    return as_int16(lr), as_int16(hr), hr.acquisition


def write_sequence(volume, path: Path, name: str) -> None:
    """A 4D volume as a Slicer volume sequence file (``.seq.nrrd``) through slicer-core."""
    import slicer

    from SuperResMoELib.slicer import sequences

    scene = slicer.vtkMRMLScene()
    slicer.mrmlScene = scene
    seq, _, _ = sequences.add_sequence(scene, volume, name)
    storage = slicer.vtkMRMLVolumeSequenceStorageNode()
    scene.AddNode(storage)
    storage.SetFileName(str(path))
    storage.SetUseCompression(1)
    if not storage.WriteData(seq):
        raise SystemExit(f"could not write {path}")
    scene.Clear(1)


def write_table(table, path: Path) -> None:
    header = "\t".join(table.columns)
    rows = "\n".join("\t".join(f"{v:.10g}" for v in row) for row in table.values)
    path.write_text(header + "\n" + rows + "\n", encoding="utf-8")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build(out: Path = OUT) -> dict:
    """Write every sample file and ``manifest.json`` into ``out``; returns the manifest."""
    from SuperResMoELib import io

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp)
        lr, hr = t1_volumes()
        io.write_volume(lr, staged / FILES["t1"][0], table=False)
        io.write_volume(hr, staged / FILES["t1"][1], table=False)
        mlr, mhr, table = mudi_volumes()
        write_sequence(mlr, staged / FILES["mudi"][0], "MUDI LR")
        write_sequence(mhr, staged / FILES["mudi"][1], "MUDI HR")
        write_table(table, staged / FILES["mudi"][2])
        manifest = {"made_by": "python -m devtools.slicer_samples",
                    "t1": {"slab_slices": T1_SLAB, "intensity_scale": T1_SCALE, "lr_spacing_mm": [1, 1, 4]},
                    "mudi": {"row_step": MUDI_ROW_STEP, "frames": MUDI_FRAMES, "block_kji": list(MUDI_BLOCK),
                             "task": "aniso"},
                    "files": {}}
        for name in (*FILES["t1"], *FILES["mudi"]):
            manifest["files"][name] = {"sha256": sha256(staged / name), "bytes": (staged / name).stat().st_size}
            shutil.move(str(staged / name), str(out / name))  # across file systems too
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def main() -> int:
    manifest = build()
    total = sum(f["bytes"] for f in manifest["files"].values())
    print(f"{OUT.relative_to(ROOT)}: {len(manifest['files'])} files, {total / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
