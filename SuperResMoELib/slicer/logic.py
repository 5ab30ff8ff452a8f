"""The Slicer module's logic, Qt-free: MRML nodes in, a background CLI run,
new MRML nodes out.

:class:`EnhanceRun` does one **Enhance**:

1. writes the input (and the reference, if any) to a fresh temporary folder
   (:func:`~SuperResMoELib.slicer.mrml.write_node`; the input node is not touched);
2. starts ``superresmoe enhance ... --progress json`` in a background process
   (:mod:`.jobs`) and turns its JSON lines into ``(stage, fraction, message)``;
3. on success loads what the CLI wrote as **new** nodes - the SR volume, the
   squared and absolute error maps (with a reference or a simulation), the
   expert/routing map (a label map with an expert colour table), the simulated
   LR volume - plus a metrics table node; on failure raises
   :class:`EnhanceFailed` with the process's one-line error or stderr tail;
4. removes the temporary folder in every case.

``run(wait=True)`` blocks (tests, batch scripts, Slicer without a main
window); the GUI calls :meth:`EnhanceRun.start` and then :meth:`EnhanceRun.poll`
from a timer until it returns ``False``, and :meth:`EnhanceRun.cancel` on
Cancel.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from SuperResMoELib.slicer import mrml, sequences
from SuperResMoELib.core.errors import ExitCode, SuperResMoEError
from SuperResMoELib.core.options import request_options
from SuperResMoELib.io.tables import flatten
from SuperResMoELib.slicer.jobs import BackgroundProcess, ProgressEvent, cli_command, library_environment

#: Output file tags (``sr_<tag>.nii.gz``) and the names their nodes get.
MAP_TITLES: dict[str, str] = {"sqerr": "squared error", "abserr": "absolute error", "routing": "expert map",
                              "lr": "LR (simulated)", "uncertainty": "uncertainty (SD)",
                              **{f"gate{i}": f"expert {i} gate weight" for i in (1, 2, 3)}}


class EnhanceFailed(SuperResMoEError):
    """The background run failed; the message is the process's error."""

    exit_code = ExitCode.INTERNAL


class EnhanceCancelled(SuperResMoEError):
    """The user cancelled the run."""

    exit_code = ExitCode.CANCELLED


def _cli_arguments(self: Any, input_path: Path, output_path: Path, reference_path: Path | None) -> list[str]:
    """The ``enhance`` arguments (without ``--progress``): input, output,
    reference and every option that differs from its default."""
    args = ["enhance", "-i", str(input_path), "-o", str(output_path)]
    if reference_path is not None:
        args += ["--reference", str(reference_path)]
    for spec in request_options():
        args += spec.argv(getattr(self, spec.name))
    return args


def _request_class() -> type:
    """:class:`EnhanceRequest`, derived from the option schema."""
    fields = [(o.name, Any, dataclasses.field(default=o.default)) for o in request_options()]
    doc = ("What the panel or a script asks for (``None`` = the method's default); one field per option of "
           ":data:`SuperResMoELib.core.options.ENHANCE_OPTIONS` that the logic can pass: "
           + ", ".join(f"``{o.name}``" for o in request_options()) + ".")
    return dataclasses.make_dataclass("EnhanceRequest", fields,
                                      namespace={"__doc__": doc, "cli_arguments": _cli_arguments,
                                                 "__module__": __name__})


#: The request of one Enhance (a dataclass with one field per request option).
EnhanceRequest: Any = _request_class()


@dataclass
class EnhanceOutcome:
    """What a finished run added to the scene.

    Attributes:
        nodes: ``"sr"``, and when present ``"sqerr"``, ``"abserr"``,
            ``"routing"`` (label map), ``"lr"`` (simulated), ``"metrics"`` (table).
        metrics: the metrics the CLI computed (empty without a reference).
        info: what the method reported (device, expert chosen and why, ...).
        seconds: the CLI's run time.
    """

    nodes: dict[str, Any] = field(default_factory=dict)
    #: For a 4D (sequence) input: the result sequences by tag (``nodes`` holds their proxy volumes).
    sequences: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


ProgressHandler = Callable[[str, float, str], None]


class EnhanceRun:
    """One background Enhance (see the module docstring).

    Args:
        scene: the MRML scene that receives the new nodes.
        input_node: the LR scalar volume (or the HR one with ``simulate``).
        request: the options.
        reference_node: optional HR volume on the SR grid.
        python: the interpreter for the child (default: PythonSlicer / this one).
        on_progress: ``(stage, fraction, message)`` callback.
    """

    def __init__(self, scene, input_node, request: EnhanceRequest, reference_node=None, python: str | None = None,
                 on_progress: ProgressHandler | None = None, acquisition=None,
                 on_log: Callable[[str], None] | None = None, output_node=None) -> None:
        if request.simulate and reference_node is not None:
            raise EnhanceFailed("give either a reference volume or 'simulate low resolution', not both")
        self.scene = scene
        self.input_node = input_node
        self.reference_node = reference_node
        self.request = request
        self.python = python
        self.on_progress = on_progress
        self.folder: Path | None = None
        self.process: BackgroundProcess | None = None
        self.stage, self.fraction, self.message = "idle", 0.0, ""
        self.outcome: EnhanceOutcome | None = None
        #: A table node or a file of the acquisition (``gx gy gz b TI TE`` per frame), for 4D inputs.
        self.acquisition = acquisition
        #: The input's volume sequence (4D scans), whose index the results copy.
        self.input_sequence = sequences.source_sequence(input_node)
        #: Set by ``cancel(discard=True)``: nothing is loaded.
        self.discarded = False
        #: Called with each line the background process writes (a log panel).
        self.on_log = on_log
        #: An existing scalar volume node that receives the SR result (3D), instead of a new node.
        self.output_node = output_node
        if output_node is not None:
            if output_node is input_node or output_node is reference_node or (
                    self.input_sequence is not None and sequences.source_sequence(output_node) is self.input_sequence):
                raise EnhanceFailed("the output volume must not be the input or the reference (inputs are never "
                                    "modified): choose another volume or 'create new'")
            if self.input_sequence is not None:
                raise EnhanceFailed("a 4D scan's results are new volume sequences: set the output volume to "
                                    "'create new'")

    # ------------------------------------------------------------- control
    def start(self) -> None:
        """Write the inputs and start the background process."""
        if self.input_sequence is None:
            mrml.volume_from_node(self.input_node)  # clear error now for an empty or vector input
        else:
            sequences.volume_from_sequence(self.input_sequence)  # every frame scalar, one grid
        self.folder = Path(tempfile.mkdtemp(prefix="superresmoe-", dir=temp_root()))
        try:
            self._report("prepare", 0.0, "writing the input to a temporary folder")
            inp = self._write(self.input_node, "input")
            ref = None
            if self.reference_node is not None:
                ref = self._write(self.reference_node, "reference")
            args = self.request.cli_arguments(inp, self.folder / "sr.nii.gz", ref)
            table = self._acquisition_file()
            if table is not None:
                args += ["--table", str(table)]
            self.process = BackgroundProcess(cli_command(args, self.python), env=library_environment()).start()
        except BaseException:
            self.cleanup()
            raise
        self._report("start", 0.0, f"{self.request.method}: started")

    def poll(self) -> bool:
        """Handle new progress lines; ``True`` while the process runs.  When it
        has ended, the results are loaded (or the error raised) and the
        temporary folder removed."""
        assert self.process is not None, "start() first"
        for event in self.process.poll():
            self._event(event)
        self._flush_log()
        if self.process.running:
            return True
        self.process.wait(on_event=self._event)
        self._finish()
        return False

    def cancel(self, block: bool = False, discard: bool = False) -> None:
        """End the process tree without waiting for it (the GUI thread calls
        this); the next :meth:`poll` after it has exited raises :class:`EnhanceCancelled`.
        ``discard``: load nothing even if the process had already finished (the scene is closing)."""
        self.discarded = self.discarded or discard
        if self.process is not None:
            self.process.cancel(block=block)

    def run(self, wait: bool = True, timeout: float | None = None) -> EnhanceOutcome | None:
        """Start; with ``wait`` block until done and return the outcome."""
        self.start()
        if not wait:
            return None
        assert self.process is not None
        try:
            self.process.wait(timeout=timeout, on_event=self._event)
        except TimeoutError:
            self.cleanup()
            raise
        self._finish()
        return self.outcome

    # ------------------------------------------------------------- helpers
    def _write(self, node, stem: str) -> Path:
        """A volume node, or a whole volume sequence (4D NIfTI), into the run folder,
        uncompressed (it is read once, by the background process, then deleted)."""
        from SuperResMoELib import io

        assert self.folder is not None
        seq = sequences.source_sequence(node)
        path = self.folder / f"{stem}.nii"
        if seq is None:
            return mrml.write_node(node, path, compress=False)
        io.write_volume(sequences.volume_from_sequence(seq), path)
        return path

    def _acquisition_file(self) -> Path | None:
        """The acquisition table of a 4D input as a file for ``--table``: a given path
        as it is, a table node written into the run folder; ``None`` without one or
        for a 3D input (a table left in the panel from an earlier 4D run is ignored)."""
        from SuperResMoELib.io.formats import write_acquisition_table

        assert self.folder is not None
        if self.acquisition is None or self.acquisition == "" or self.input_sequence is None:
            return None  # a 3D input takes its acquisition from the options, never a table
        if isinstance(self.acquisition, (str, Path)):
            return Path(self.acquisition)
        return write_acquisition_table(sequences.acquisition_table(self.acquisition),
                                       self.folder / "acquisition.txt")

    def _report(self, stage: str, fraction: float, message: str) -> None:
        self.stage, self.fraction, self.message = stage, fraction, message
        if self.on_progress is not None:
            self.on_progress(stage, fraction, message)

    def _event(self, event: ProgressEvent) -> None:
        self._flush_log()
        if event.stage in ("done", "error"):
            return
        self._report(event.stage, event.fraction, event.message)

    def _flush_log(self) -> None:
        if self.process is None:
            return
        for line in self.process.log_lines():
            if self.on_log is not None:
                self.on_log(line)

    def _finish(self) -> None:
        assert self.process is not None
        self._flush_log()
        try:
            code = self.process.returncode
            if self.process.cancelled or self.discarded or code == ExitCode.CANCELLED:
                self._report("cancelled", 1.0, "cancelled")
                raise EnhanceCancelled("cancelled by the user")
            result = self.process.result
            if code != 0 or not result or not result.get("outputs"):
                raise EnhanceFailed(self.process.error_message())
            self.outcome = self._load(result["outputs"][0])
            self._report("done", 1.0, self._summary(self.outcome))
        finally:
            self.cleanup()

    def _load(self, summary: dict[str, Any]) -> EnhanceOutcome:
        method = self.request.method
        base = self.input_node.GetName()
        out = EnhanceOutcome(metrics=summary.get("metrics") or {}, info=summary.get("info") or {},
                             seconds=float(summary.get("seconds", 0.0)))
        for f in summary.get("files", []):
            path = Path(f)
            stem = path.name.split(".")[0]
            tag = stem[len("sr_"):] if stem.startswith("sr_") else ("sr" if stem == "sr" else None)
            if tag is None:
                continue
            if self.input_sequence is not None and (tag in MAP_TITLES or tag == "sr"):
                # a 4D scan: every result is a new sequence with the input's index
                from SuperResMoELib.io.formats import read_volume

                name = f"{base} SR ({method})" if tag == "sr" else f"{base} {MAP_TITLES[tag]} ({method})"
                out.nodes[tag] = self._add_sequence(tag, read_volume(path), name, out)
                continue
            if tag == "sr" and self.output_node is not None:
                node = mrml.read_into_node(self.output_node, path)
            elif tag == "sr":
                node = mrml.read_volume_node(self.scene, path, f"{base} SR ({method})", temporary=True)
            elif tag == "routing":
                from SuperResMoELib.io.formats import read_volume

                node = mrml.expert_map_node(self.scene, read_volume(path), f"{base} expert map ({method})",
                                            out.info.get("n_experts"))
            elif tag in MAP_TITLES:
                node = mrml.read_volume_node(self.scene, path, f"{base} {MAP_TITLES[tag]} ({method})",
                                             temporary=True)
                if tag in ("sqerr", "abserr"):
                    mrml.show_as_error_map(node)
            else:
                continue
            node.SetAttribute("SuperResMoE.role", tag)
            node.SetAttribute("SuperResMoE.method", method)
            out.nodes[tag] = node
        if out.metrics:
            rows = [{"metric": k, "value": v} for k, v in flatten(out.metrics, ".", numeric_only=True).items()]
            out.nodes["metrics"] = mrml.add_table_node(self.scene, rows, f"{base} metrics ({method})")
        return out

    def _add_sequence(self, tag: str, vol, name: str, out: EnhanceOutcome):
        """A 4D result as a new sequence (and browser); returns its proxy volume."""
        import numpy as np

        label = tag == "routing"
        if label:
            vol = vol.with_array(mrml.routing_labels(np.asarray(vol.array)))
        seq, browser, proxy = sequences.add_sequence(self.scene, vol, name, like=self.input_sequence, label=label)
        for n in (seq, proxy):
            if n is not None:
                n.SetAttribute("SuperResMoE.role", tag)
                n.SetAttribute("SuperResMoE.method", self.request.method)
        out.sequences[tag] = seq
        if proxy is not None and label:
            k = int(out.info.get("n_experts") or max(1, int(np.asarray(vol.array).max())))
            proxy.GetDisplayNode().SetAndObserveColorNodeID(mrml.expert_color_node(self.scene, k).GetID())
        elif proxy is not None and tag in ("sqerr", "abserr"):
            mrml.show_as_error_map(proxy)
        return proxy

    @staticmethod
    def _summary(outcome: EnhanceOutcome) -> str:
        parts = [f"done in {outcome.seconds:.1f} s"]
        if outcome.info.get("device"):
            parts.append(f"on {outcome.info['device']}")
        if outcome.info.get("reason"):
            parts.append(str(outcome.info["reason"]))
        for key in ("psnr", "ssim"):
            if key in outcome.metrics:
                parts.append(f"{key.upper()} {float(outcome.metrics[key]):.4g}")
        return "; ".join(parts)

    def cleanup(self) -> None:
        """Remove the temporary folder (safe to call twice)."""
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None


def temp_root() -> str | None:
    """Where run folders go: Slicer's temporary folder (*Application settings*) when
    the application runs, else the system's."""
    try:
        import slicer
    except ImportError:
        return None
    app = getattr(slicer, "app", None)
    path = getattr(app, "temporaryPath", None) if app is not None else None
    return str(path) if path and Path(str(path)).is_dir() else None


def results_html(outcome: EnhanceOutcome) -> str:
    """The panel's results box for a finished run: method, device and time, the
    method's reason (e.g. which expert and why), out-of-domain warnings (in
    red), the acquisition note, engine events, and the metrics table."""
    from html import escape

    rows = "".join(f"<tr><td>{escape(k)}</td><td>{v:.5g}</td></tr>" for k, v in sorted(outcome.metrics.items())
                   if isinstance(v, (int, float)) and not isinstance(v, bool))
    info = outcome.info
    lines = [f"<b>{escape(str(info.get('method', '')))}</b> on {escape(str(info.get('device', '?')))} "
             f"in {outcome.seconds:.1f} s"]
    lines += [escape(line) for line in explain(outcome)]
    if info.get("reason"):
        lines.append(escape(str(info["reason"])))
    lines += [f"<b style='color:#c0392b'>Warning: {escape(str(w))}</b>" for w in info.get("warnings", [])]
    if info.get("acquisition", {}).get("note"):
        lines.append(escape(str(info["acquisition"]["note"])))
    lines += [f"<i>{escape(str(e))}</i>" for e in info.get("events", [])]
    table = f"<table>{rows}</table>" if rows else "<i>No reference: no metrics.</i>"
    return "<br>".join(lines) + "<br>" + table


def _ijk(values) -> str:
    return " x ".join(f"{float(v):g}" for v in values)


def explain(outcome: EnhanceOutcome) -> list[str]:
    """Plain lines that say what the run did: grids (input -> output, and where the
    output grid came from), how the engine tiled the volume, the frames of a 4D
    scan, and the diffusion sampler with its experts' gate weights (MoEDiff-SR)."""
    info, lines = outcome.info, []
    if info.get("input_size_ijk") and info.get("output_size_ijk"):
        lines.append(f"input {_ijk(info['input_size_ijk'])} voxels of {_ijk(info['input_spacing_ijk'])} mm -> "
                     f"output {_ijk(info['output_size_ijk'])} voxels of {_ijk(info['output_spacing_ijk'])} mm")
    if info.get("output_grid"):
        lines.append(f"output grid: {info['output_grid']}")
    if info.get("tiling"):
        lines.append(f"engine: {info['tiling']} (threads: {info.get('threads', '?')})")
    seq = outcome.sequences.get("sr")
    if seq is not None:
        lines.append(f"4D scan: {seq.GetNumberOfDataNodes()} frames enhanced; results are volume sequences "
                     f"(index {seq.GetIndexName()})")
    if "steps" in info and "sampler" in info:
        text = f"diffusion: {info['steps']} sampler step(s), {info['sampler']} mode"
        if info.get("slice_axis"):
            text += f", slices across {info['slice_axis']}"
            if info.get("slice_axis_reason"):
                text += f" ({info['slice_axis_reason']})"
        lines.append(text)
        gates = info.get("gates") or {}
        if gates.get("mean"):
            parts = [f"E{i + 1} {m:.2f}" + (f" ± {sd:.2f}" if gates.get("std") else "")
                     for i, (m, sd) in enumerate(zip(gates["mean"], gates.get("std") or [0] * len(gates["mean"])))]
            led = gates.get("slices_led")
            lines.append("expert gate weights per slice: " + ", ".join(parts)
                         + (f"; slices led: {', '.join(f'E{i + 1} {n}' for i, n in enumerate(led))}" if led else ""))
    return lines


def request_from_dict(values: dict[str, Any]) -> EnhanceRequest:
    """An :class:`EnhanceRequest` from a dict with its field names (unknown keys refused)."""
    names = {f.name for f in dataclasses.fields(EnhanceRequest)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown enhance option(s) {unknown}; known: {sorted(names)}")
    return EnhanceRequest(**values)
