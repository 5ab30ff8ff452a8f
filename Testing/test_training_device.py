"""Training phases on a device with mixed precision; the saved state is
device-independent (CPU tensors, plain numbers)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from SuperResMoELib.core.errors import ConfigError, MissingPackageError
from SuperResMoELib.nets.unet3d import ResidualUNet3D, UNet3DConfig
from training.loop import Phase, PhaseConfig, to_device
from training.precision import Precision, resolve_amp
from training.state import load_state

CUDA = torch.cuda.is_available()


def _tiny_phase(workdir: Path, device: str, amp: str, steps: int = 2):
    """A tiny U-Net phase of ``steps`` steps: ``(phase, net, batch_fn, step_fn)``."""
    torch.manual_seed(0)
    net = ResidualUNet3D(UNet3DConfig(width=2, levels=2, convs=1)).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    phase = Phase(workdir, PhaseConfig("p", epochs=1, steps_per_epoch=steps), {"net": net}, opt, seed=3,
                  device=device, amp=amp)

    def batch(rng: np.random.Generator):
        x = torch.from_numpy(rng.normal(size=(2, 1, 8, 8, 8)).astype(np.float32))
        return x, 0.5 * x

    def step(b):
        x, y = b
        assert x.device == phase.device and y.device == phase.device
        with phase.autocast():
            pred = net(x)
        loss = torch.mean((pred.float() - y) ** 2)
        phase.optimise(loss)
        return {"loss": float(loss.detach())}

    return phase, net, batch, step


def _weights(net: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().float().cpu().flatten() for p in net.parameters()])


def test_resolve_amp_defaults_and_errors() -> None:
    cpu = torch.device("cpu")
    assert resolve_amp("auto", cpu) == "none" and resolve_amp(None, cpu) == "none"
    assert resolve_amp("bf16", cpu) == "bf16" and resolve_amp("NONE", cpu) == "none"
    with pytest.raises(ConfigError, match="--amp fp16 needs a CUDA device"):
        resolve_amp("fp16", cpu)
    with pytest.raises(ConfigError, match="unknown --amp 'fp8'"):
        resolve_amp("fp8", cpu)


def test_to_device_moves_nested_batches() -> None:
    batch = (torch.zeros(1), [torch.ones(2)], {"a": torch.arange(3)}, 5)
    moved = to_device(batch, torch.device("cpu"))
    assert isinstance(moved, tuple) and isinstance(moved[1], list) and moved[3] == 5
    assert torch.equal(moved[2]["a"], torch.arange(3))


def test_bf16_phase_on_cpu_trains_and_saves_plain_state(tmp_path) -> None:
    phase, net, batch, step = _tiny_phase(tmp_path, "cpu", "bf16")
    before = _weights(net)
    history = phase.run(batch, step)
    after = _weights(net)
    assert len(history) == 1 and np.isfinite(history[0]["loss"])
    assert not torch.equal(before, after) and torch.isfinite(after).all()
    info = json.loads((tmp_path / "p" / "state.json").read_text())["info"]
    assert info["scaler"] is None  # bf16 needs no gradient scaler


def test_precision_none_is_the_plain_step() -> None:
    """Mode none: exactly zero_grad, backward, step (the CPU reference path)."""
    torch.manual_seed(1)
    a, b = torch.nn.Linear(3, 1), torch.nn.Linear(3, 1)
    b.load_state_dict(a.state_dict())
    oa, ob = torch.optim.Adam(a.parameters(), 0.1), torch.optim.Adam(b.parameters(), 0.1)
    x = torch.randn(4, 3)
    prec = Precision("none", torch.device("cpu"))
    with prec.autocast():
        loss = a(x).pow(2).mean()
    prec.step(loss, oa)
    loss_b = b(x).pow(2).mean()
    ob.zero_grad(set_to_none=True)
    loss_b.backward()
    ob.step()
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert prec.state_dict() is None


def test_figures_need_matplotlib(monkeypatch) -> None:
    from training.figures import pyplot

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    with pytest.raises(MissingPackageError, match=r"'matplotlib' is not installed \(needed for figures\).*"
                                                  r"superresmoe\[training\]"):
        pyplot()


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_cuda_step_with_amp_and_state_loads_on_cpu(tmp_path, amp) -> None:
    if amp == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    assert resolve_amp("auto", torch.device("cuda")) in ("bf16", "fp16")
    phase, net, batch, step = _tiny_phase(tmp_path, "cuda", amp, steps=3)
    assert next(net.parameters()).device.type == "cuda"
    before = _weights(net)
    phase.run(batch, step)
    after = _weights(net)
    assert torch.isfinite(after).all() and not torch.equal(before, after)
    state = json.loads((tmp_path / "p" / "state.json").read_text())
    if amp == "fp16":
        assert state["info"]["scaler"]["scale"] > 0  # the scaler's state is saved with the phase
    # the saved state is device-independent: it loads into a CPU network and optimiser
    cpu_net = ResidualUNet3D(UNet3DConfig(width=2, levels=2, convs=1))
    cpu_opt = torch.optim.Adam(cpu_net.parameters(), lr=1e-2)
    info = load_state(tmp_path / "p", {"net": cpu_net}, cpu_opt)
    assert info is not None and info["epoch"] == 1
    torch.testing.assert_close(_weights(cpu_net), after, rtol=0, atol=0)
    assert all(s["exp_avg"].device.type == "cpu" for s in cpu_opt.state.values())
    # and a CPU phase resumes the finished CUDA phase (reloads, does not retrain)
    resumed, rnet, rbatch, rstep = _tiny_phase(tmp_path, "cpu", "none", steps=3)
    resumed.run(rbatch, rstep)
    torch.testing.assert_close(_weights(rnet), after, rtol=0, atol=0)
