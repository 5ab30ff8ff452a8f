"""Cohort inference on a real Dask cluster: a ``dask scheduler`` and two
``dask worker`` processes on 127.0.0.1 started here, ``superresmoe enhance
--scheduler`` run as a subprocess, one worker killed mid-run.

Checks: every output present and valid (readable, on the SR grid, its
sidecar's sha256), nothing written twice (an output's inode never changes
once it appears), a corrupt input reported while the rest finish (exit code
7), a file whose output cannot be written retried and reported, each worker
loading the checkpoint once, and a second run skipping
everything but the one file that failed before.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("distributed")

from SuperResMoELib import io  # noqa: E402
from SuperResMoELib.app.provenance import read_sidecar  # noqa: E402
from SuperResMoELib.core.volume import Volume  # noqa: E402
from SuperResMoELib.io.hashing import sha256_file  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
N_FILES = 10


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env.update(SUPERRESMOE_THREADS="1", OMP_NUM_THREADS="1")
    return env


def _start(args: list[str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as f:
        return subprocess.Popen([sys.executable, "-m", *args], stdout=f, stderr=subprocess.STDOUT, env=_env(),
                                start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=30)


@pytest.fixture
def dask_cluster(tmp_path: Path):
    """A scheduler and two single-threaded workers (each in its own process group) on 127.0.0.1."""
    sched_file = tmp_path / "scheduler.json"
    procs = [_start(["distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                     "--scheduler-file", str(sched_file)], tmp_path / "scheduler.log")]
    try:
        deadline = time.monotonic() + 60
        while not sched_file.is_file() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert sched_file.is_file(), (tmp_path / "scheduler.log").read_text()
        for name in ("wA", "wB"):
            procs.append(_start(["distributed.cli.dask_worker", "--scheduler-file", str(sched_file), "--nworkers", "1",
                                 "--nthreads", "1", "--host", "127.0.0.1", "--no-dashboard", "--name", name],
                                tmp_path / f"{name}.log"))
        from distributed import Client

        with Client(scheduler_file=str(sched_file), timeout="60s") as c:
            c.wait_for_workers(2, timeout=90)
        yield sched_file, procs[1], procs[2]
    finally:
        for p in procs:
            _stop(p)


def _inputs(folder: Path) -> list[Path]:
    folder.mkdir()
    files = []
    for n in range(N_FILES):
        arr = (np.random.default_rng(n).random((14, 40, 40)) * 400 + 100).astype(np.float32)  # (K, J, I)
        path = folder / f"s{n:02d}.nii.gz"
        io.write_volume(Volume(arr, np.diag([1.0, 1.0, 3.0, 1.0])), path)
        files.append(path)
    (folder / "zz_corrupt.nii.gz").write_bytes(b"not a volume")
    return files


def _enhance(src: Path, out: Path, sched_file: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "SuperResMoELib", "enhance", "-i", str(src), "-o", str(out), "--method", "remix",
           "--scheduler", str(sched_file), "--progress", "json"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=ROOT)


def _result(stdout: str) -> dict:
    last = json.loads(stdout.strip().splitlines()[-1])
    assert last["stage"] == "done", last
    return last["result"]


class _Watcher(threading.Thread):
    """Polls the output folder; records each output's first inode and every change."""

    def __init__(self, folder: Path) -> None:
        super().__init__(daemon=True)
        self.folder, self.seen, self.rewritten = folder, {}, []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for p in list(self.folder.glob("s*_remix.nii.gz")) if self.folder.is_dir() else []:
                try:
                    ino = p.stat().st_ino
                except FileNotFoundError:
                    continue
                if self.seen.setdefault(p.name, ino) != ino:
                    self.rewritten.append(p.name)
                    self.seen[p.name] = ino
            time.sleep(0.01)


def test_killed_worker_loses_nothing_and_a_rerun_skips_all(tmp_path: Path, dask_cluster) -> None:
    sched_file, worker_a, _ = dask_cluster
    inputs = _inputs(tmp_path / "in")
    out = tmp_path / "out"
    blocked = out / "s09_remix.nii.gz"
    (blocked / "in-the-way").mkdir(parents=True)  # a folder where s09's output goes: writing it fails each time
    watcher = _Watcher(out)
    watcher.start()
    from distributed import Client

    proc = _enhance(tmp_path / "in", out, sched_file)
    with Client(scheduler_file=str(sched_file), timeout="60s") as c:
        names = {w["name"]: a for a, w in c.scheduler_info(n_workers=-1)["workers"].items()}
        deadline = time.monotonic() + 120
        on_a: list[str] = []
        while time.monotonic() < deadline and proc.poll() is None:
            on_a = [str(k) for k in c.processing().get(names["wA"], ())]
            if on_a and any(out.glob("s*_remix.json")):
                break
            time.sleep(0.02)
        os.killpg(worker_a.pid, signal.SIGKILL)  # worker A and its nanny, while it holds tasks
    killed_after = len(list(out.glob("s*_remix.json")))
    stdout, stderr = proc.communicate(timeout=240)
    watcher.stop.set()
    watcher.join()
    assert proc.returncode == 7, stderr  # PARTIAL: the corrupt file failed, the others finished
    res = _result(stdout)
    c = res["counts"]
    print(f"\nkilled worker A after {killed_after} output(s); counts {c}; exit code {proc.returncode}")
    assert c["total"] == N_FILES + 1 and c["failed"] == 2 and c["done"] + c["skipped"] == N_FILES - 1
    assert killed_after < N_FILES and on_a, "the worker was killed after the run had finished"
    taken_over = {Path(r["input"]).name: r["worker"] for r in res["records"]
                  if any(Path(r["input"]).name in k for k in on_a)}
    print(f"tasks on worker A when it was killed: {on_a}; finished by: {taken_over}")
    assert taken_over and set(taken_over.values()) == {names["wB"]}
    errors = {Path(f["input"]).name: f["error"] for f in res["failures"]}
    assert sorted(errors) == ["s09.nii.gz", "zz_corrupt.nii.gz"] and "zz_corrupt.nii.gz" in stderr
    assert "IsADirectoryError" in errors["s09.nii.gz"] and "after 3 attempt(s)" in errors["s09.nii.gz"]
    assert "cannot read" in errors["zz_corrupt.nii.gz"]  # an unusable input: reported at once, not retried
    assert not watcher.rewritten, f"written twice: {watcher.rewritten}"
    for path in inputs[:-1]:
        sr_path = out / f"{path.name[:3]}_remix.nii.gz"
        sr = io.read_volume(sr_path)
        assert sr.spatial_shape == (42, 40, 40) and np.isfinite(sr.array).all()
        side = read_sidecar(sr_path)
        assert side is not None and side["output"]["sha256"] == sha256_file(sr_path)
        assert side["request"]["input_sha256"] == sha256_file(path)
        assert side["checkpoint"]["sha256"] and side["request"]["method"] == "remix"
    assert not [p.name for p in out.iterdir() if ".tmp" in p.name]  # a killed write leaves nothing behind
    assert res["checkpoint_loads"] and set(res["checkpoint_loads"].values()) == {1}  # once per worker

    stamps = {p.name: p.stat().st_ino for p in out.iterdir()}
    shutil.rmtree(blocked)
    proc = _enhance(tmp_path / "in", out, sched_file)  # only worker B is left
    stdout, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 7, stderr
    c = _result(stdout)["counts"]
    print(f"second run (the folder in s09's way removed): counts {c}")
    assert c == {"total": N_FILES + 1, "done": 1, "skipped": N_FILES - 1, "failed": 1}
    now = {p.name: p.stat().st_ino for p in out.iterdir()}
    assert {k: v for k, v in now.items() if not k.startswith("s09")} == \
        {k: v for k, v in stamps.items() if not k.startswith("s09")}  # nothing done was rewritten
    assert io.read_volume(blocked).spatial_shape == (42, 40, 40)
