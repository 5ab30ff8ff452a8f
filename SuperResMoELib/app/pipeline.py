"""File-level workflow shared by the CLI, the Slicer module and batch scripts:
read -> (simulate low resolution) -> enhance -> write SR, maps, error maps and
metrics.  Every output is written atomically; inputs are only read.

Output naming for an SR file ``<out>/<stem>.<ext>``:

* ``<stem>_<map>.<ext>`` for each method map (e.g. ``_routing``),
* ``<stem>_lr.<ext>`` the simulated LR input (``simulate=True``),
* ``<stem>_sqerr.<ext>`` / ``<stem>_abserr.<ext>`` error maps and
  ``<stem>_metrics.json`` when a reference is known.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from SuperResMoELib import io
from SuperResMoELib.io.atomic import write_text_atomic
from SuperResMoELib.io.jsonutil import dumps
from SuperResMoELib.core.errors import InputError
from SuperResMoELib.core.options import DEFAULTS, OPTIONS, unused_options
from SuperResMoELib.methods import EnhanceOptions, Method, Result, create_method
from SuperResMoELib.core.progress import CancelToken, ProgressCallback, no_progress
from SuperResMoELib.core.volume import Grid, Volume, format_ijk

log = logging.getLogger("superresmoe")


@dataclass
class EnhanceJob:
    """One enhancement request (defaults from :data:`~SuperResMoELib.core.options.DEFAULTS`).

    Attributes:
        input: image file (3D, or 4D with ``table``).
        output: SR image file to write.
        method: registry name.
        options: method and engine options.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N``.
        reference: HR image on the SR grid, for error maps and metrics.
        simulate: treat ``input`` as HR: degrade it first (``simulate_method``)
            by the method's scale factors, enhance the LR, compare with the HR.
        table: acquisition table for a 4D input.
        write_maps: also write the method's maps (routing, gating, ...).
        compression: output compression (:data:`~SuperResMoELib.io.formats.COMPRESSION_LEVELS`).
        notes: warnings about the request (e.g. options the method ignores),
            reported with the result's ``info["warnings"]``.
    """

    input: Path
    output: Path
    method: str = DEFAULTS["method"]
    options: EnhanceOptions = field(default_factory=EnhanceOptions)
    device: str = DEFAULTS["device"]
    reference: Path | None = None
    simulate: bool = DEFAULTS["simulate"]
    simulate_method: str = DEFAULTS["simulate_method"]
    table: Path | None = None
    write_maps: bool = DEFAULTS["write_maps"]
    compression: str = DEFAULTS["compression"]
    notes: tuple[str, ...] = ()


def build_job(values: dict[str, Any], input: Path, output: Path, reference: Path | None = None,
              table: Path | None = None) -> EnhanceJob:
    """The job the enhance option ``values`` (names of
    :data:`~SuperResMoELib.core.options.OPTIONS`; missing ones at their defaults)
    describe, each value placed where its option's ``target`` says.

    Raises:
        InputError: contradictory options (``scale`` and ``spacing``,
            ``reference`` and ``simulate``), invalid engine settings or an
            unknown option name.
    """
    unknown = sorted(set(values) - set(OPTIONS))
    if unknown:
        raise InputError(f"unknown enhance option(s) {', '.join(unknown)}; known: {', '.join(OPTIONS)}")
    merged = {**DEFAULTS, **values}
    parts: dict[str, dict[str, Any]] = {"job": {}, "options": {}, "extra": {}}
    for name, value in merged.items():
        where, attr = OPTIONS[name].target.split(".", 1)
        parts[where][attr] = value
    if parts["options"]["scale"] is not None and parts["options"]["target_spacing"] is not None:
        raise InputError("give either --scale or --spacing, not both")
    if reference is not None and parts["job"]["simulate"]:
        raise InputError("give either --reference or --simulate, not both")
    extra = {k: list(v) if isinstance(v, tuple) else v for k, v in parts["extra"].items() if v is not None}
    options = EnhanceOptions(**parts["options"], extra=extra)
    options.engine_config(1)  # validate overlap and batch size up front, whatever the method
    notes = tuple(unused_options(values, parts["job"]["method"]))
    for note in notes:
        log.warning("%s", note)
    return EnhanceJob(input=input, output=output, options=options, reference=reference, table=table,
                      notes=notes, **parts["job"])


def side_path(output: Path, tag: str, suffix: str | None = None) -> Path:
    """``<dir>/<stem>_<tag><suffix>`` next to ``output`` (suffix defaults to the output's)."""
    return output.with_name(f"{io.volume_stem(output)}_{tag}{suffix or io.volume_suffix(output)}")


def check_reference(reference: Volume, expected: Grid, label: str = "reference", hint: str = "") -> None:
    """Clear one-line error when the reference is not on the SR grid (``hint``
    says what to do; default: give a reference on the SR grid or simulate)."""
    from SuperResMoELib.evaluation.metrics import DEFAULT_GRID_ATOL_MM

    if reference.grid.same_as(expected, atol=DEFAULT_GRID_ATOL_MM):
        return
    raise InputError(
        f"{label} does not match the SR output grid: reference has {reference.grid.describe()}; "
        f"SR has {expected.describe()}; {hint or 'give a reference on the SR grid or use --simulate'}"
    )


def options_from_reference(method: Method, volume: Volume, reference: Volume,
                           options: EnhanceOptions) -> tuple[EnhanceOptions, str | None]:
    """With a reference and no ``scale`` / ``target_spacing`` / target grid given,
    the output grid is the reference's: the scale factors ``input spacing /
    reference spacing`` (along the input's axes) when they give exactly that
    grid, else, for the methods that resample onto a target grid (REMIx,
    MoEDiff-SR), the reference grid itself. Returns the options and a note of
    what was derived (``None``: nothing; :func:`check_reference` then explains).
    """
    from SuperResMoELib.evaluation.metrics import DEFAULT_GRID_ATOL_MM

    if options.scale is not None or options.target_spacing is not None or (options.extra or {}).get("target_grid"):
        return options, None
    target = reference.grid
    ratio = volume.grid.spacing / target.spacing
    candidates = [(dataclasses.replace(options, scale=tuple(float(round(r, 4)) for r in ratio)),
                   f"--scale {','.join(f'{r:g}' for r in np.round(ratio, 4))} derived from the reference grid"),
                  (dataclasses.replace(options, extra={**(options.extra or {}), "target_grid": target}),
                   "output on the reference grid")]
    for opts, note in candidates:
        try:
            if method.output_grid(volume, opts).same_as(target, atol=DEFAULT_GRID_ATOL_MM):
                return opts, note
        except InputError:
            continue
    return options, None


def compare_to_reference(reference: Volume, sr: Volume) -> dict[str, Any]:
    """Metrics of ``sr`` against ``reference`` (same grid): a flat dict for 3D;
    for 4D the mean of each metric plus per-frame SS-MoE MSE statistics."""
    from SuperResMoELib.evaluation.metrics import compare, distribution_stats, per_frame, ssim_window_size

    if not sr.is_4d:
        if min(sr.spatial_shape) < ssim_window_size():
            log.warning("SSIM skipped: the volume %s is smaller than its %d-voxel window", sr.spatial_shape,
                        ssim_window_size())
            return compare(reference, sr, include_ssim=False)
        return compare(reference, sr)
    per = per_frame(reference, sr, "mse_ssmoe")
    return {"frames": int(sr.n_frames), "mse_ssmoe_per_frame": distribution_stats(per),
            **{f"mean_{k}": float(np.mean(per_frame(reference, sr, k))) for k in ("mse", "psnr")}}


def simulation_factors(method: Method, hr: Volume, options: EnhanceOptions
                       ) -> tuple[np.ndarray, EnhanceOptions, dict[str, Any]]:
    """How ``--simulate`` degrades ``hr`` for ``method``: ``(factors (s_i, s_j, s_k),
    options to enhance the LR with, a description)``.

    The factors are the ones the method will apply, read off the grid it
    would make from the HR.  A method that resamples to a target spacing
    (``Method.simulate_factors`` set, REMIx) is then asked for the HR's own
    spacing, so its output lands on the HR grid whatever the HR's spacing:
    it is degraded by the factors where they coarsen the grid (``> 1``), and
    when none does (an HR already at the target spacing) by the method's
    characteristic degradation (REMIx: a 1x1x5 mm thick-slice scan).

    Raises:
        InputError: nothing would be degraded (or a factor would make the
            grid finer) and the method has no characteristic degradation:
            the message asks for ``--scale``.
    """
    factors = np.round(hr.grid.spacing / method.output_grid(hr, options).spacing, 6)
    source = "the method's scale factors"
    if method.simulate_factors is not None:  # resamples to a target grid: bring it back onto the HR's
        factors = np.maximum(factors, 1.0)
        if np.allclose(factors, 1.0):
            factors = np.asarray(method.simulate_factors, dtype=np.float64)
            source = f"{method.title}'s characteristic degradation"
        options = dataclasses.replace(options, scale=None, target_spacing=tuple(float(v) for v in hr.grid.spacing))
    elif np.allclose(factors, 1.0) or np.any(factors < 1.0):
        what = "nothing would be degraded" if np.allclose(factors, 1.0) else \
            f"factors {format_ijk(factors)} would make the grid finer, not coarser"
        raise InputError(
            f"--simulate: {method.name} would enhance onto a grid of {format_ijk(hr.grid.spacing / factors)} mm "
            f"from the {format_ijk(hr.grid.spacing)} mm input, so {what}; give --scale factors of at least 1 "
            "(e.g. --scale 1,1,2)"
        )
    lr_spacing = format_ijk(hr.grid.spacing * factors)
    note = (f"simulating a {lr_spacing} mm (i, j, k) acquisition from the HR input "
            f"(factors {format_ijk(factors)}, {source})")
    return factors, options, {"factors": factors.tolist(), "lr_spacing_ijk": (hr.grid.spacing * factors).tolist(),
                              "source": source, "note": note}


def run_job(job: EnhanceJob, progress: ProgressCallback = no_progress,
            cancel: CancelToken | None = None, method: Method | None = None) -> dict[str, Any]:
    """Run one job and return a JSON-serialisable summary
    (``files``, ``metrics``, ``info``, ``seconds``); ``method``: an instance
    of ``job.method`` to reuse (its cached network), else a new one."""
    t0 = time.perf_counter()
    cancel = cancel or CancelToken()
    if method is None:
        method = create_method(job.method)
    elif method.name != job.method:
        raise ValueError(f"run_job: method instance {method.name!r} given for a {job.method!r} job")
    if str(job.device).lower() not in ("auto", "cpu"):  # fail before any work (loads torch)
        from SuperResMoELib.engine.devices import resolve_device

        resolve_device(job.device)
    progress("load", 0.0, f"reading {job.input.name}")
    volume = io.read_volume(job.input, table=job.table)
    files: list[str] = []
    reference: Volume | None = None
    simulation: dict[str, Any] = {}
    derived: str | None = None
    if job.simulate:
        from SuperResMoELib.simulation.lowres import simulate_low_resolution

        factors, options, simulation = simulation_factors(method, volume, job.options)
        job = dataclasses.replace(job, options=options)
        progress("load", 0.5, simulation["note"])
        volume, reference = simulate_low_resolution(volume, factors, method=job.simulate_method)
        volume = volume.with_array(volume.array, name=f"{io.volume_stem(job.input)}_lr")
        lr_path = side_path(job.output, "lr")
        io.write_volume(volume, lr_path, compression=job.compression)
        files.append(str(lr_path))
    elif job.reference is not None:
        reference = io.read_volume(job.reference)
        options, derived = options_from_reference(method, volume, reference, job.options)
        if derived:
            job = dataclasses.replace(job, options=options)
            progress("load", 0.5, derived)
    if reference is not None:
        check_reference(reference, method.output_grid(volume, job.options),
                        "the simulated HR" if job.simulate else f"reference {job.reference}",
                        "give --scale factors the method supports" if job.simulate else "")
    frames = f"{volume.n_frames} frames, " if volume.is_4d else ""
    progress("load", 1.0, f"{frames}{volume.grid.describe()}")
    result: Result = method.enhance(volume, job.options, job.device, progress, cancel)
    if job.notes:
        result.info["warnings"] = [*job.notes, *result.info.get("warnings", [])]
    if derived:
        result.info["output_grid"] = derived
    progress("write", 0.0, f"writing {job.output.name}")
    io.write_volume(result.volume, job.output, compression=job.compression)
    files.append(str(job.output))
    if job.write_maps:
        for name, vol in result.maps.items():
            path = side_path(job.output, name)
            io.write_volume(vol, path, compression=job.compression)
            files.append(str(path))
    metrics: dict[str, Any] = {}
    if reference is not None:
        from SuperResMoELib.evaluation.metrics import absolute_error_map, squared_error_map

        progress("evaluate", 0.0, "comparing with the reference")
        for tag, fn in (("sqerr", squared_error_map), ("abserr", absolute_error_map)):
            path = side_path(job.output, tag)
            io.write_volume(fn(reference, result.volume), path, compression=job.compression)
            files.append(str(path))
        metrics = compare_to_reference(reference, result.volume)
        mpath = side_path(job.output, "metrics", ".json")
        write_text_atomic(mpath, dumps({"method": job.method, "input": str(job.input), **metrics}, indent=2))
        files.append(str(mpath))
        progress("evaluate", 1.0, "done")
    progress("write", 1.0, "done")
    return {"input": str(job.input), "output": str(job.output), "method": job.method, "files": files,
            "metrics": metrics, "info": result.info, "simulation": simulation, "seconds": time.perf_counter() - t0}


def output_path_for(input_path: Path, output: Path, method: str, many: bool) -> Path:
    """Where the SR of ``input_path`` goes: ``output`` itself for one file given
    as a file name, else ``output/<stem>_<method><suffix>``."""
    if not many and io.is_volume_file(output):
        return output
    return output / f"{io.volume_stem(input_path)}_{method}{io.volume_suffix(input_path)}"
