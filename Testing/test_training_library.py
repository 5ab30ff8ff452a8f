"""Patch libraries on disk (training/library.py): memory-mapped columns read
on demand, a build killed halfway leaves nothing that is read as a library,
two processes building the same library at once agree, and opening and
drawing from a library costs the process's own memory only the rows it reads
(``RssAnon`` measured in a fresh process; the file pages it maps are page
cache the kernel can reclaim)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from training.library import Column, RowView, cached_library, open_library

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = {"x": Column((4, 8), "float16"), "subject": Column((), "int16")}


def _build(rows: int, skip_last: int = 0):
    def build(writer) -> dict:
        for n in range(rows - skip_last):
            writer.append(x=np.full((4, 8), n, np.float32), subject=n % 3)
        return {"used_subjects": [0, 1, 2]}

    return build


def test_rows_are_memory_mapped_and_read_in_any_order(tmp_path: Path) -> None:
    lib = cached_library(tmp_path / "lib", COLUMNS, 10, _build(10, skip_last=2), "test library")
    assert len(lib) == 8 and lib.meta["used_subjects"] == [0, 1, 2]  # capacity 10, 8 rows written
    assert isinstance(lib["x"], np.memmap) and lib["x"].shape == (8, 4, 8) and lib["x"].dtype == np.float16
    view = lib.rows(np.array([6, 1, 4]))
    assert isinstance(view["x"], RowView) and len(view["x"]) == 3 and view["x"].shape == (3, 4, 8)
    np.testing.assert_array_equal(view["x"][np.array([2, 0, 0])][:, 0, 0], [4, 6, 6])
    np.testing.assert_array_equal(view["x"][1:][:, 0, 0], [1, 4])
    assert float(view["x"][0][0, 0]) == 6 and view["subject"].astype(np.int64).tolist() == [0, 1, 1]
    again = cached_library(tmp_path / "lib", COLUMNS, 10, _build(0), "test library")  # from disk: no rebuild
    np.testing.assert_array_equal(np.asarray(again["x"]), np.asarray(lib["x"]))
    with pytest.raises(ValueError, match="columns"):
        cached_library(tmp_path / "other", COLUMNS, 4, lambda w: w.append(x=np.zeros((4, 8))) or {}, "bad")
    assert open_library(tmp_path / "other") is None and not list(tmp_path.glob(".other*"))


_SLOW_BUILD = textwrap.dedent("""
    import sys, time
    import numpy as np
    from training.library import Column, cached_library

    def build(writer):
        for n in range(int(sys.argv[2])):
            writer.append(x=np.full((4, 8), n, np.float32), subject=n % 3)
            time.sleep(float(sys.argv[3]))
        return {"builder": sys.argv[4]}

    lib = cached_library(sys.argv[1], {"x": Column((4, 8), "float16"), "subject": Column((), "int16")},
                         int(sys.argv[2]), build, "test library")
    print(len(lib), lib.meta["builder"], float(lib["x"][-1, 0, 0]))
""")


def _builder(path: Path, rows: int, pause: float, name: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-c", _SLOW_BUILD, str(path), str(rows), str(pause), name],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_a_killed_build_is_rebuilt_and_concurrent_builds_agree(tmp_path: Path) -> None:
    path = tmp_path / "lib"
    proc = _builder(path, 200, 0.01, "killed")
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".lib.*")) and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert open_library(path) is None  # the half-built folder is never taken for a library
    a, b = _builder(path, 30, 0.005, "a"), _builder(path, 30, 0.005, "b")  # two ranks at once
    outs = [p.communicate(timeout=120) for p in (a, b)]
    assert a.returncode == 0 and b.returncode == 0, outs
    lines = [o[0].split() for o in outs]
    assert all(line[0] == "30" and line[2] == "29.0" for line in lines)
    assert lines[0][1] == lines[1][1]  # both read the one library that won
    assert open_library(path).meta["builder"] == lines[0][1]


_RSS_PROBE = textwrap.dedent("""
    import sys
    import numpy as np
    from training.library import open_library

    def rss_mb():
        d = {}
        for line in open("/proc/self/status"):
            if line.startswith(("RssAnon:", "RssFile:")):
                d[line.split(":")[0]] = int(line.split()[1]) / 1024
        return np.array([d["RssAnon"], d["RssFile"]])

    before = rss_mb()
    lib = open_library(sys.argv[1])
    view = lib.rows(np.arange(len(lib)))
    rng = np.random.default_rng(0)
    for _ in range(20):
        batch = view["x"][rng.integers(0, len(lib), 8)].astype(np.float32)
    grown = rss_mb() - before
    print(f"{grown[0]:.1f} {grown[1]:.1f} {lib['x'].nbytes / 2**20:.1f}")
""")


def test_a_library_larger_than_a_batch_stays_on_disk(tmp_path: Path) -> None:
    cols = {"x": Column((1, 32, 32, 32), "float16"), "subject": Column((), "int16")}

    def build(writer) -> dict:
        block = np.ones((1, 32, 32, 32), np.float32)
        for n in range(1200):  # 75 MiB of float16
            writer.append(x=block * n, subject=n % 4)
        return {}

    cached_library(tmp_path / "big", cols, 1200, build, "big library")
    r = subprocess.run([sys.executable, "-c", _RSS_PROBE, str(tmp_path / "big")], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=120)
    assert r.returncode == 0, r.stderr
    anon, file, size = (float(v) for v in r.stdout.split())
    print(f"\nlibrary {size:.0f} MiB; opening it and drawing 20 batches of 8 grew the process's own memory "
          f"(RssAnon) by {anon:.1f} MiB and its mapped file pages (RssFile: page cache, reclaimable) by {file:.1f} MiB")
    assert size > 70 and anon < size / 8
