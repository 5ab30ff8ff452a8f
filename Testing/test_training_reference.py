"""Training on the CPU gives bit-identical weights to the code before configs
became dataclasses and trainers got devices (``Testing/data/training_reference.safetensors``,
see ``Testing/data/make_training_reference.py``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from safetensors.torch import load_file

DATA = Path(__file__).resolve().parent / "data"


def _maker():
    spec = importlib.util.spec_from_file_location("make_training_reference", DATA / "make_training_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cpu_training_is_bit_identical_to_the_reference(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SUPERRESMOE_CACHE", str(tmp_path / "cache"))
    maker = _maker()
    reference = load_file(str(DATA / "training_reference.safetensors"))
    nets = maker.main(tmp_path / "run")
    assert sorted(nets) == ["remix.expert1", "remix.expert2", "remix.single",
                            "ssmoe.hardmoe", "ssmoe.srunet", "ssmoe.ssmoe"]
    got = maker.reference(nets)
    assert sorted(got) == sorted(reference)
    for name in sorted(reference):
        if not name.startswith("sha256."):
            assert torch.equal(got[name], reference[name]), name
    for name in sorted(k for k in reference if k.startswith("sha256.")):
        assert torch.equal(got[name], reference[name]), f"{name[7:]}: weights differ from the reference"
    # the runs trained: expert 2 started from expert 1 and moved away from it
    e1, e2 = nets["remix.expert1"], nets["remix.expert2"]
    assert sorted(e1) == sorted(e2) and any(not torch.equal(e1[k], e2[k]) for k in e1)


def test_digest_sees_every_bit() -> None:
    """The digest the reference stores changes when one bit of one tensor does."""
    maker = _maker()
    w = {"a": torch.zeros(3), "b": torch.ones(2, 2)}
    flipped = {"a": w["a"].clone(), "b": w["b"].clone()}
    flipped["b"].view(torch.int32)[0, 0] ^= 1
    assert torch.equal(maker.digest(w), maker.digest({k: v.clone() for k, v in w.items()}))
    assert not torch.equal(maker.digest(w), maker.digest(flipped))
