"""The provenance sidecar of an SR output, and whether an output is already done.

Every enhanced file ``<out>/<name><ext>`` gets ``<out>/<name>.json`` beside
it, written atomically after every other file of that input, so its presence
means the input finished.  It records::

    {"GeneratedBy": {"Name": "SuperResMoE", "Version": ...},
     "input": {"path"}, "reference": {"path"} | null, "table": {"path"} | null,
     "request": {"format", "version", "input_sha256", "reference_sha256", "table_sha256",
                 "method", "settings": {option: value, ...}},   # the options that change the output
     "task": ..., "checkpoint": {"path", "name", "sha256"} | null,
     "output": {"path", "sha256", "files": [...]},
     "finished": ISO time, "host": ..., "seconds": ...}

(for ``--bids`` also the BIDS keys ``Sources`` and ``Description``).

An input is *done* -- a later run skips it -- when its output exists with
this sidecar, the output's sha256 is the recorded one, and the request is
the same: input, reference and table sha256, method, settings and
SuperResMoE version, and the checkpoint the method would pick now has the
recorded sha256.  Anything else reruns it (:func:`done_reason` says why not).
"""

from __future__ import annotations

import json
import socket
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from SuperResMoELib import __version__
from SuperResMoELib.core.errors import SuperResMoEError
from SuperResMoELib.core.options import output_settings
from SuperResMoELib.io.atomic import write_text_atomic
from SuperResMoELib.io.hashing import sha256_file

#: Bumped when the sidecar's layout changes (an older sidecar never matches).
SIDECAR_FORMAT = 1


def sidecar_path(output: Path) -> Path:
    """``<out>/<name>.json`` for the output ``<out>/<name><ext>``."""
    from SuperResMoELib import io

    return Path(output).with_name(io.volume_stem(output) + ".json")


def _sha(path: Path | None) -> str | None:
    return None if path is None else sha256_file(Path(path))


def request(job: Any) -> dict[str, Any]:
    """What a job asks for, as the sidecar's ``request`` records it (every
    field a later run compares): the input/reference/table sha256 (not their
    paths: a moved dataset still matches), method, settings and version."""
    from SuperResMoELib.core.options import OPTIONS

    values = {name: _job_value(job, spec.target) for name, spec in OPTIONS.items()}
    return {
        "format": SIDECAR_FORMAT,
        "version": __version__,
        "input_sha256": _sha(job.input),
        "reference_sha256": _sha(job.reference),
        "table_sha256": _sha(job.table),
        "method": job.method,
        "settings": output_settings(values),
    }


def _job_value(job: Any, target: str) -> Any:
    """The value an option's ``target`` (``job.x``, ``options.x``, ``extra.x``) has in ``job``."""
    where, attr = target.split(".", 1)
    if where == "job":
        return getattr(job, attr)
    if where == "options":
        return getattr(job.options, attr)
    return (job.options.extra or {}).get(attr)


def checkpoint_entry(path: str | Path | None) -> dict[str, str] | None:
    """``{"path", "name", "sha256"}`` of a checkpoint (its manifest's weights hash)."""
    if not path:
        return None
    from SuperResMoELib.checkpoints.store import read_manifest

    manifest = read_manifest(path)
    return {"path": str(path), "name": Path(path).name, "sha256": manifest.sha256}


def current_checkpoint(job: Any, task: str | None) -> dict[str, str] | None:
    """The checkpoint the job's method would load for ``task`` now (``None``:
    a method without checkpoints).

    Raises:
        CheckpointError: none would be found.
    """
    from SuperResMoELib.methods import create_method

    method = create_method(job.method)
    finder = getattr(method, "checkpoint_for", None)
    if finder is None or not method.needs_checkpoint:
        return None
    return checkpoint_entry(finder(task or "", job.options))


def read_sidecar(output: Path) -> dict[str, Any] | None:
    """The sidecar of ``output`` (``None``: missing or unreadable)."""
    path = sidecar_path(output)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def done_reason(job: Any, wanted: dict[str, Any] | None = None) -> tuple[bool, str]:
    """``(True, why)`` when ``job.output`` is done (see the module docstring),
    else ``(False, what differs)``; ``wanted``: :func:`request` of the job when
    the caller has it."""
    output = Path(job.output)
    if not output.is_file():
        return False, "no output yet"
    side = read_sidecar(output)
    if side is None:
        return False, f"{sidecar_path(output).name} missing or unreadable"
    recorded = side.get("request")
    wanted = request(job) if wanted is None else wanted
    if recorded != wanted:
        differs = sorted(k for k in wanted if not isinstance(recorded, dict) or recorded.get(k) != wanted[k])
        return False, f"the request differs ({', '.join(differs) or 'format'})"
    out = side.get("output") or {}
    if out.get("sha256") != sha256_file(output):
        return False, "the output's sha256 is not the recorded one"
    for extra in out.get("files", []):
        if not Path(extra).is_file():
            return False, f"{Path(extra).name} is missing"
    try:
        now = current_checkpoint(job, side.get("task"))
    except SuperResMoEError as exc:
        return False, f"its checkpoint cannot be checked ({exc})"
    if (now or {}).get("sha256") != (side.get("checkpoint") or {}).get("sha256"):
        return False, "the checkpoint differs"
    return True, f"done earlier ({side.get('finished', '?')}, same input, method, checkpoint and settings)"


def write_sidecar(job: Any, summary: dict[str, Any], extra: dict[str, Any] | None = None,
                  wanted: dict[str, Any] | None = None) -> Path:
    """Write the sidecar of a finished job atomically (last, after every other
    output of the input); ``extra``: further top-level keys (BIDS ``Sources``);
    ``wanted``: :func:`request` of the job when the caller has it."""
    info = summary.get("info", {})
    output = Path(job.output)
    record: dict[str, Any] = {
        **(extra or {}),
        "GeneratedBy": {"Name": "SuperResMoE", "Version": __version__},
        "input": {"path": str(job.input)},
        "reference": None if job.reference is None else {"path": str(job.reference)},
        "table": None if job.table is None else {"path": str(job.table)},
        "request": request(job) if wanted is None else wanted,
        "task": info.get("task"),
        "checkpoint": checkpoint_entry(info.get("checkpoint")),
        "output": {"path": str(output), "sha256": sha256_file(output),
                   "files": [f for f in summary.get("files", []) if Path(f) != output]},
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "seconds": round(float(summary.get("seconds", 0.0)), 3),
    }
    path = sidecar_path(output)
    write_text_atomic(path, json.dumps(record, indent=2, default=str) + "\n")
    return path
