"""The enhance options: one schema from which every surface is derived.

:data:`ENHANCE_OPTIONS` declares each option once - its name, CLI flags, kind,
default, help, the methods that read it, whether the Slicer logic can pass it
and under which parameter-node name the panel keeps it.  From it:

* the ``superresmoe enhance`` arguments (:func:`add_enhance_arguments`, also
  used by the Slicer batch script for its subset),
* the defaults of :class:`~SuperResMoELib.methods.base.EnhanceOptions` and
  :class:`~SuperResMoELib.app.pipeline.EnhanceJob` (:data:`DEFAULTS`),
* the Slicer logic's request and the argv it passes to the background
  process (:mod:`SuperResMoELib.slicer.logic`),
* the panel's parameter-node fields and their defaults
  (:mod:`SuperResMoELib.slicer.parameters`).

A value of ``None`` means "the method's default".  This module is torch- and
Qt-free; ``Testing/test_options.py`` fails when a surface misses an option.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from SuperResMoELib.engine import windows as _w

#: Option kinds: how a value is parsed from text and written back.
KINDS: tuple[str, ...] = ("str", "path", "int", "float", "bool", "floats", "ints", "acquisition", "choice")
#: Acquisition parameters of one SS-MoE frame, in order.
ACQUISITION_FIELDS: tuple[str, ...] = ("gx", "gy", "gz", "b", "TI", "TE")


def parse_numbers(text: str, count: Sequence[int] = (1, 3), what: str = "numbers") -> tuple[float, ...]:
    """``"2"`` -> ``(2.0,)``; ``"1,1,2"``, ``"1x1x2"`` or ``"1 1 2"`` -> ``(1.0, 1.0, 2.0)``.

    Raises:
        ValueError: not numbers, or not one of ``count`` many.
    """
    parts = [p for p in text.replace("x", ",").replace(" ", ",").split(",") if p.strip()]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise ValueError(f"expected {what} separated by commas, got {text!r}") from None
    if len(values) not in count:
        words = {1: "one", 3: "three", 6: "six"}
        want = " or ".join(words.get(c, str(c)) for c in count)
        raise ValueError(f"expected {want} {what}, got {len(values)} in {text!r}")
    return values


def format_numbers(values: float | Iterable[float]) -> str:
    """``(1.0, 1.0, 2.0)`` -> ``"1,1,2"`` (the inverse of :func:`parse_numbers`)."""
    seq = [values] if isinstance(values, (int, float)) else list(values)
    return ",".join(f"{float(v):g}" for v in seq)


def _floats(text: str) -> float | tuple[float, ...]:
    try:
        v = parse_numbers(text, (1, 3), "numbers")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return v[0] if len(v) == 1 else v


def _ints(text: str) -> int | tuple[int, ...]:
    try:
        v = parse_numbers(text, (1, 3), "positive integers")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if any(x != int(x) or x < 1 for x in v):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return int(v[0]) if len(v) == 1 else tuple(int(x) for x in v)


def _acquisition(text: str) -> tuple[float, ...]:
    try:
        return parse_numbers(text, (len(ACQUISITION_FIELDS),), "numbers " + ",".join(ACQUISITION_FIELDS))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


#: argparse ``type`` of each kind that needs one.
_ARG_TYPES: dict[str, Callable[[str], Any]] = {"int": int, "float": float, "floats": _floats, "ints": _ints,
                                               "acquisition": _acquisition}


@dataclass(frozen=True)
class PanelField:
    """How the panel's parameter node keeps an option.

    Attributes:
        name: the parameter name (camelCase, saved with the scene).
        type: ``str``, ``int``, ``float`` or ``bool`` (the node stores text).
        unset: the stored value that means "the method's default" (``None``).
    """

    name: str
    type: type
    unset: Any = None


@dataclass(frozen=True)
class OptionSpec:
    """One enhance option.

    Attributes:
        name: attribute name (argparse ``dest``, Slicer request field).
        flags: CLI flags, the long one first (``("--method", "-m")``).
        kind: one of :data:`KINDS`.
        default: the default (``None``: the method's default).
        help: one line for ``--help`` and tooltips.
        target: where the value lands: ``"job.<field>"`` (file-level job),
            ``"options.<field>"`` (method options) or ``"extra.<key>"``.
        methods: the methods that read it (``()``: every method).
        choices: allowed values of a ``choice`` option (a callable for
            lists known only at run time, e.g. the registered methods).
        panel: how the panel stores it (``None``: not on the panel).
        batch: the Slicer batch script offers it too.
        changes_output: the value changes what is written (the voxels, the
            files); ``False`` for how the work runs (device, threads, memory,
            compression level).  A cohort run skips an input whose sidecar
            records the same values of every option that changes the output.

    A ``bool`` option's flag flips its default: ``--simulate`` turns on an
    option that is off by default, ``--no-amp`` turns off one that is on.
    """

    name: str
    flags: tuple[str, ...]
    kind: str
    default: Any
    help: str
    target: str
    methods: tuple[str, ...] = ()
    choices: tuple[str, ...] | Callable[[], Sequence[str]] = ()
    panel: PanelField | None = None
    batch: bool = False
    changes_output: bool = True

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"option {self.name}: unknown kind {self.kind!r}")
        if self.kind == "bool" and not isinstance(self.default, bool):
            raise ValueError(f"option {self.name}: a bool option needs a bool default")

    @property
    def flag(self) -> str:
        """The flag written into argv."""
        return self.flags[0]

    def choice_values(self) -> list[str]:
        c = self.choices
        return list(c() if callable(c) else c)

    def argv(self, value: Any) -> list[str]:
        """The CLI arguments that ask for ``value`` (``[]`` for the default)."""
        if value is None or value == "":
            return []
        if self.kind == "bool":
            return [self.flag] if bool(value) != bool(self.default) else []
        if self.kind in ("floats", "ints", "acquisition"):
            return [self.flag, format_numbers(value)]
        if self.kind == "float":
            return [self.flag, f"{float(value):g}"]
        return [self.flag, str(value)]


def _method_names() -> list[str]:
    from SuperResMoELib.methods import method_names

    return method_names()


SSMOE_FAMILY = ("ssmoe", "srunet", "hardmoe")
MOEDIFF = ("moediff",)
REMIX_FAMILY = ("remix", "remix1")

#: Every enhance option, once.
ENHANCE_OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec("method", ("--method", "-m"), "choice", "cubic", "method (default: cubic)", "job.method",
               choices=_method_names, panel=PanelField("method", str, None), batch=True),
    OptionSpec("checkpoint", ("--checkpoint",), "path", None,
               "checkpoint (.safetensors + .json) instead of the bundled one", "options.checkpoint",
               panel=PanelField("checkpoint", str, ""), batch=True, changes_output=False),
    OptionSpec("task", ("--task",), "str", None, "method task, e.g. SS-MoE aniso or iso", "options.task",
               methods=SSMOE_FAMILY, panel=PanelField("task", str, ""), batch=True),
    OptionSpec("scale", ("--scale",), "floats", None,
               "SR factors: one number or i,j,k (default: the method's, cubic 1,1,2)", "options.scale",
               panel=PanelField("scale", str, ""), batch=True),
    OptionSpec("spacing", ("--spacing",), "floats", None,
               "target spacing in mm (one number or i,j,k) instead of --scale", "options.target_spacing",
               panel=PanelField("targetSpacing", float, 0.0), batch=True),
    OptionSpec("expert", ("--expert",), "int", None, "force one expert (methods with experts)", "options.expert",
               methods=("ssmoe", "hardmoe", "remix", "moediff"), panel=PanelField("expert", int, -1), batch=True),
    OptionSpec("acquisition", ("--acquisition",), "acquisition", None,
               "SS-MoE: acquisition of a 3D input as gx,gy,gz,b,TI,TE (default: the protocol's average)",
               "extra.acquisition", methods=("ssmoe",), panel=PanelField("acquisition", str, "")),
    OptionSpec("steps", ("--steps",), "int", None, "MoEDiff-SR: sampler steps (default 2)", "extra.steps",
               methods=MOEDIFF, panel=PanelField("diffusionSteps", int, 0), batch=True),
    OptionSpec("samples", ("--samples",), "int", None,
               "MoEDiff-SR: stochastic samples; more than 1 gives their mean and an uncertainty map (default 1)",
               "extra.samples", methods=MOEDIFF, panel=PanelField("diffusionSamples", int, 0), batch=True),
    OptionSpec("sampler", ("--sampler",), "choice", None,
               "MoEDiff-SR: full (every expert, gated; the default) or top1 (only the highest-gated expert; faster)",
               "extra.sampler", methods=MOEDIFF, choices=("full", "top1"), panel=PanelField("samplerMode", str, ""),
               batch=True),
    OptionSpec("slice_axis", ("--slice-axis",), "choice", None,
               "MoEDiff-SR: slices across i, j or k; auto (the default): the axis whose spacing changes least; all: "
               "the three orientations averaged (about 3x slower)", "extra.slice_axis", methods=MOEDIFF,
               choices=("auto", "i", "j", "k", "all"), panel=PanelField("sliceAxis", str, ""), batch=True),
    OptionSpec("seed", ("--seed",), "int", None, "MoEDiff-SR: seed of the sampler's noise (default 0)", "extra.seed",
               methods=MOEDIFF),
    OptionSpec("device", ("--device",), "str", "auto", "auto, cpu, cuda or cuda:N (default auto)", "job.device",
               panel=PanelField("device", str, None), batch=True, changes_output=False),
    OptionSpec("patch_size", ("--patch-size",), "ints", None, "input patch size in voxels (one or k,j,i)",
               "options.patch_size", panel=PanelField("patchSize", int, 0)),
    OptionSpec("overlap", ("--overlap",), "float", 0.5, "patch overlap fraction in [0, 1) (default 0.5)",
               "options.overlap", panel=PanelField("overlap", float, None), batch=True),
    OptionSpec("batch_size", ("--batch-size",), "int", None,
               f"patches per batch of the sliding windows (default: as many as {_w.CPU_BATCH_VOXELS} input voxels "
               f"hold on the CPU, {_w.GPU_BATCH_VOXELS} on a GPU; halved on out-of-memory)", "options.batch_size",
               panel=PanelField("batchSize", int, 0), changes_output=False),
    OptionSpec("mixed_precision", ("--no-amp",), "bool", True, "disable mixed precision (autocast) on CUDA",
               "options.mixed_precision", panel=PanelField("mixedPrecision", bool, None)),
    OptionSpec("amp_dtype", ("--amp-dtype",), "choice", _w.AMP_DTYPES[0],
               "autocast precision on CUDA (default float16; bfloat16 on GPUs that have it)", "options.amp_dtype",
               choices=_w.AMP_DTYPES),
    OptionSpec("tiling", ("--tiling",), "choice", _w.STRATEGIES[0],
               "auto (default): halo-crop tiles for fully convolutional networks (REMIx; equal to one "
               "whole-volume pass), sliding blended windows for the others; or force halo / sliding",
               "options.tiling", choices=_w.STRATEGIES),
    OptionSpec("memory_budget", ("--memory-budget",), "int", None,
               f"MiB the halo-crop tiles may use (default: {_w.CPU_BUDGET_BYTES >> 20}, or "
               f"{_w.CPU_BUDGET_FRACTION:g} x the available memory when less, on the CPU; "
               f"{_w.GPU_BUDGET_FRACTION:g} x the free memory on a GPU)", "options.memory_budget", changes_output=False),
    OptionSpec("compile", ("--compile",), "bool", False,
               "run the network through torch.compile (slow first call; off by default)", "options.compile", changes_output=False),
    OptionSpec("threads", ("--threads",), "int", None,
               "torch CPU threads (default: the cores given to this process)", "options.threads", changes_output=False),
    OptionSpec("nonfinite", ("--nonfinite",), "choice", "error",
               "NaN/Inf voxels: stop with an error (default) or replace them by 0", "options.nonfinite",
               choices=("error", "zero")),
    OptionSpec("simulate", ("--simulate",), "bool", False,
               "treat the input as HR: degrade it by the method's factors first, enhance, and compare",
               "job.simulate", panel=PanelField("simulate", bool, None), batch=True),
    OptionSpec("simulate_method", ("--simulate-method",), "choice", "boxcar",
               "how --simulate makes the LR image (default boxcar: block average)", "job.simulate_method",
               choices=("boxcar", "gaussian", "kspace")),
    OptionSpec("write_maps", ("--no-maps",), "bool", True, "do not write method maps (routing, gating)",
               "job.write_maps"),
    OptionSpec("compression", ("--compression",), "choice", "fast",
               "compression of .nii.gz / .nrrd / .mha outputs: fast (default, zlib level 1) or max (level 9)",
               "job.compression", choices=("fast", "max"), changes_output=False),
)

#: name -> spec.
OPTIONS: dict[str, OptionSpec] = {o.name: o for o in ENHANCE_OPTIONS}
#: name -> default.
DEFAULTS: dict[str, Any] = {o.name: o.default for o in ENHANCE_OPTIONS}
#: Options shown in the CLI's "patch engine" group (the others: "method").
ENGINE_OPTIONS: tuple[str, ...] = ("patch_size", "overlap", "batch_size", "mixed_precision", "amp_dtype", "tiling",
                                   "memory_budget", "compile", "threads", "nonfinite")


def output_settings(values: dict[str, Any]) -> dict[str, Any]:
    """The values (missing ones at their defaults) of the options that change
    the output (:attr:`OptionSpec.changes_output`), JSON-ready: tuples as
    lists, paths as text.  ``checkpoint`` is left out: what identifies a
    checkpoint is its weights' sha256, recorded beside."""
    out: dict[str, Any] = {}
    for name, spec in OPTIONS.items():
        if not spec.changes_output:
            continue
        v = values.get(name, spec.default)
        out[name] = list(v) if isinstance(v, (tuple, list)) else (str(v) if hasattr(v, "__fspath__") else v)
    return out


def add_enhance_arguments(parser: argparse.ArgumentParser, only: Callable[[OptionSpec], bool] | None = None) -> None:
    """Add the enhance options (those ``only`` accepts) to ``parser``, in two
    groups: the method's options and the patch engine's."""
    groups: dict[str, Any] = {}
    for spec in ENHANCE_OPTIONS:
        if only is not None and not only(spec):
            continue
        group_name = "patch engine" if spec.name in ENGINE_OPTIONS else "method"
        g = groups.setdefault(group_name, parser.add_argument_group(group_name))
        if spec.kind == "bool":
            g.add_argument(*spec.flags, dest=spec.name, action="store_false" if spec.default else "store_true",
                           default=spec.default, help=spec.help)
            continue
        kwargs: dict[str, Any] = {"dest": spec.name, "default": spec.default, "help": spec.help}
        if spec.kind == "choice":
            kwargs["choices"] = spec.choice_values()
        elif spec.kind in _ARG_TYPES:
            kwargs["type"] = _ARG_TYPES[spec.kind]
        g.add_argument(*spec.flags, **kwargs)


def values_from_namespace(args: argparse.Namespace) -> dict[str, Any]:
    """The enhance option values of parsed arguments (missing ones at their defaults)."""
    return {name: getattr(args, name, spec.default) for name, spec in OPTIONS.items()}


def unused_options(values: dict[str, Any], method: str) -> list[str]:
    """Sentences naming the options set to a non-default value that ``method``
    does not read (their ``methods`` exclude it): they are ignored."""
    notes = []
    for name, value in values.items():
        spec = OPTIONS.get(name)
        if spec is None or not spec.methods or method in spec.methods or value is None or value == spec.default:
            continue
        notes.append(f"{spec.flags[0]} is ignored: method {method} does not use it "
                     f"(it is for {', '.join(spec.methods)})")
    return notes


def request_options() -> tuple[OptionSpec, ...]:
    """The options the Slicer logic can pass to the background process: all of them."""
    return ENHANCE_OPTIONS


def panel_options() -> tuple[OptionSpec, ...]:
    """The options the panel keeps in its parameter node."""
    return tuple(o for o in ENHANCE_OPTIONS if o.panel is not None)


def panel_default(spec: OptionSpec) -> Any:
    """The parameter-node default of a panel option."""
    assert spec.panel is not None
    return spec.panel.unset if spec.default is None else spec.default


def panel_to_value(spec: OptionSpec, stored: Any) -> Any:
    """A parameter-node value -> the option value (``None`` for "the method's default").

    Raises:
        ValueError: unparsable numbers (scale, acquisition).
    """
    assert spec.panel is not None
    if spec.panel.unset is not None and stored == spec.panel.unset:
        return None
    if spec.kind == "floats":
        if isinstance(stored, (int, float)):
            return (float(stored),) if stored > 0 else None
        return parse_numbers(stored, (1, 3)) if str(stored).strip() else None
    if spec.kind == "acquisition":
        if not str(stored).strip():
            return None
        values = parse_numbers(stored, range(1, 100))
        if len(values) != len(ACQUISITION_FIELDS):
            raise ValueError(f"acquisition parameters are six numbers {' '.join(ACQUISITION_FIELDS)}, "
                             f"got {len(values)}")
        return values
    if spec.kind == "int" and spec.panel.unset is not None and stored < 0:
        return None
    return stored
