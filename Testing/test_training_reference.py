"""Training on the CPU gives bit-identical weights to the code before configs
became dataclasses and trainers got devices (``Testing/data/training_reference.safetensors``,
see ``Testing/data/make_training_reference.py``)."""

from __future__ import annotations

import copy
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


#: Largest max|a - b| / max|b| of a stored tensor when the float kernels of
#: this CPU round differently from the reference machine's (measured: 5.6e-4
#: between an AVX-512 machine and the earlier reference's, REMIx 1 network). A change of the
#: training itself (seed, step count, learning rate, batch order) moves the
#: weights by far more: see test_the_gap_tolerance_still_sees_a_changed_training.
CROSS_CPU_GAP = 5e-3

#: Largest max|a - b| / max|b| of the tiny SS-MoE gater's logits on its
#: training pairs between this CPU and the reference's. The gater (Linear ->
#: ReLU -> BatchNorm1d on batches of 8, Adam at lr 1e-2) turns rounding in
#: near-zero gradients into whole Adam steps of single weights (measured on an
#: AMD EPYC CPU without AVX-512: 1.15 relative gap in one bias, 7.9e-3 in the
#: logits, the same routing of every pair; the experts, trained on the pairs
#: it routes, agree to 2e-5), so it is compared by what it computes. One more
#: gater step moves the logits by 0.41: test_the_gater_tolerance_still_sees_a_changed_gater.
GATER_LOGIT_GAP = 2e-2
GATER = "ssmoe.ssmoe.gater."


def _relative_gap(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12)) if b.numel() else 0.0


def _gater_logits(maker, run: Path, weights: dict[str, torch.Tensor], cfg: dict | None = None) -> torch.Tensor:
    """``(N, K)`` logits of the tiny SS-MoE (``weights``: its state dict) on the
    training pairs of the run in ``run`` (its phases are reloaded, not retrained)."""
    from SuperResMoELib.nets.moe import SSMoE
    from training.config import from_dict
    from training.ssmoe.config import SSMoEConfig
    from training.ssmoe.train import SSMoETrainer, _map_batches

    ss = SSMoETrainer("aniso", from_dict(SSMoEConfig, cfg or maker.SSMOE), run / "ssmoe", device="cpu", amp="none")
    moe = SSMoE.from_baseline(ss.baseline(), 2)
    moe.load_state_dict(weights)
    moe.eval()
    return torch.from_numpy(_map_batches(ss.data.train, lambda x, a: moe.gater(moe.encoder(x).bottleneck, a)))


def _prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def _one_step_more(tmp_path: Path, monkeypatch, method: str, phase: str):
    """``(maker, reference weights, config)``: the reference run's config of
    ``method`` (``"REMIX"`` or ``"SSMOE"``) with one more step in ``phase``."""
    monkeypatch.setenv("SUPERRESMOE_CACHE", str(tmp_path / "cache"))
    maker = _maker()
    cfg = copy.deepcopy(getattr(maker, method))
    cfg[phase]["steps_per_epoch"] += 1
    return maker, load_file(str(DATA / "training_reference.safetensors")), cfg


def test_cpu_training_is_bit_identical_to_the_reference(tmp_path, monkeypatch) -> None:
    """Bit-identical weights on a CPU whose float kernels round as the
    reference machine's; elsewhere every tensor agrees to :data:`CROSS_CPU_GAP`."""
    monkeypatch.setenv("SUPERRESMOE_CACHE", str(tmp_path / "cache"))
    maker = _maker()
    reference = load_file(str(DATA / "training_reference.safetensors"))
    nets = maker.main(tmp_path / "run")
    assert sorted(nets) == ["remix.expert1", "remix.expert2", "remix.single",
                            "ssmoe.hardmoe", "ssmoe.srunet", "ssmoe.ssmoe"]
    got = maker.reference(nets)
    assert sorted(got) == sorted(reference)
    inexact = set()  # networks whose stored weights differ in low bits (another CPU's float kernels)
    for name in sorted(reference):
        if not name.startswith("sha256."):
            if not torch.equal(got[name], reference[name]):
                inexact.add(".".join(name.split(".")[:2]))
                if not name.startswith(GATER):  # the gater: by its logits, below
                    assert _relative_gap(got[name], reference[name]) <= CROSS_CPU_GAP, name
    if "ssmoe.ssmoe" in inexact:
        mine = _gater_logits(maker, tmp_path / "run", nets["ssmoe.ssmoe"])
        theirs = _gater_logits(maker, tmp_path / "run", _prefixed(reference, "ssmoe.ssmoe."))
        assert _relative_gap(mine, theirs) <= GATER_LOGIT_GAP
        assert torch.equal(mine.argmax(1), theirs.argmax(1)), "the gater routes some training pair elsewhere"
    for name in sorted(k for k in reference if k.startswith("sha256.")):
        if name[7:] not in inexact:
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


def test_the_gap_tolerance_still_sees_a_changed_training(tmp_path, monkeypatch, one_torch_thread) -> None:
    """Expert 1 of the reference REMIx run with one more training step lands
    farther from the reference than :data:`CROSS_CPU_GAP`: the tolerance for
    another CPU's rounding does not hide a change of the training."""
    from training.config import from_dict
    from training.remix.config import REMIxConfig
    from training.remix.train import REMIxTrainer

    _, reference, cfg = _one_step_more(tmp_path, monkeypatch, "REMIX", "expert1")
    net = REMIxTrainer(from_dict(REMIxConfig, cfg), tmp_path / "run", device="cpu", amp="none").expert(1)
    gaps = [_relative_gap(v.detach(), reference[f"remix.expert1.{k}"]) for k, v in net.state_dict().items()]
    assert max(gaps) > 4 * CROSS_CPU_GAP, max(gaps)


def test_the_gater_tolerance_still_sees_a_changed_gater(tmp_path, monkeypatch, one_torch_thread) -> None:
    """The tiny SS-MoE's gater trained one step more gives logits farther from
    the reference gater's than :data:`GATER_LOGIT_GAP` allows another CPU."""
    from training.config import from_dict
    from training.ssmoe.config import SSMoEConfig
    from training.ssmoe.train import SSMoETrainer

    maker, reference, cfg = _one_step_more(tmp_path, monkeypatch, "SSMOE", "gater")
    ss = SSMoETrainer("aniso", from_dict(SSMoEConfig, cfg), tmp_path / "run" / "ssmoe", device="cpu", amp="none")
    base = ss.baseline()
    moe = ss.gater(base, 2, "quantile", ss.labels(base, 2, "quantile")["labels"])
    changed = _gater_logits(maker, tmp_path / "run", moe.state_dict(), cfg)
    theirs = _gater_logits(maker, tmp_path / "run", _prefixed(reference, "ssmoe.ssmoe."), cfg)
    assert _relative_gap(changed, theirs) > 4 * GATER_LOGIT_GAP
