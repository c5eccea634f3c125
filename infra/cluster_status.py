"""``python -m infra.cluster status`` (``make cluster-status``): is every part of the cluster
healthy?

Four sections, each from the source of truth, never from what the supervisor believes:

- **processes**: each PID of ``state.json`` is alive (and still the process it started) and
  answers its probe: ``/healthz`` of a NATS node's monitor port, of a gateway (and of the
  balancer); ``/metrics`` of a worker; the CQL or S3 port accepting a connection;
- **partitions**: the ``leases`` KV bucket (``runtime.partitions``): which router and which
  storage worker holds each partition; a partition without both is unhealthy;
- **streams**: each JetStream stream's leader and whether its replicas are current (the
  ``MSGS_<p>`` partition streams and the KV buckets' streams among them);
- **cassandra**: the ring as the driver sees it (``system.local`` and ``system.peers``):
  each node's address, token and whether it is up.

The operator's credential (``admin``: read-only JetStream and the leases bucket) reads NATS.
"""

import asyncio
import socket
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Final

import nats.errors
from cassandra import OperationTimedOut, ProtocolVersion, Unavailable
from cassandra.cluster import Cluster, NoHostAvailable, Session
from cassandra.pool import Host
from nats.js.errors import NotFoundError

from infra.cluster import ProcessEntry, State, alive, read_state
from infra.nats_auth import NatsCredentials
from infra.processes import http_ok
from runtime.partitions import lease_key
from schemas.buckets import LEASES
from schemas.subjects import msgs_stream

PROBE_TIMEOUT_S: Final = 2.0
NATS_TIMEOUT_S: Final = 5.0
CQL_TIMEOUT_S: Final = 10.0
CQL_ATTEMPTS: Final = 5
CQL_RETRY_S: Final = 1.0
#: The lease names of the partitioned services (``PartitionOwnership(service=...)``).
LEASE_SERVICES: Final = ("router", "storage")


def probe(entry: ProcessEntry) -> str:
    """'ok', or what is wrong with one process."""
    if not alive(entry.pid, entry.started):
        return "not running"
    url = urllib.parse.urlsplit(entry.health)
    if url.scheme == "tcp":
        try:
            with socket.create_connection((url.hostname, url.port), timeout=PROBE_TIMEOUT_S):
                return "ok"
        except OSError as exc:
            return f"no answer on {url.netloc} ({exc.strerror or exc})"
    return "ok" if http_ok(entry.health, PROBE_TIMEOUT_S) else f"{entry.health} not 200"


async def nats_sections(state: State) -> tuple[list[str], list[str], bool]:
    """The partitions and streams sections, and whether they are healthy."""
    credentials = NatsCredentials(Path(state.credentials))
    try:
        nc = await credentials.connect(state.nats_urls, "admin",
                                       connect_timeout=NATS_TIMEOUT_S, max_reconnect_attempts=0,
                                       allow_reconnect=False)
    except (OSError, nats.errors.Error) as exc:
        return [f"  cannot connect to NATS: {exc!r}"], [], False
    healthy = True
    try:
        js = nc.jetstream(timeout=NATS_TIMEOUT_S)
        partitions = [f"  {'partition':<10} {'router':<32} storage worker"]
        leases = await js.key_value(LEASES.name)
        for partition in range(state.partitions):
            holders = []
            for service in LEASE_SERVICES:
                try:
                    entry = await leases.get(lease_key(service, partition))
                    holders.append((entry.value or b"").decode() or "-")
                except NotFoundError:
                    holders.append("-")
            if "-" in holders:
                healthy = False
            partitions.append(f"  {partition:<10} {holders[0]:<32} {holders[1]}")
        streams = [f"  {'stream':<26} {'leader':<10} replicas"]
        names = sorted(await js.streams_info(), key=lambda info: info.config.name or "")
        expected = {msgs_stream(p) for p in range(state.partitions)}
        for info in names:
            name = info.config.name or "?"
            expected.discard(name)
            cluster = info.cluster
            leader = cluster.leader if cluster is not None and cluster.leader else None
            peers = cluster.replicas or [] if cluster is not None else []
            lagging = [p.name for p in peers if not p.current]
            if leader is None or lagging:
                healthy = False
            replicas = ", ".join(f"{p.name}{'' if p.current else ' (behind)'}" for p in peers)
            streams.append(f"  {name:<26} {leader or 'NO LEADER':<10} {replicas or '-'}")
        for name in sorted(expected):
            healthy = False
            streams.append(f"  {name:<26} MISSING")
    except (OSError, nats.errors.Error) as exc:
        return [f"  NATS request failed: {exc!r}"], [], False
    finally:
        await nc.close()
    return partitions, streams, healthy


def ring(state: State) -> tuple[list[str], bool]:
    """The Cassandra section and whether every node is up: the driver's view of the ring
    (from ``system.peers``), and each node's own ``system.local`` (its tokens), asked of that
    node."""
    points = [point.rpartition(":") for point in state.cassandra_contact_points]
    cluster = Cluster(contact_points=[host for host, _, _ in points], port=int(points[0][2]),
                      protocol_version=ProtocolVersion.V5, connect_timeout=CQL_TIMEOUT_S,
                      control_connection_timeout=CQL_TIMEOUT_S)
    try:
        session = cluster.connect()
        hosts = sorted(cluster.metadata.all_hosts(), key=lambda h: str(h.address))
        lines = [f"  {'node':<12} {'token':<22} state"]
        healthy = len(hosts) == len(points)
        for host in hosts:
            token = _local_tokens(session, host)
            up = bool(host.is_up) and token != "?"
            healthy = healthy and up
            lines.append(f"  {host.address:<12} {token:<22} {'up' if up else 'DOWN'}")
        return lines, healthy
    except NoHostAvailable as exc:
        return [f"  no Cassandra node answers: {exc}"], False
    finally:
        cluster.shutdown()


def _local_tokens(session: Session, host: Host) -> str:
    """The tokens ``host`` says it owns, or '?' when it does not answer (the driver opens its
    pools in the background: a host may need a moment after ``connect``)."""
    for _ in range(CQL_ATTEMPTS):
        try:
            row = session.execute("SELECT tokens FROM system.local", host=host,
                                  timeout=CQL_TIMEOUT_S).one()
            return ",".join(sorted(row.tokens or ())) if row is not None else "?"
        except (NoHostAvailable, OperationTimedOut, Unavailable):
            time.sleep(CQL_RETRY_S)
    return "?"


def status(data_dir: Path) -> int:
    state = read_state(data_dir)
    if state is None or not alive(state.supervisor_pid, state.supervisor_started):
        print(f"no cluster is running in {data_dir} (`make cluster` starts one)",
              file=sys.stderr)
        return 1
    healthy = state.phase == "ready"
    print(f"cluster in {data_dir}: {state.phase}, supervisor pid {state.supervisor_pid}"
          + (f" ({state.error})" if state.error else ""))
    print("processes:")
    for entry in state.processes:
        result = probe(entry)
        healthy = healthy and result == "ok"
        print(f"  {entry.name:<18} pid {entry.pid or '-':<8} {result}")
    partitions, streams, nats_ok = asyncio.run(nats_sections(state))
    print("partitions (leases):", *partitions, sep="\n")
    print("streams:", *streams, sep="\n")
    cassandra, cassandra_ok = ring(state)
    print("cassandra ring:", *cassandra, sep="\n")
    healthy = healthy and nats_ok and cassandra_ok
    print("healthy" if healthy else "UNHEALTHY")
    return 0 if healthy else 1
