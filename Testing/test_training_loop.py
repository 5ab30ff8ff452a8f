"""Resumable training: a run killed at any point ends with the same weights."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import torch

from training.state import load_state, save_state

SCRIPT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import numpy as np, torch
    from training.loop import Phase, PhaseConfig
    from safetensors.torch import save_file
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.2), torch.nn.Linear(8, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    w_true = torch.tensor([[1.0, -2.0, 0.5, 3.0]])
    def batch(rng):
        x = torch.from_numpy(rng.normal(size=(16, 4)).astype(np.float32))
        return x, x @ w_true.T
    def step(b):
        x, y = b
        loss = torch.mean((model(x) - y) ** 2)
        opt.zero_grad(); loss.backward(); opt.step()
        if float(sys.argv[2]) > 0:
            time.sleep(float(sys.argv[2]))
        return {"loss": float(loss)}
    phase = Phase(Path(sys.argv[1]), PhaseConfig("p", epochs=3, steps_per_epoch=20, save_every_steps=3),
                  {"model": model}, opt, seed=7)
    hist = phase.run(batch, step)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(Path(sys.argv[1]) / "final.safetensors"))
    print(len(hist))
    """
)


def _run(workdir: Path, delay: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", SCRIPT, str(workdir), str(delay)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_kill_and_resume_gives_identical_weights(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    ref = _run(tmp_path / "ref", 0.0)
    assert ref.wait(120) == 0, ref.stderr.read()
    killed_dir = tmp_path / "killed"
    state_file = killed_dir / "p" / "state.json"
    seen = None
    for extra in (0.05, 0.13):  # kill twice, after the state moved on, at different moments
        p = _run(killed_dir, 0.02)
        deadline = time.time() + 60
        while time.time() < deadline:
            if state_file.exists() and state_file.read_text() != seen:
                break
            time.sleep(0.02)
        time.sleep(extra)
        p.send_signal(signal.SIGKILL)
        p.wait(30)
        seen = state_file.read_text()
    state = json.loads((killed_dir / "p" / "state.json").read_text())
    assert state["info"]["epoch"] < 3  # it really was interrupted
    done = _run(killed_dir, 0.0)
    assert done.wait(120) == 0, done.stderr.read()
    a = load_file(str(tmp_path / "ref" / "final.safetensors"))
    b = load_file(str(killed_dir / "final.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    log = (killed_dir / "p" / "log.csv").read_text().splitlines()
    assert log[0].startswith("epoch,loss") and len(log) == 4
    # a finished phase is not retrained
    again = _run(killed_dir, 0.0)
    assert again.wait(60) == 0 and again.stdout.read().strip() == "3"


def test_state_round_trip_without_pickle(tmp_path: Path) -> None:
    torch.manual_seed(1)
    m = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3), torch.nn.BatchNorm3d(2))
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    loss = m(torch.randn(2, 1, 5, 5, 5)).pow(2).mean()
    loss.backward()
    opt.step()
    save_state(tmp_path, {"m": m}, opt, {"epoch": 3, "hist": [1.5]})
    m2 = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3), torch.nn.BatchNorm3d(2))
    opt2 = torch.optim.Adam(m2.parameters(), lr=1e-3)
    info = load_state(tmp_path, {"m": m2}, opt2)
    assert info == {"epoch": 3, "hist": [1.5]}
    for (k, v), (_, w) in zip(m.state_dict().items(), m2.state_dict().items()):
        torch.testing.assert_close(v, w)
    s1, s2 = opt.state_dict()["state"], opt2.state_dict()["state"]
    torch.testing.assert_close(s1[0]["exp_avg"], s2[0]["exp_avg"])
    assert b"pickle" not in (tmp_path / "state.safetensors").read_bytes()[:200]
    # a corrupt weights file is ignored rather than half-loaded
    raw = bytearray((tmp_path / "state.safetensors").read_bytes())
    raw[-1] ^= 0xFF
    (tmp_path / "state.safetensors").write_bytes(bytes(raw))
    torch.manual_seed(2)  # a fresh module whose weights differ from the saved ones
    m3 = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3), torch.nn.BatchNorm3d(2))
    opt3 = torch.optim.Adam(m3.parameters(), lr=1e-3)
    fresh = {k: v.clone() for k, v in m3.state_dict().items()}
    assert not torch.equal(fresh["0.weight"], m.state_dict()["0.weight"])
    assert load_state(tmp_path, {"m": m3}, opt3) is None
    for k, v in m3.state_dict().items():  # nothing of the corrupt state was loaded
        torch.testing.assert_close(v, fresh[k], rtol=0, atol=0)
    assert opt3.state_dict()["state"] == {}
    assert os.path.exists(tmp_path / "state.json")


def _away_from_target_phase(tmp_path: Path, select: str, validate_start: bool = False):
    """A phase whose training moves a weight away from the validation target:
    the first epoch validates best, so ``select="best"`` must keep it."""
    from training.loop import Phase, PhaseConfig

    torch.manual_seed(0)
    net = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        net.weight.fill_(1.0)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    phase = Phase(tmp_path, PhaseConfig("p", 3, 2, select=select, validate_start=validate_start), {"net": net}, opt,
                  seed=0)
    seen: dict[int, float] = {}

    def step(batch) -> dict[str, float]:
        loss = -net(batch).mean()  # pushes the weight up, away from the target 0.5
        phase.optimise(loss)
        return {"loss": float(loss.detach())}

    def validate(epoch: int) -> dict[str, float]:
        w = float(net.weight)
        seen[epoch] = w
        return {"val_mse": (w - 0.5) ** 2}

    return phase, net, step, validate, seen


def test_select_best_keeps_the_best_epoch_and_reloads_it(tmp_path: Path) -> None:
    phase, net, step, validate, seen = _away_from_target_phase(tmp_path, "best")
    history = phase.run(lambda rng: torch.ones(4, 1), step, validate)
    assert [r["epoch"] for r in history] == [1, 2, 3] and seen[1] < seen[2] < seen[3]
    assert float(net.weight) == seen[1]  # the best epoch, not the last
    assert (tmp_path / "p" / "best.safetensors").exists()
    again, net2, step2, validate2, _ = _away_from_target_phase(tmp_path, "best")
    again.run(lambda rng: torch.ones(4, 1), step2, validate2)  # finished: only reloads
    assert float(net2.weight) == seen[1]

    last, net3, step3, validate3, seen3 = _away_from_target_phase(tmp_path / "last", "last")
    last.run(lambda rng: torch.ones(4, 1), step3, validate3)
    assert float(net3.weight) == seen3[3]


def test_select_best_needs_a_validation(tmp_path: Path) -> None:
    import pytest

    phase, _, step, _, _ = _away_from_target_phase(tmp_path, "best")
    with pytest.raises(ValueError, match="needs a validation"):
        phase.run(lambda rng: torch.ones(4, 1), step, None)


def test_validate_start_keeps_the_start_when_no_epoch_beats_it(tmp_path: Path) -> None:
    """Training only moves away from the target: with ``validate_start`` the
    starting weight (validated as epoch 0) is kept, and the log's epoch-0 row
    has the validation but no losses; a rerun only reloads it."""
    phase, net, step, validate, seen = _away_from_target_phase(tmp_path, "best", validate_start=True)
    history = phase.run(lambda rng: torch.ones(4, 1), step, validate)
    assert [r["epoch"] for r in history] == [0, 1, 2, 3] and seen[0] == 1.0 < seen[1]
    assert float(net.weight) == 1.0
    rows = (tmp_path / "p" / "log.csv").read_text().splitlines()
    assert rows[0].split(",")[:2] == ["epoch", "val_mse"] and rows[1].startswith("0,0.25,")
    assert rows[1].endswith(",,") and len(rows) == 5
    again, net2, step2, validate2, _ = _away_from_target_phase(tmp_path, "best", validate_start=True)
    again.run(lambda rng: torch.ones(4, 1), step2, validate2)
    assert float(net2.weight) == 1.0


def test_validate_start_needs_select_best(tmp_path: Path) -> None:
    import pytest

    from SuperResMoELib.core.errors import ConfigError
    from training.config import PhaseSpec

    phase, _, step, validate, _ = _away_from_target_phase(tmp_path, "last", validate_start=True)
    with pytest.raises(ValueError, match="validate_start needs select='best'"):
        phase.run(lambda rng: torch.ones(4, 1), step, validate)
    with pytest.raises(ConfigError, match='validate_start needs select "best"'):
        PhaseSpec(epochs=1, steps_per_epoch=1, lr=0.1, validate_start=True)
