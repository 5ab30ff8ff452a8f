"""One enhance-option schema: every surface (CLI, Slicer request and argv,
panel parameter node, batch script, widget) is derived from it, and a value
set on any surface arrives where the option says."""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest

from SuperResMoELib.app.cli import build_parser
from SuperResMoELib.app.pipeline import EnhanceJob, build_job
from SuperResMoELib.core.errors import InputError
from SuperResMoELib.core.options import (
    DEFAULTS,
    OPTIONS,
    panel_options,
    parse_numbers,
    request_options,
    values_from_namespace,
)
from SuperResMoELib.methods.base import EnhanceOptions

ROOT = Path(__file__).resolve().parents[1]
#: A non-default value of every option (a new option must get one here).
SAMPLES = {
    "method": "remix", "checkpoint": "my.safetensors", "task": "iso", "scale": (1.0, 1.0, 3.0),
    "spacing": (0.8,), "expert": 2, "acquisition": (1.0, 0.0, 0.0, 1000.0, 500.0, 80.0), "device": "cpu",
    "patch_size": 32, "overlap": 0.25, "batch_size": 4, "mixed_precision": False, "nonfinite": "zero",
    "simulate": True, "simulate_method": "gaussian", "write_maps": False,
    "steps": 5, "samples": 4, "sampler": "top1", "slice_axis": "all", "seed": 7,
    "amp_dtype": "bfloat16", "tiling": "sliding", "memory_budget": 512, "compile": True, "threads": 1,
    "compression": "max",
}
#: Arguments of ``enhance`` that are not options of a method run.
FILE_ARGUMENTS = {"help", "input", "output", "reference", "table", "progress", "debug",
                  "bids", "overwrite", "retries"}  # run-level: which files, and how a cohort run treats them


def _cluster_arguments() -> set[str]:
    """The Dask options (declared once, in SuperResMoELib.app.cluster)."""
    from SuperResMoELib.app.cluster import add_cluster_arguments

    p = argparse.ArgumentParser()
    add_cluster_arguments(p)
    return {a.dest for a in p._actions} - {"help"}


def _enhance_parser() -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["enhance"]


def _landed(job: EnhanceJob, target: str):
    where, attr = target.split(".", 1)
    if where == "job":
        return getattr(job, attr)
    if where == "options":
        return getattr(job.options, attr)
    return job.options.extra.get(attr)


def _same(a, b) -> bool:
    if isinstance(a, (tuple, list, float, int)) and not isinstance(a, bool):
        return np.allclose(np.atleast_1d(np.asarray(a, float)), np.atleast_1d(np.asarray(b, float)))
    return a == b


def test_every_option_has_a_sample_and_a_non_default_one() -> None:
    assert set(SAMPLES) == set(OPTIONS)
    for name, value in SAMPLES.items():
        assert value != DEFAULTS[name], name


def test_the_cli_offers_exactly_the_schema() -> None:
    dests = {a.dest for a in _enhance_parser()._actions} - FILE_ARGUMENTS - _cluster_arguments()
    assert dests == set(OPTIONS)
    assert _cluster_arguments() == {"scheduler", "workers", "dashboard", "tls_ca_file", "tls_cert", "tls_key",
                                    "insecure"}


def test_defaults_are_the_schema_defaults() -> None:
    parsed = values_from_namespace(_enhance_parser().parse_args(["-i", "x.nii", "-o", "y.nii"]))
    assert parsed == DEFAULTS
    job = build_job({}, Path("x.nii"), Path("y.nii"))
    plain = EnhanceJob(Path("x.nii"), Path("y.nii"))
    assert job == dataclasses.replace(plain, options=EnhanceOptions())
    for spec in OPTIONS.values():
        assert _same(_landed(job, spec.target), spec.default) or spec.default is None


def test_request_and_panel_fields_come_from_the_schema() -> None:
    from SuperResMoELib.slicer.logic import EnhanceRequest

    assert [f.name for f in dataclasses.fields(EnhanceRequest)] == [o.name for o in request_options()]
    assert {o.name for o in request_options()} == set(OPTIONS)
    pytest.importorskip("slicer")
    from SuperResMoELib.slicer.parameters import EXTRA_FIELDS, PanelDefaults

    assert [f.name for f in dataclasses.fields(PanelDefaults)] == ([o.panel.name for o in panel_options()]
                                                                   + [name for name, _, _ in EXTRA_FIELDS])


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_a_value_travels_from_the_request_through_argv_to_the_job(name: str, tmp_path: Path) -> None:
    """Slicer logic -> argv of the background CLI -> argparse -> EnhanceJob."""
    from SuperResMoELib.slicer.logic import EnhanceRequest

    spec = OPTIONS[name]
    req = EnhanceRequest(**{name: SAMPLES[name]})
    argv = req.cli_arguments(tmp_path / "in.nii.gz", tmp_path / "out.nii.gz", None)
    args = build_parser().parse_args(argv)
    job = build_job(values_from_namespace(args), tmp_path / "in.nii.gz", tmp_path / "out.nii.gz")
    assert _same(_landed(job, spec.target), SAMPLES[name]), (name, argv)
    for other in OPTIONS.values():  # and nothing else changed
        if other.name != name:
            assert _same(_landed(job, other.target), other.default) or other.default is None, other.name


def test_every_panel_parameter_reaches_the_request() -> None:
    slicer = pytest.importorskip("slicer")
    from SuperResMoELib.slicer.parameters import PanelParameters

    scene = slicer.vtkMRMLScene()
    for spec in panel_options():
        p = PanelParameters(scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode"))
        value = SAMPLES[spec.name]
        stored = {str: lambda v: v if isinstance(v, str) else ",".join(f"{x:g}" for x in v),
                  float: lambda v: float(np.atleast_1d(v)[0]), int: int, bool: bool}[spec.panel.type](value)
        setattr(p, spec.panel.name, stored)
        assert _same(getattr(p.to_request(), spec.name), value), spec.name


def test_the_widget_binds_every_panel_parameter_both_ways() -> None:
    source = (ROOT / "SuperResMoE" / "SuperResMoE.py").read_text()
    for spec in panel_options():
        uses = re.findall(rf"\bp\.{spec.panel.name}\b", source)
        assert len(uses) >= 2, f"the panel does not read and write {spec.panel.name}"


def test_the_batch_script_takes_its_options(tmp_path: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("batch", ROOT / "SuperResMoELib" / "slicer" / "batch.py")
    batch = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(batch)
    argv = ["-i", "a.nii", "-o", str(tmp_path)]
    for o in OPTIONS.values():
        if o.batch:
            argv += o.argv(SAMPLES[o.name])
    args = batch.parse(argv)
    for o in OPTIONS.values():
        if o.batch:
            assert _same(getattr(args, o.name), SAMPLES[o.name]), o.name


def test_contradictions_and_unknown_names() -> None:
    with pytest.raises(InputError, match="either --scale or --spacing"):
        build_job({"scale": 2.0, "spacing": 1.0}, Path("a"), Path("b"))
    with pytest.raises(InputError, match="either --reference or --simulate"):
        build_job({"simulate": True}, Path("a"), Path("b"), reference=Path("r"))
    with pytest.raises(InputError, match="unknown enhance option"):
        build_job({"sacle": 2.0}, Path("a"), Path("b"))
    with pytest.raises(ValueError, match="one or three numbers"):
        parse_numbers("1,2")
    assert parse_numbers("1x1 x2") == (1.0, 1.0, 2.0)


def test_options_a_method_does_not_read_are_reported() -> None:
    from SuperResMoELib.core.options import unused_options

    job = build_job({"method": "remix", "task": "iso", "acquisition": (0, 0, 0, 0, 100, 80)}, Path("a"), Path("b"))
    assert len(job.notes) == 2 and "--task is ignored: method remix" in job.notes[0]
    assert "--acquisition is ignored" in job.notes[1]
    assert build_job({"method": "ssmoe", "task": "iso"}, Path("a"), Path("b")).notes == ()
    assert unused_options({"expert": 2}, "cubic") and not unused_options({"expert": None}, "cubic")
