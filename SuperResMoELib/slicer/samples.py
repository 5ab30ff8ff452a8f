"""The module's entries in Slicer's *Sample Data* module, Qt-free.

The files are the compact samples shipped in ``SuperResMoE/Resources/SampleData``
(built by ``python -m devtools.slicer_samples`` from the embedded sample data;
``manifest.json`` there holds their sha256).  Each entry is a plain *Sample
Data* source with ``file://`` URIs and checksums, so a tile click and
``SampleData.downloadSample(name)`` both load it with Slicer's own readers
(volumes, the Sequences module's volume sequences, table nodes): nothing to
install, nothing generated, no temporary files.  (SampleData's ``loadNode``
drops the loaded nodes' storage nodes, so *Save* writes them with the scene
like any new node.)  Cache file names carry the file's digest, so an updated
sample never reuses a stale cached file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: Category (section) of the entries in the Sample Data module.
CATEGORY = "SuperResMoE"
#: name -> (files, node names, Slicer file types), in load order.
SAMPLES: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "SuperResMoE T1 pair (LR/HR)": (
        ("SuperResMoE_T1_LR.nrrd", "SuperResMoE_T1_HR.nrrd"),
        ("T1 LR", "T1 HR"),
        ("VolumeFile", "VolumeFile")),
    "SuperResMoE MUDI-like qMRI": (
        ("SuperResMoE_MUDI_LR.seq.nrrd", "SuperResMoE_MUDI_HR.seq.nrrd", "SuperResMoE_MUDI_acquisition.tsv"),
        ("MUDI LR", "MUDI HR", "MUDI acquisition"),
        ("SequenceFile", "SequenceFile", "TableFile")),
}
MANIFEST = "manifest.json"


def _cache_name(file_name: str, digest: str) -> str:
    """``a.seq.nrrd`` -> ``a-<first 10 hex digits>.seq.nrrd``."""
    stem, dot, ext = file_name.partition(".")
    return f"{stem}-{digest[:10]}{dot}{ext}"


def sample_sources(resource_dir: str | Path, thumbnail: str | None = None) -> list[dict[str, Any]]:
    """Keyword arguments of ``SampleDataLogic.registerCustomSampleDataSource`` for every sample.

    Raises:
        FileNotFoundError: a sample file or the manifest is missing.
    """
    folder = Path(resource_dir)
    manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    sources = []
    for name, (files, nodes, types) in SAMPLES.items():
        uris, cache_names, checksums = [], [], []
        for f in files:
            path = folder / f
            if not path.is_file():
                raise FileNotFoundError(f"sample file {path} is missing (python -m devtools.slicer_samples)")
            digest = manifest["files"][f]["sha256"]
            uris.append(path.resolve().as_uri())
            cache_names.append(_cache_name(f, digest))
            checksums.append(f"SHA256:{digest}")
        sources.append({"category": CATEGORY, "sampleName": name, "uris": uris, "fileNames": cache_names,
                        "nodeNames": list(nodes), "loadFileTypes": list(types), "checksums": checksums,
                        "thumbnailFileName": thumbnail})
    return sources
