"""Who can reach a cohort run's cluster: the local cluster listens on
127.0.0.1 only (checked on the live sockets), an unencrypted scheduler on
another host is refused, and a TLS scheduler (certificates made here with
openssl) is reached with ``--tls-*`` and not without them."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("distributed")
psutil = pytest.importorskip("psutil")

from SuperResMoELib import io  # noqa: E402
from SuperResMoELib.app import cluster  # noqa: E402
from SuperResMoELib.core.errors import ConfigError, InputError  # noqa: E402
from SuperResMoELib.core.volume import Volume  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env.update(SUPERRESMOE_THREADS="1", OMP_NUM_THREADS="1")
    return env


def _listening(pids: list[int]) -> list[tuple[int, str, int]]:
    socks = []
    for pid in pids:
        for conn in psutil.Process(pid).net_connections(kind="inet"):
            if conn.status == psutil.CONN_LISTEN:
                socks.append((pid, conn.laddr.ip, conn.laddr.port))
    return socks


def test_local_cluster_listens_on_loopback_only() -> None:
    req = cluster.ClusterRequest(workers=2)
    client, local, where = cluster.open_client(req)
    try:
        client.wait_for_workers(2, timeout=60)
        info = client.scheduler_info(n_workers=-1)
        me = psutil.Process()
        pids = [me.pid] + [p.pid for p in me.children(recursive=True)]
        socks = _listening(pids)
        print(f"\n{where}: listening sockets {socks}")
        assert info["address"].startswith("tcp://127.0.0.1:")
        assert len(info["workers"]) == 2 and all(a.startswith("tcp://127.0.0.1:") for a in info["workers"])
        assert len(socks) >= 3  # the scheduler, and each worker and its nanny
        assert {ip for _, ip, _ in socks} == {"127.0.0.1"}, socks
        threads = client.run(lambda: os.environ.get("SUPERRESMOE_THREADS"))
        assert set(threads.values()) == {str(max(1, len(os.sched_getaffinity(0)) // 2))}
    finally:
        cluster.close(client, local)


@pytest.mark.parametrize("address, insecure, scheme", [
    ("tcp://127.0.0.1:8786", False, "tcp"), ("localhost:8786", False, "tcp"),
    ("tls://192.0.2.7:8786", False, "tls"), ("tcp://192.0.2.7:8786", True, "tcp"),
])
def test_allowed_scheduler_addresses(address: str, insecure: bool, scheme: str) -> None:
    assert cluster.check_address(address, insecure) == scheme


def test_unencrypted_remote_scheduler_is_refused_before_connecting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="anyone who can reach it can run code"):
        cluster.check_address("tcp://192.0.2.7:8786", insecure=False)
    with pytest.raises(ConfigError, match="tls://"):
        cluster.security(cluster.ClusterRequest(tls_cert=tmp_path / "c.pem"), "tcp")
    with pytest.raises(InputError, match="file not found"):
        cluster.security(cluster.ClusterRequest(tls_ca_file=tmp_path / "missing.pem"), "tls")
    with pytest.raises(ConfigError, match="not both"):
        cluster.request_from_namespace(_ns(scheduler="tcp://127.0.0.1:1", workers=2))
    src = tmp_path / "a.nii.gz"
    io.write_volume(Volume(np.ones((4, 5, 6), np.float32), np.eye(4)), src)
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "SuperResMoELib", "enhance", "-i", str(src), "-o", str(tmp_path / "o"),
                        "--scheduler", "tcp://192.0.2.7:8786", "--progress", "none"],
                       capture_output=True, text=True, env=_env(), timeout=120)
    assert r.returncode == 8 and "--insecure" in r.stderr and "tls://" in r.stderr, r.stderr
    assert time.monotonic() - t0 < 60 and not (tmp_path / "o").exists()


def _ns(**kw):
    import argparse

    base = dict(scheduler=None, workers=None, dashboard=None, tls_ca_file=None, tls_cert=None, tls_key=None,
                insecure=False)
    return argparse.Namespace(**{**base, **kw})


def _certificates(folder: Path) -> dict[str, Path]:
    """A CA and one certificate it signs for 127.0.0.1 (server and client use)."""
    folder.mkdir()
    ca_key, ca, key, csr, cert = (folder / n for n in ("ca.key", "ca.pem", "node.key", "node.csr", "node.pem"))
    ext = folder / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n")

    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca), "-days", "2",
        "-subj", "/CN=superresmoe-test-ca")
    ssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    ssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial", "-out", str(cert),
        "-days", "2", "-extfile", str(ext))
    return {"ca": ca, "cert": cert, "key": key}


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_tls_scheduler_needs_the_certificates(tmp_path: Path) -> None:
    certs = _certificates(tmp_path / "certs")
    tls = ["--tls-ca-file", str(certs["ca"]), "--tls-cert", str(certs["cert"]), "--tls-key", str(certs["key"])]
    sched_file = tmp_path / "scheduler.json"
    procs = []
    try:
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_scheduler", "--protocol", "tls", "--host", "127.0.0.1",
             "--port", "0", "--no-dashboard", "--scheduler-file", str(sched_file), *tls],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(), start_new_session=True))
        deadline = time.monotonic() + 60
        while not sched_file.is_file() and time.monotonic() < deadline:
            time.sleep(0.2)
        address = json.loads(sched_file.read_text())["address"]
        assert address.startswith("tls://127.0.0.1:")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nworkers", "1", "--nthreads", "1",
             "--host", "127.0.0.1", "--no-dashboard", *tls],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(), start_new_session=True))
        src = tmp_path / "in"
        src.mkdir()
        for n in range(2):
            arr = np.random.default_rng(n).random((6, 8, 8)).astype(np.float32) * 100
            io.write_volume(Volume(arr, np.eye(4)), src / f"t{n}.nii.gz")
        cmd = [sys.executable, "-m", "SuperResMoELib", "enhance", "-i", str(src), "-o", str(tmp_path / "out"),
               "--scheduler", address, "--progress", "none"]
        r = subprocess.run(cmd + tls, capture_output=True, text=True, env=_env(), timeout=180)
        assert r.returncode == 0, r.stderr
        assert f"2 input(s) on the Dask scheduler at {address}: 2 done" in r.stdout
        names = sorted(p.name for p in (tmp_path / "out").iterdir())
        assert names == ["t0_cubic.json", "t0_cubic.nii.gz", "t1_cubic.json", "t1_cubic.nii.gz"]
        r = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=180)  # no certificates
        assert r.returncode == 8 and "needs certificates" in r.stderr and "2 done" not in r.stdout
        print(f"\nwithout certificates: exit {r.returncode}: {r.stderr.strip().splitlines()[-1]}")
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(timeout=30)
