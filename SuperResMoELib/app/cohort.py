"""Enhancing many files: here, one after the other, or on a Dask cluster, one
task per file -- resumable, with nothing lost.

* **Plan** (:func:`plan_jobs`): the inputs (files, folders, or a BIDS dataset's
  T1w scans) and the output of each (``<out>/<stem>_<method><ext>``, or with
  ``--bids`` the derivatives layout of :mod:`SuperResMoELib.io.bids`).  Two
  inputs that would write the same output are an error before any work.
* **Process** (:func:`process`): an input whose output is already done
  (:func:`~SuperResMoELib.app.provenance.done_reason`) is skipped; else it
  is enhanced (every file atomic) and its provenance sidecar written last.
  An unusable input (:class:`InputError`) is reported at once; any other
  failure is retried ``retries`` times, then reported -- the other files
  finish either way.  A missing checkpoint or device stops the run: every
  file would fail alike.
* **Run** here (:func:`run_here`) or on Dask (:func:`run_on_dask`): there
  each task is retried by Dask on an error, and re-run on another worker
  when its worker dies; a re-run of an input that finished before its worker
  died finds it done and skips it, so no output is written twice.  A worker
  process loads each method's network once (:func:`worker_method`).
* **Summary**: counts of done / skipped / failed; the exit code is 0 when
  nothing failed, ``PARTIAL`` when some did.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from SuperResMoELib import io
from SuperResMoELib.core.errors import CancelledError, InputError, SuperResMoEError
from SuperResMoELib.core.progress import CancelToken, ProgressCallback, no_progress
from SuperResMoELib.methods import Method, create_method

log = logging.getLogger("superresmoe")

#: Retries of a file that failed for a reason other than its input (default of ``--retries``).
DEFAULT_RETRIES = 2
#: Outcome statuses.
DONE, SKIPPED, FAILED = "done", "skipped", "failed"


@dataclass(frozen=True)
class Planned:
    """One input of a cohort and what its sidecar adds (``extra``: BIDS ``Sources``)."""

    job: Any  # EnhanceJob
    extra: dict[str, Any] | None = None


def plan_jobs(inputs: Sequence[Path], output: Path | None, template: Any, bids: bool) -> tuple[list[Planned], Path]:
    """The jobs of a run and the output folder (see the module docstring).

    Args:
        inputs: files and folders (``bids``: one BIDS dataset root).
        output: output file or folder (``bids``: the derivatives folder,
            default ``<dataset>/derivatives/superresmoe``).
        template: the :class:`~SuperResMoELib.app.pipeline.EnhanceJob` every job copies.

    Raises:
        InputError: no input, a missing file, a file name as output of several
            inputs, ``bids`` without one BIDS dataset, two inputs with one output.
    """
    from SuperResMoELib.app.pipeline import output_path_for
    from SuperResMoELib.io import bids as bids_io

    planned: list[Planned] = []
    if bids:
        if len(inputs) != 1 or not bids_io.is_bids(inputs[0]):
            raise InputError("--bids needs one input: the root of a BIDS dataset (dataset_description.json or "
                             f"sub-* folders), got {', '.join(map(str, inputs))}")
        root = Path(inputs[0])
        out = Path(output) if output is not None else root / bids_io.DERIVATIVES
        for scan in bids_io.t1w_files(root):
            extra = {"Sources": [bids_io.sources_entry(scan, root)],
                     "Description": f"{template.method} super-resolution of {scan.name}"}
            planned.append(Planned(_job_for(template, scan, bids_io.derivative_path(scan, root, out, template.method)),
                                   extra))
    else:
        if output is None:
            raise InputError("give an output file or folder with -o (only --bids has a default)")
        files: list[Path] = []
        for given in inputs:
            files.extend(bids_io.t1w_files(given) if given.is_dir() and bids_io.is_bids(given)
                         else io.volume_files([given]))
        if not files:
            raise InputError(f"no image files found in {', '.join(map(str, inputs))}")
        for f in files:
            if not f.exists():
                raise InputError(f"{f}: file not found")
        if len(files) > 1 and io.is_volume_file(output):
            raise InputError(f"{len(files)} inputs need an output folder, got the file name {output}")
        many = len(files) > 1 or not io.is_volume_file(output)
        planned = [Planned(_job_for(template, f, output_path_for(f, output, template.method, many))) for f in files]
        out = output.parent if io.is_volume_file(output) else output
    seen: dict[Path, Path] = {}
    for p in planned:
        key = Path(p.job.output).resolve()
        if key in seen:
            raise InputError(f"{seen[key]} and {p.job.input} would both write {p.job.output}; "
                             "give them different names or separate runs")
        seen[key] = Path(p.job.input)
    return planned, out


def _job_for(template: Any, path: Path, output: Path) -> Any:
    ref = template.reference
    if ref is not None and Path(ref).is_dir():  # a folder of references matched by file name
        ref = Path(ref) / path.name
    return dataclasses.replace(template, input=path, reference=ref, output=output)


# ---------------------------------------------------------------- processing
_METHODS: dict[str, Method] = {}
_METHODS_LOCK = threading.Lock()


def worker_method(name: str) -> Method:
    """This process's instance of method ``name`` (its network, once loaded,
    stays cached for the next file)."""
    with _METHODS_LOCK:
        if name not in _METHODS:
            _METHODS[name] = create_method(name)
        return _METHODS[name]


def _outcome(job: Any, status: str, **kw: Any) -> dict[str, Any]:
    from SuperResMoELib.app.cluster import worker_name

    return {"input": str(job.input), "output": str(job.output), "status": status, "worker": worker_name(), **kw}


def process(planned: Planned, overwrite: bool = False, progress: ProgressCallback = no_progress,
            cancel: CancelToken | None = None) -> dict[str, Any]:
    """Skip, or enhance and record, one input; returns its outcome
    ``{"input", "output", "status", "worker", ...}`` (``summary`` when done,
    ``reason`` when skipped, ``error`` when its input is unusable).

    Raises:
        CheckpointError, DeviceError, CancelledError: the run must stop.
        Exception: any other failure (the caller retries it).
    """
    from SuperResMoELib.app.pipeline import run_job
    from SuperResMoELib.app.provenance import done_reason, request, write_sidecar

    job = planned.job
    try:
        wanted = request(job)  # the input's hashes, read once for the check and the sidecar
        if not overwrite:
            done, reason = done_reason(job, wanted)
            if done:
                progress("skip", 1.0, f"{Path(job.input).name}: {reason}")
                return _outcome(job, SKIPPED, reason=reason)
        method = worker_method(job.method)
        summary = run_job(job, progress, cancel, method=method)
        write_sidecar(job, summary, planned.extra, wanted)
        return _outcome(job, DONE, summary=summary, checkpoint_loads=getattr(method, "loads", None))
    except InputError as exc:
        return _outcome(job, FAILED, error=str(exc))


def _fatal(exc: BaseException) -> bool:
    """Errors that would fail every file alike (stop the run)."""
    return isinstance(exc, (SuperResMoEError, KeyboardInterrupt)) and not isinstance(exc, InputError)


def run_here(planned: Sequence[Planned], overwrite: bool = False, retries: int = DEFAULT_RETRIES,
             progress: ProgressCallback = no_progress, cancel: CancelToken | None = None) -> list[dict[str, Any]]:
    """Process the inputs one after the other in this process; the outcomes in input order."""
    cancel = cancel or CancelToken()
    outcomes = []
    for n, p in enumerate(planned):
        cancel.check()
        file_progress = _file_progress(progress, n, len(planned), Path(p.job.input))
        for attempt in range(retries + 1):
            try:
                outcome = process(p, overwrite, file_progress, cancel)
                break
            except Exception as exc:  # noqa: BLE001 - retried, then reported; the others go on
                if _fatal(exc):
                    raise
                log.warning("%s: attempt %d of %d failed: %s: %s", Path(p.job.input).name, attempt + 1,
                            retries + 1, type(exc).__name__, exc)
                outcome = _outcome(p.job, FAILED, error=f"{type(exc).__name__}: {exc} (after {attempt + 1} attempt(s))")
        if outcome["status"] == FAILED:
            progress("error", 1.0, f"{Path(p.job.input).name}: {outcome['error']}")
        outcomes.append(outcome)
    return outcomes


def run_on_dask(client: Any, planned: Sequence[Planned], overwrite: bool = False, retries: int = DEFAULT_RETRIES,
                progress: ProgressCallback = no_progress, cancel: CancelToken | None = None) -> list[dict[str, Any]]:
    """One Dask task per input on ``client``'s cluster; the outcomes in input order.

    Raises:
        CancelledError: ``cancel`` was set (the remaining tasks are cancelled).
        CheckpointError / DeviceError: from a worker (the remaining tasks are cancelled).
    """
    from distributed import wait

    cancel = cancel or CancelToken()
    futures = {client.submit(process, p, overwrite, key=f"superresmoe-{n:06d}-{Path(p.job.input).name}",
                             retries=retries, pure=False): n for n, p in enumerate(planned)}
    outcomes: list[dict[str, Any] | None] = [None] * len(planned)
    pending = set(futures)
    try:
        while pending:
            cancel.check()
            try:
                ready = wait(list(pending), timeout=0.5, return_when="FIRST_COMPLETED").done
            except TimeoutError:
                continue
            for future in ready:
                pending.discard(future)
                outcomes[futures[future]] = outcome = _collect(future, planned[futures[future]], retries)
                done = len(futures) - len(pending)
                detail = outcome.get("error") or outcome.get("reason") or f"on {outcome['worker']}"
                progress("enhance" if outcome["status"] != FAILED else "error", done / len(planned),
                         f"[{done}/{len(planned)}] {Path(outcome['input']).name}: {outcome['status']} ({detail})")
    except BaseException:
        client.cancel(list(futures))
        raise
    return [o for o in outcomes if o is not None]


def _collect(future: Any, planned: Planned, retries: int) -> dict[str, Any]:
    """The outcome of a finished task (a failure after Dask's retries, or of a
    task whose workers kept dying, is reported; fatal errors are raised)."""
    try:
        return future.result()
    except Exception as exc:  # noqa: BLE001 - reported, the others go on
        if _fatal(exc):
            raise
        why = ("the workers running it died each time (Dask's allowed-failures)" if type(exc).__name__ == "KilledWorker"
               else f"after {retries + 1} attempt(s)")
        outcome = _outcome(planned.job, FAILED, error=f"{type(exc).__name__}: {exc} ({why})")
        outcome["worker"] = "?"
        return outcome


def _file_progress(progress: ProgressCallback, n: int, total: int, path: Path) -> ProgressCallback:
    def inner(stage: str, fraction: float, message: str = "") -> None:
        prefix = f"[{n + 1}/{total}] {path.name}: " if total > 1 else ""
        progress(stage, fraction, prefix + message)

    return inner


def remove_stale_temporaries(planned: Sequence[Planned], since: float) -> list[str]:
    """Remove the temporary files a killed worker left beside this run's
    outputs (``.<stem>*.tmp*`` made after ``since``, a ``time.time()``); their
    names.  Only called when every task of the run has finished."""
    removed = []
    for p in planned:
        out = Path(p.job.output)
        for tmp in out.parent.glob(f".{io.volume_stem(out)}*.tmp*"):
            try:
                if tmp.stat().st_mtime >= since - 1:
                    tmp.unlink()
                    removed.append(str(tmp))
            except FileNotFoundError:
                continue
    return removed


def counts(outcomes: Sequence[dict[str, Any]]) -> dict[str, int]:
    """``{"total", "done", "skipped", "failed"}``."""
    c = {"total": len(outcomes), DONE: 0, SKIPPED: 0, FAILED: 0}
    for o in outcomes:
        c[o["status"]] += 1
    return c
