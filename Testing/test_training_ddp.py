"""Data-parallel training under a real ``torchrun`` (2 ranks, ``gloo``, CPU):
the world size is reported, one step's averaged gradients equal a
single-process step on the union batch, the trained weights equal a
single-process run's, and a run killed on one rank resumes to the same weights."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]

#: A phase of a tiny conv net on deterministic synthetic batches of 8 (4 per rank).
SCRIPT = textwrap.dedent('''
    import os, sys
    from pathlib import Path
    import numpy as np, torch
    from safetensors.torch import save_file
    from training import distributed
    from training.loop import Phase, PhaseConfig

    work = Path(sys.argv[1])
    ctx, dev = distributed.setup("cpu")
    print(f"rank {ctx.rank} world {ctx.world} backend {ctx.backend or 'none'}", flush=True)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv3d(4, 1, 3, padding=1))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    phase = Phase(work, PhaseConfig("p", 2, 4, save_every_steps=2), {"net": net}, opt, seed=3, device=dev)
    kill_at = int(os.environ.get("KILL_AT", "-1"))
    count = {"n": 0}

    def batch(rng):
        x = torch.from_numpy(rng.normal(size=(8, 1, 6, 6, 6)).astype(np.float32))
        return x, torch.tanh(2 * x)

    def step(b):
        x, y = b
        if count["n"] == 0:
            print(f"rank {ctx.rank} batch {x.shape[0]}", flush=True)
        loss = torch.nn.functional.mse_loss(net(x), y)
        phase.optimise(loss)
        if count["n"] == 0 and ctx.is_main and not (work / "grads.safetensors").exists():
            save_file({k: p.grad.detach().clone() for k, p in net.named_parameters()}, str(work / "grads.safetensors"))
        count["n"] += 1
        if count["n"] == kill_at and ctx.rank == ctx.world - 1:
            os._exit(17)  # a rank dies mid-phase
        return {"loss": float(loss)}

    phase.run(batch, step)
    if ctx.is_main:
        save_file({k: v.detach().contiguous() for k, v in net.state_dict().items()}, str(work / "final.safetensors"))
    distributed.shutdown()
''')


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


#: What a rank prints when a C++ thread is still joinable as its process ends.
TEARDOWN_ABORT = "terminate called without an active exception"


def _run(script: Path, work: Path, ranks: int, **extra: str) -> subprocess.CompletedProcess:
    work.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(script), str(work)] if ranks == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}",
         str(script), str(work)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=ROOT, env={**_env(), **extra})
    if ranks > 1 and run.returncode != 0 and TEARDOWN_ABORT in run.stderr:
        # a gloo worker thread left joinable at process teardown (seen once in a loaded parallel suite;
        # torch's, not ours): run once more, and every assertion applies to that run
        print(f"\nrank aborted at teardown ({TEARDOWN_ABORT!r}); ran again")
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=ROOT, env={**_env(), **extra})
    return run


def _close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], tol: float, what: str) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=tol, atol=tol, msg=k)
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    print(f"\n{what}: max |difference| {worst:.3g} over {len(a)} tensors (tolerance {tol:g})")


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    base = tmp_path_factory.mktemp("ddp")
    script = base / "phase.py"
    script.write_text(SCRIPT)
    r = _run(script, base / "single", 1)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "rank 0 world 1 backend none" in r.stdout and "rank 0 batch 8" in r.stdout
    return script, base


def test_two_ranks_equal_one_process_on_the_union_batch(single) -> None:
    script, base = single
    r = _run(script, base / "ddp", 2)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "rank 0 world 2 backend gloo" in r.stdout and "rank 1 world 2 backend gloo" in r.stdout
    assert "rank 0 batch 4" in r.stdout and "rank 1 batch 4" in r.stdout  # each rank its half of the batch
    _close(load_file(str(base / "ddp" / "grads.safetensors")), load_file(str(base / "single" / "grads.safetensors")),
           1e-6, "two ranks vs one process, gradients of one step")  # the mean of the ranks' = the union batch's
    _close(load_file(str(base / "ddp" / "final.safetensors")), load_file(str(base / "single" / "final.safetensors")),
           1e-5, "two ranks vs one process, weights after 8 Adam steps")
    assert (base / "ddp" / "p" / "done.json").exists() and (base / "ddp" / "p" / "log.csv").exists()


def test_a_killed_rank_resumes_to_the_same_weights(single) -> None:
    script, base = single
    work = base / "killed"
    r = _run(script, work, 2, KILL_AT="5")
    assert r.returncode != 0 and not (work / "final.safetensors").exists()
    assert (work / "p" / "state.json").exists()  # the state saved at step 4
    again = _run(script, work, 2)
    assert again.returncode == 0, again.stderr[-3000:]
    _close(load_file(str(work / "final.safetensors")), load_file(str(base / "single" / "final.safetensors")), 1e-5,
           "a rank killed at step 5, resumed, vs one process, final weights")


@pytest.mark.slow  # 24 s; the two-rank gradient, weight and kill-resume checks above run in CI
def test_two_rank_remix_training_transcript(tmp_path) -> None:
    """``torchrun --nproc_per_node 2 -m training remix`` on the tiny config: both
    ranks train every phase (batch 2 = 1 per rank), rank 0 logs and exports, and
    the exported experts equal a single-process run's."""
    import json

    from SuperResMoELib.checkpoints.store import load_checkpoint

    from test_training_remix import TINY

    (tmp_path / "tiny.json").write_text(json.dumps(TINY))
    env = {**_env(), "SUPERRESMOE_CACHE": str(tmp_path / "cache")}
    args = ["-m", "training", "remix", "--config", str(tmp_path / "tiny.json"), "--progress", "none", "--no-single"]
    one = subprocess.run([sys.executable, *args, "--workdir", str(tmp_path / "one")], capture_output=True, text=True,
                         timeout=600, cwd=ROOT, env=env)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          *args, "--workdir", str(tmp_path / "two")], capture_output=True, text=True,
                         timeout=600, cwd=ROOT, env=env)
    assert two.returncode == 0, "\n".join(l for l in two.stderr.splitlines() if not l.startswith("W1"))[-4000:]
    assert "distributed training: 2 ranks, backend gloo" in two.stderr and "(2 ranks)" in two.stdout
    assert two.stdout.count("REMIx: done") == 1  # rank 0 alone reports
    a = load_checkpoint(tmp_path / "one" / "checkpoints" / "remix_t1.safetensors").tensors
    b = load_checkpoint(tmp_path / "two" / "checkpoints" / "remix_t1.safetensors").tensors
    for k in a:
        torch.testing.assert_close(a[k].float(), b[k].float(), rtol=2e-3, atol=2e-3, msg=k)  # fp16 export


@pytest.mark.slow
@pytest.mark.parametrize("command", ["ssmoe", "moediff"])
def test_two_rank_ssmoe_and_moediff_trainings_finish_and_export(tmp_path, command) -> None:
    """The other two trainers under ``torchrun`` with 2 ``gloo`` ranks on their
    tiny configs: every phase runs, rank 0 exports loadable checkpoints."""
    import json

    from SuperResMoELib.checkpoints.store import load_checkpoint

    from conftest import MOEDIFF_TINY
    from test_training_ssmoe import TINY as SSMOE_TINY

    config = {"ssmoe": SSMOE_TINY, "moediff": MOEDIFF_TINY}[command]
    (tmp_path / "tiny.json").write_text(json.dumps(config))
    extra = ["--task", "aniso", "--k", "2", "--labeler", "quantile"] if command == "ssmoe" else []
    env = {**_env(), "SUPERRESMOE_CACHE": str(tmp_path / "cache")}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
                          "training", command, "--config", str(tmp_path / "tiny.json"), "--workdir",
                          str(tmp_path / "run"), "--progress", "none", *extra], capture_output=True, text=True,
                         timeout=900, cwd=ROOT, env=env)
    assert run.returncode == 0, "\n".join(l for l in run.stderr.splitlines() if not l.startswith("W1"))[-4000:]
    assert "distributed training: 2 ranks, backend gloo" in run.stderr and "(2 ranks)" in run.stdout
    exported = sorted((tmp_path / "run" / "checkpoints").glob("*.safetensors"))
    assert exported, run.stdout[-1000:]
    for path in exported:
        assert load_checkpoint(path).tensors
