"""Reaching a Dask cluster for cohort inference, safely.

Two ways (``superresmoe enhance``):

* ``--workers N``: a local cluster of ``N`` worker processes (one thread
  each; torch gets ``cores / N`` threads apiece), its scheduler and workers
  bound to 127.0.0.1 and no dashboard unless ``--dashboard PORT`` (also
  127.0.0.1).  Nothing listens on another interface.
* ``--scheduler ADDRESS`` (``tls://host:8786``, ``tcp://host:8786``) or the
  path of a scheduler file (``dask scheduler --scheduler-file f.json``): an
  existing scheduler, with workers started by you, ``dask-cuda`` or
  ``dask-jobqueue`` (README, "Cohorts on a cluster").

A Dask scheduler runs whatever its clients send on its workers: anyone who
reaches an unsecured scheduler can run code there.  So a scheduler that is
not on this machine's loopback interface is only reached over ``tls://``,
with the certificates named by ``--tls-ca-file`` / ``--tls-cert`` /
``--tls-key`` or Dask's own configuration (``distributed.comm.tls.*``, e.g.
``~/.config/dask/distributed.yaml``); plain ``tcp://`` to another host is
refused unless ``--insecure`` says the network is trusted.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from SuperResMoELib.core.errors import ConfigError, InputError

log = logging.getLogger("superresmoe")

#: The interface a local cluster binds to.
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class ClusterRequest:
    """How to reach Dask (see the module docstring); ``scheduler`` and
    ``workers`` are exclusive, neither means "no Dask: run here"."""

    scheduler: str | None = None
    workers: int | None = None
    dashboard: int | None = None
    tls_ca_file: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    insecure: bool = False

    @property
    def wanted(self) -> bool:
        return self.scheduler is not None or self.workers is not None


def add_cluster_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``enhance`` options that run a cohort on Dask (the single place they are declared)."""
    g = parser.add_argument_group("cohort on Dask (pip install 'superresmoe[cluster]')")
    g.add_argument("--scheduler", metavar="ADDRESS|FILE",
                   help="a running Dask scheduler: tls://host:port, tcp://127.0.0.1:port, or a scheduler file")
    g.add_argument("--workers", type=int, metavar="N",
                   help="start a local cluster of N worker processes on 127.0.0.1")
    g.add_argument("--dashboard", type=int, metavar="PORT",
                   help="with --workers: serve the Dask dashboard on 127.0.0.1:PORT (default: none)")
    g.add_argument("--tls-ca-file", type=Path, help="CA certificate the scheduler's certificate is checked against")
    g.add_argument("--tls-cert", type=Path, help="this client's TLS certificate")
    g.add_argument("--tls-key", type=Path, help="this client's TLS private key")
    g.add_argument("--insecure", action="store_true",
                   help="allow plain tcp:// to a scheduler on another host (anyone who reaches it can run code)")


def request_from_namespace(args: argparse.Namespace) -> ClusterRequest:
    """The :class:`ClusterRequest` of parsed ``enhance`` arguments.

    Raises:
        ConfigError: ``--scheduler`` with ``--workers``, a worker count below 1,
            ``--dashboard`` without ``--workers``.
    """
    req = ClusterRequest(args.scheduler, args.workers, args.dashboard, args.tls_ca_file, args.tls_cert,
                         args.tls_key, args.insecure)
    if req.scheduler is not None and req.workers is not None:
        raise ConfigError("give either --scheduler (an existing cluster) or --workers (a local one), not both")
    if req.workers is not None and req.workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {req.workers}")
    if req.dashboard is not None and req.workers is None:
        raise ConfigError("--dashboard is for the local cluster of --workers")
    return req


def scheduler_address(spec: str) -> str:
    """The address ``spec`` names: itself, or the ``address`` of a scheduler file.

    Raises:
        InputError: an unreadable scheduler file.
    """
    path = Path(spec)
    if path.is_file():
        try:
            return str(json.loads(path.read_text(encoding="utf-8"))["address"])
        except (OSError, ValueError, KeyError) as exc:
            raise InputError(f"scheduler file {path} has no readable 'address' ({exc})") from None
    return spec


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP addresses."""
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(a[4][0]).is_loopback for a in socket.getaddrinfo(host, None))
        except (socket.gaierror, ValueError):
            return False


def check_address(address: str, insecure: bool) -> str:
    """The address's scheme (``tls`` / ``tcp`` / ...), after the security rule
    of the module docstring.

    Raises:
        ConfigError: plain tcp to another host without ``insecure``.
    """
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    scheme, host = parts.scheme, parts.hostname or ""
    if scheme != "tls" and not is_loopback(host) and not insecure:
        raise ConfigError(
            f"refusing to send work to the unencrypted scheduler {address}: anyone who can reach it can run code on "
            "its workers. Use tls://host:port with --tls-ca-file/--tls-cert/--tls-key (or Dask's "
            "distributed.comm.tls configuration), or --insecure on a network you trust"
        )
    return scheme


def security(req: ClusterRequest, scheme: str) -> Any:
    """Dask ``Security`` for a ``tls`` scheduler: the certificates the options
    name, else Dask's configuration; ``None`` for other schemes.

    Raises:
        InputError: a named certificate file is missing; a TLS option for a non-TLS address.
    """
    given = {"tls_ca_file": req.tls_ca_file, "tls_client_cert": req.tls_cert, "tls_client_key": req.tls_key}
    named = {k: v for k, v in given.items() if v is not None}
    if scheme != "tls":
        if named:
            raise ConfigError(f"TLS certificates were given but the scheduler address uses {scheme}://, not tls://")
        return None
    for key, path in named.items():
        if not Path(path).is_file():
            raise InputError(f"--{key.replace('_client', '').replace('_', '-')} {path}: file not found")
    import dask.config
    from distributed import Security

    if named:
        return Security(require_encryption=True, **{k: str(v) for k, v in named.items()})
    configured = {k: dask.config.get(f"distributed.comm.tls.{k}", None) for k in ("ca-file", "client.cert")}
    if not all(configured.values()):
        missing = ", ".join(k for k, v in configured.items() if not v)
        raise ConfigError(
            "a tls:// scheduler needs certificates: give --tls-ca-file, --tls-cert and --tls-key, or set "
            f"distributed.comm.tls.ca-file / client.cert / client.key in Dask's configuration (missing: {missing})"
        )
    return Security(require_encryption=True)  # the distributed.comm.tls.* configuration


def local_cluster_kwargs(req: ClusterRequest, cores: int) -> dict[str, Any]:
    """The ``LocalCluster`` arguments of ``--workers``: loopback only, one
    thread per worker process, torch threads shared out, dashboard off
    unless asked for (then on 127.0.0.1)."""
    from SuperResMoELib.engine.devices import ENV_THREADS

    n = int(req.workers or 1)
    threads = max(1, cores // n)
    return {
        "n_workers": n, "threads_per_worker": 1, "processes": True, "host": LOOPBACK,
        "dashboard_address": None if req.dashboard is None else f"{LOOPBACK}:{req.dashboard}",
        "worker_dashboard_address": None,
        "env": {ENV_THREADS: str(threads), "OMP_NUM_THREADS": str(threads)},
        "silence_logs": logging.ERROR,
    }


def open_client(req: ClusterRequest) -> tuple[Any, Any, str]:
    """``(client, cluster or None, description)`` for the request; close both when done.

    Raises:
        MissingPackageError: Dask is not installed (the ``cluster`` extra).
        ConfigError / InputError: see :func:`check_address` and :func:`security`.
    """
    from SuperResMoELib.core.errors import require_package

    require_package("distributed", "cluster", "cohort inference on Dask", package="dask[distributed]")
    if not logging.getLogger("superresmoe").isEnabledFor(logging.DEBUG):
        logging.getLogger("distributed").setLevel(logging.WARNING)
    from distributed import Client, LocalCluster

    if req.workers is not None:
        from SuperResMoELib.engine.devices import cores_given

        kwargs = local_cluster_kwargs(req, cores_given())
        cluster = LocalCluster(**kwargs)
        client = Client(cluster)
        return client, cluster, f"on a local Dask cluster ({req.workers} worker(s) on {LOOPBACK})"
    assert req.scheduler is not None
    address = scheduler_address(req.scheduler)
    scheme = check_address(address, req.insecure)
    try:
        client = Client(address, security=security(req, scheme), timeout="30s")
    except OSError as exc:
        raise InputError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
    return client, None, f"on the Dask scheduler at {address}"


def close(client: Any, cluster: Any) -> None:
    """Close a client and the local cluster it started (errors while closing are logged, not raised)."""
    for thing in (client, cluster):
        if thing is None:
            continue
        try:
            thing.close()
        except Exception as exc:  # noqa: BLE001 - closing must not hide the run's result
            log.debug("closing %s: %s", type(thing).__name__, exc)


def worker_name() -> str:
    """The address of the Dask worker running this code, else ``local:<pid>``."""
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return f"local:{os.getpid()}"
