"""``python -m infra.cluster up|down|status`` (``make cluster``, ``make cluster-stop``,
``make cluster-status``): a small deployment on loopback, the same services and configuration
as production.

``up`` starts a supervisor process in the background (``serve``, detached, its log in
``<data-dir>/logs/supervisor.log``) and returns once everything is healthy, printing where to
connect. The supervisor starts, in order and each once the previous is ready:

- a 3-node NATS JetStream cluster (``infra.nats_server``, one nkey credential per service from
  ``infra.nats_auth``), ready when every node's ``/healthz`` is ok and the meta leader sees
  its peers current; the services run with ``nats.replicas = 3`` (every stream and KV bucket
  R3);
- a 3-node Cassandra cluster on 127.0.0.1-3 (``infra.cassandra_node``, 768M heap each, evenly
  spaced tokens, node 1 the seed), one node at a time; the keyspace is created by the first
  storage worker with replication ``datacenter1:3`` and the services read and write at
  LOCAL_QUORUM (2 of 3);
- SeaweedFS (S3) for media and the archive;
- 2 storage workers, the archive worker, the push worker, 2 routers, 2 gateways and the
  balancer (``python -m balancer``: clients ask it which gateway to connect to, and get a
  ticket for it).

It then keeps them running (``infra.supervisor``: a crashed child is restarted with back-off)
and records its PID and every child's PID in ``<data-dir>/state.json``, rewritten whenever a
child is restarted. ``down`` SIGTERMs the supervisor (it stops the children in reverse
order), then SIGKILLs whatever PID of the state file is still alive (only those PIDs, each
checked against its recorded start time, so a reused PID is left alone). ``status`` prints
each process and its health, the partition leases, the stream leaders and the Cassandra ring
(``infra.cluster_status``); its exit status is 1 when anything is unhealthy or the cluster is
not running.

Ports are chosen free on the first ``up`` and kept in ``<data-dir>/layout.json``, so a
cluster stopped and started again finds its data on the same addresses; a port taken since
stops ``up`` with exit 2.
"""

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, Final, Literal, NoReturn

import msgspec

from infra.cassandra_node import CassandraError, CassandraNode, ring_token
from infra.embedded import lock_data_dir, port_free
from infra.nats_auth import NatsCredentials
from infra.nats_server import ClusterSettings, NatsServer, free_port
from infra.processes import ServiceProcess, wait_http_ok
from infra.seaweedfs import SeaweedFs
from infra.supervisor import Child, Supervisor
from runtime.config import load_config

PROG: Final = "python -m infra.cluster"
DEFAULT_DATA_DIR: Final = Path(".cluster")
STATE_FILE: Final = "state.json"
LAYOUT_FILE: Final = "layout.json"
NATS_NODES: Final = 3
CASSANDRA_HOSTS: Final = ("127.0.0.1", "127.0.0.2", "127.0.0.3")
CASSANDRA_HEAP: Final = "768M"
#: The keyspace's replication (SimpleSnitch puts every node in ``datacenter1``) and the
#: services' consistency level: a write or read needs 2 of the 3 replicas.
CASSANDRA_REPLICATION: Final = "datacenter1:3"
CASSANDRA_CONSISTENCY: Final = "LOCAL_QUORUM"
KEYSPACE: Final = "courier"
MEDIA_BUCKET: Final = "courier-media"
#: Non-seed nodes wait this long for gossip before joining (../shared/INFRA.md).
NON_SEED_JVM_OPTIONS: Final = ("-Dcassandra.ring_delay_ms=5000",)
CASSANDRA_READY_S: Final = 240.0
NATS_READY_S: Final = 60.0
SERVICE_READY_S: Final = 180.0
#: ``up`` gives the supervisor this long to have everything healthy.
UP_TIMEOUT_S: Final = 1500.0
#: ``down`` gives the supervisor this long to stop its children before it kills what is left.
DOWN_TIMEOUT_S: Final = 300.0
DEFAULT_BALANCER_PORT: Final = 8090
TICK_S: Final = 0.25
POLL_S: Final = 0.2
STOP_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: The services and how many of each, in start order (each ready before the next starts).
SERVICES: Final = (("storage_worker", 2), ("archive_worker", 1), ("push_worker", 1),
                   ("router", 2), ("gateway", 2), ("balancer", 1))
#: Services with an HTTP server of their own: their health is ``/healthz`` on it.
HTTP_SERVICES: Final = ("gateway", "balancer")
#: The metrics port setting of each worker (the gateway serves ``/metrics`` on its own port).
METRICS_KEYS: Final = {"router": "COURIER_METRICS_ROUTER_PORT",
                       "storage_worker": "COURIER_METRICS_STORAGE_PORT",
                       "push_worker": "COURIER_METRICS_PUSH_PORT",
                       "archive_worker": "COURIER_METRICS_ARCHIVE_PORT"}

Kind = Literal["nats", "cassandra", "seaweedfs", "service"]


class NatsPorts(msgspec.Struct, frozen=True):
    client: int
    route: int
    monitor: int


class Layout(msgspec.Struct, frozen=True):
    """Every port of the cluster, chosen on the first ``up`` and kept."""

    nats: list[NatsPorts]
    #: The same CQL and storage ports on each of ``CASSANDRA_HOSTS``.
    cql_port: int
    storage_port: int
    #: Service process name (``router-2``) -> its HTTP port (gateways) or metrics port.
    ports: dict[str, int]
    balancer_port: int


class ProcessEntry(msgspec.Struct, frozen=True):
    name: str
    kind: Kind
    pid: int | None
    #: Start time of ``pid`` (``/proc/<pid>/stat``): a PID that has it is still this process.
    started: int | None
    #: Health probe: an ``http://`` URL that must answer 200, or ``tcp://host:port``.
    health: str


class State(msgspec.Struct, frozen=True):
    """``<data-dir>/state.json``: what ``down`` stops and ``status`` checks."""

    supervisor_pid: int
    supervisor_started: int | None
    phase: Literal["starting", "ready", "stopping", "failed"]
    processes: list[ProcessEntry]
    nats_urls: list[str]
    nats_monitors: list[str]
    cassandra_contact_points: list[str]
    keyspace: str
    partitions: int
    credentials: str
    gateway_urls: list[str]
    balancer_url: str = ""
    error: str = ""


class UsageError(Exception):
    """Bad flags or a port that is taken: exit 2 with the message."""


def process_start(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot; None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) is in parentheses and may hold spaces: split after it
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[19])  # field 22 of the whole line


def alive(pid: int | None, started: int | None) -> bool:
    """Whether ``pid`` is still the process that had start time ``started``."""
    return pid is not None and started is not None and process_start(pid) == started


def read_state(data_dir: Path) -> State | None:
    try:
        return msgspec.json.decode((data_dir / STATE_FILE).read_bytes(), type=State)
    except FileNotFoundError:
        return None


def write_state(data_dir: Path, state: State) -> None:
    """Replace the state file at once (a reader never sees half of it)."""
    path = data_dir / STATE_FILE
    partial = path.with_suffix(".partial")
    partial.write_bytes(msgspec.json.format(msgspec.json.encode(state)))
    partial.replace(path)


def _port_free_on_all(port: int, hosts: tuple[str, ...]) -> bool:
    return all(port_free(port, host) for host in hosts)


def _free_port_on_all(hosts: tuple[str, ...], taken: set[int]) -> int:
    while True:
        port = free_port(hosts[0])
        if port not in taken and _port_free_on_all(port, hosts):
            taken.add(port)
            return port


def service_names(module: str, count: int) -> list[str]:
    return [module if count == 1 else f"{module}-{index}" for index in range(1, count + 1)]


def new_layout(balancer_port: int) -> Layout:
    """Free ports for everything (the balancer's as given, 0: a free one)."""
    taken: set[int] = set()
    nats = [NatsPorts(*(_free_port_on_all(("127.0.0.1",), taken) for _ in range(3)))
            for _ in range(NATS_NODES)]
    cql = _free_port_on_all(CASSANDRA_HOSTS, taken)
    storage = _free_port_on_all(CASSANDRA_HOSTS, taken)
    ports = {name: _free_port_on_all(("127.0.0.1",), taken)
             for module, count in SERVICES if module != "balancer"
             for name in service_names(module, count)}
    balancer = balancer_port or _free_port_on_all(("127.0.0.1",), taken)
    return Layout(nats=nats, cql_port=cql, storage_port=storage, ports=ports,
                  balancer_port=balancer)


def load_layout(data_dir: Path, balancer_port: int) -> Layout:
    """The kept layout, or a new one; every port must be free now (else ``UsageError``)."""
    path = data_dir / LAYOUT_FILE
    if path.exists():
        layout = msgspec.json.decode(path.read_bytes(), type=Layout)
        if balancer_port and balancer_port != layout.balancer_port:
            layout = msgspec.structs.replace(layout, balancer_port=balancer_port)
    else:
        layout = new_layout(balancer_port)
    taken: list[tuple[str, int, tuple[str, ...]]] = [
        (f"NATS node {i + 1}", port, ("127.0.0.1",)) for i, node in enumerate(layout.nats)
             for port in (node.client, node.route, node.monitor)]
    taken += [("Cassandra", port, CASSANDRA_HOSTS)
              for port in (layout.cql_port, layout.storage_port)]
    taken += [(name, port, ("127.0.0.1",)) for name, port in layout.ports.items()]
    taken += [("the balancer (--balancer-port)", layout.balancer_port, ("127.0.0.1",))]
    for what, port, hosts in taken:
        if not _port_free_on_all(port, hosts):
            raise UsageError(f"port {port} of {what} is taken (another cluster in another "
                             f"--data-dir?); stop it, or remove {path} to choose new ports")
    path.write_bytes(msgspec.json.format(msgspec.json.encode(layout)))
    return layout


def _secret(data_dir: Path, name: str) -> str:
    """A random secret kept in ``data_dir/name`` (made once, mode 0600)."""
    path = data_dir / name
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(32))
    return path.read_text().strip()


class CassandraChild:
    """A ``CassandraNode`` as a supervised child: started without waiting (the supervisor
    restarts a crashed node; ``status`` tells when it answers CQL again)."""

    def __init__(self, node: CassandraNode, name: str) -> None:
        self.node = node
        self.name = name

    @property
    def pid(self) -> int | None:
        return self.node.pid

    @property
    def log_file(self) -> Path:
        return self.node.system_log

    def start(self) -> None:
        self.node.start()

    def running(self) -> bool:
        return self.node.is_running

    def returncode(self) -> int | None:
        return self.node.wait(timeout=0)

    def answering(self) -> bool:
        return self.node.is_running

    def kill(self) -> None:
        if self.node.pid is not None:
            os.kill(self.node.pid, signal.SIGKILL)
            self.node.wait()

    def stop(self) -> None:
        self.node.stop()


class Plan:
    """Every process of one cluster, configured, none started."""

    def __init__(self, data_dir: Path, layout: Layout) -> None:
        self.data_dir = data_dir
        self.layout = layout
        self.logs = data_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.credentials = NatsCredentials.ensure(data_dir / "nats-auth")
        routes = tuple(node.route for node in layout.nats)
        self.nats = [
            NatsServer(data_dir / f"nats-{i}", port=ports.client, supervised=True,
                       log_file=self.logs / f"nats-{i}.log",
                       authorization=self.credentials.authorization(),
                       cluster=ClusterSettings(server_name=f"n{i}", port=ports.route,
                                               routes=routes),
                       monitor_port=ports.monitor)
            for i, ports in enumerate(layout.nats, start=1)]
        seed = f"{CASSANDRA_HOSTS[0]}:{layout.storage_port}"
        self.cassandra = [
            CassandraChild(CassandraNode(
                data_dir / f"cassandra-{i + 1}", host=host, native_port=layout.cql_port,
                storage_port=layout.storage_port, heap=CASSANDRA_HEAP, seeds=(seed,),
                initial_token=ring_token(i, len(CASSANDRA_HOSTS)),
                jvm_options=NON_SEED_JVM_OPTIONS if i else ()), f"cassandra-{i + 1}")
            for i, host in enumerate(CASSANDRA_HOSTS)]
        self.seaweedfs = SeaweedFs(data_dir / "seaweedfs", log_file=self.logs / "seaweedfs.log",
                                   supervised=True)
        self.services: list[ServiceProcess] = [
            ServiceProcess(module, self.env(module, name), self.logs / f"{name}.log", name,
                           supervised=True)
            for module, count in SERVICES for name in service_names(module, count)]

    @property
    def nats_urls(self) -> list[str]:
        return [node.url for node in self.nats]

    @property
    def contact_points(self) -> list[str]:
        return [f"{host}:{self.layout.cql_port}" for host in CASSANDRA_HOSTS]

    @property
    def balancer_url(self) -> str:
        return f"http://127.0.0.1:{self.layout.balancer_port}"

    def gateway_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{self.layout.ports[name]}"
                for name in service_names("gateway", dict(SERVICES)["gateway"])]

    def env(self, module: str, name: str) -> dict[str, str]:
        """The production configuration of one service process, with its own credential."""
        env = {
            "COURIER_NATS_URL": ",".join(self.nats_urls),
            "COURIER_NATS_REPLICAS": str(NATS_NODES),
            **self.credentials.env(module),
            "COURIER_AUTH_SECRET": _secret(self.data_dir, "dev-secret"),
            "COURIER_AUTH_ADMIN_SECRET": _secret(self.data_dir, "admin-secret"),
            "COURIER_AUTH_TICKET_SECRET": _secret(self.data_dir, "ticket-secret"),
            "COURIER_AUTH_DEV_REGISTRATION": "true",
            "COURIER_STORE_BACKEND": "cassandra",
            "COURIER_STORE_CASSANDRA_CONTACT_POINTS": ",".join(self.contact_points),
            "COURIER_STORE_CASSANDRA_KEYSPACE": KEYSPACE,
            "COURIER_STORE_CASSANDRA_REPLICATION": CASSANDRA_REPLICATION,
            "COURIER_STORE_CASSANDRA_CONSISTENCY": CASSANDRA_CONSISTENCY,
            "COURIER_MEDIA_BACKEND": "s3",
            "COURIER_MEDIA_S3_BUCKET": MEDIA_BUCKET,
            "COURIER_MEDIA_S3_ENDPOINT_URL": self.seaweedfs.endpoint_url,
            "COURIER_MEDIA_S3_ACCESS_KEY": self.seaweedfs.access_key,
            "COURIER_MEDIA_S3_SECRET_KEY": self.seaweedfs.secret_key,
            "COURIER_MEDIA_S3_CREATE_BUCKET": "true",
        }
        # every process names all four metrics ports: the ones it does not serve must not
        # collide with a default another process listens on
        env.update({key: "0" for key in METRICS_KEYS.values()})
        if module in METRICS_KEYS:
            env[METRICS_KEYS[module]] = str(self.layout.ports[name])
        if module == "gateway":
            env["COURIER_GATEWAY_PORT"] = str(self.layout.ports[name])
        if module == "balancer":
            env["COURIER_BALANCER_PORT"] = str(self.layout.balancer_port)
        return env

    def children(self) -> list[Child]:
        """In start order (stopped in reverse)."""
        return [*self.nats, *self.cassandra, self.seaweedfs, *self.services]

    def health(self, child: Child) -> tuple[Kind, str]:
        """Kind and health probe of a child of this plan."""
        if isinstance(child, NatsServer):
            return "nats", f"http://127.0.0.1:{child.monitor_port}/healthz"
        if isinstance(child, CassandraChild):
            return "cassandra", f"tcp://{child.node.contact_point}"
        if isinstance(child, SeaweedFs):
            return "seaweedfs", f"tcp://127.0.0.1:{child.ports['s3']}"
        if child.name == "balancer":
            return "service", f"{self.balancer_url}/healthz"
        port = self.layout.ports[child.name]
        path = "/healthz" if child.name.startswith(HTTP_SERVICES) else "/metrics"
        return "service", f"http://127.0.0.1:{port}{path}"

    def state(self, phase: Literal["starting", "ready", "stopping", "failed"],
              error: str = "") -> State:
        entries = []
        for child in self.children():
            pid = child.pid
            kind, health = self.health(child)
            entries.append(ProcessEntry(child.name, kind, pid,
                                        None if pid is None else process_start(pid), health))
        return State(
            supervisor_pid=os.getpid(), supervisor_started=process_start(os.getpid()),
            phase=phase, processes=entries, nats_urls=self.nats_urls,
            nats_monitors=[f"http://127.0.0.1:{node.monitor_port}" for node in self.nats],
            cassandra_contact_points=self.contact_points, keyspace=KEYSPACE,
            partitions=_partitions(), credentials=str(self.credentials.directory),
            gateway_urls=self.gateway_urls(), balancer_url=self.balancer_url, error=error)


def _partitions() -> int:
    return load_config({key: value for key, value in os.environ.items()
                        if key == "COURIER_PARTITIONS_COUNT"}).partitions.count


def wait_jetstream_cluster(monitors: list[str], timeout: float) -> None:
    """Until every node's ``/healthz`` is ok and the meta leader reports its peers current
    (before that an R3 stream cannot be created)."""
    deadline = time.monotonic() + timeout
    last = "no node answered"
    while time.monotonic() < deadline:
        try:
            if all(_get_json(f"{url}/healthz").get("status") == "ok" for url in monitors):
                meta = [_get_json(f"{url}/jsz").get("meta_cluster", {}) for url in monitors]
                # the leader's own view: its peers, without itself
                leader = next((m for m in meta if m.get("leader") and m["leader"] not in
                               {peer.get("name") for peer in m.get("replicas", [])}), None)
                if leader is not None:
                    peers = leader["replicas"]
                    if len(peers) == len(monitors) - 1 and all(p.get("current") for p in peers):
                        return
                    last = f"meta leader {leader['leader']} sees peers {peers}"
                else:
                    last = "no meta leader yet"
            else:
                last = "a node's /healthz is not ok yet"
        except (OSError, ValueError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(POLL_S)
    raise TimeoutError(f"the NATS cluster did not form within {timeout:.0f} s ({last})")


def _get_json(url: str, timeout: float = 2.0) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            value = json.load(response)
    except urllib.error.HTTPError as exc:
        with exc:
            value = json.load(exc)
    return value if isinstance(value, dict) else {}


class _Stop(BaseException):
    """Raised by the supervisor's signal handler: stop everything."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop(signal.Signals(signum).name)


def _say(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {text}", flush=True)


def start_in_order(plan: Plan, publish: Callable[[], None]) -> None:
    """Start every child, each once the previous is ready; ``publish`` after each start
    (so ``down`` knows the PIDs of a cluster that is still starting)."""
    for node in plan.nats:
        node.start(timeout=NATS_READY_S)
        _say(f"{node.name} started (pid {node.pid}) on {node.url}")
        publish()
    wait_jetstream_cluster([f"http://127.0.0.1:{n.monitor_port}" for n in plan.nats],
                           NATS_READY_S)
    _say("NATS cluster formed: meta leader elected, peers current")
    for child in plan.cassandra:
        started = time.monotonic()
        child.start()
        publish()
        version = child.node.wait_ready(CASSANDRA_READY_S)
        _say(f"{child.name} (Cassandra {version}, pid {child.pid}) answers CQL on "
             f"{child.node.contact_point} after {time.monotonic() - started:.0f} s")
    plan.seaweedfs.start()
    _say(f"seaweedfs started (pid {plan.seaweedfs.pid}) on {plan.seaweedfs.endpoint_url}")
    publish()
    for service in plan.services:
        service.start()
        publish()
        if service.name.startswith(HTTP_SERVICES):
            wait_http_ok(plan.health(service)[1], SERVICE_READY_S, service)
        else:
            service.wait_started(SERVICE_READY_S)
        _say(f"{service.name} started (pid {service.pid})")


def serve(data_dir: Path, balancer_port: int) -> int:
    """The supervisor: start the cluster, keep it running until SIGTERM, stop it."""
    lock = lock_data_dir(data_dir)
    layout = load_layout(data_dir, balancer_port)
    plan = Plan(data_dir, layout)
    for sig in STOP_SIGNALS:
        signal.signal(sig, _raise_stop)
    children = plan.children()
    code = 0
    try:
        write_state(data_dir, plan.state("starting"))
        start_in_order(plan, lambda: write_state(data_dir, plan.state("starting")))
        write_state(data_dir, plan.state("ready"))
        _say("cluster ready")
        code = _supervise(plan, Supervisor(children, sys.stdout))
    except _Stop as stop:
        _say(f"{stop} received")
    except (CassandraError, RuntimeError, TimeoutError, OSError) as exc:
        _say(f"start failed: {exc}")
        write_state(data_dir, plan.state("failed", str(exc).splitlines()[0]))
        code = 1
    finally:
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)  # a second signal must not cut the stop short
        _say("stopping...")
        if code == 0:
            write_state(data_dir, plan.state("stopping"))
        for child in reversed(children):
            child.stop()
            _say(f"{child.name} stopped")
        if code == 0:
            (data_dir / STATE_FILE).unlink(missing_ok=True)
        lock.close()
    return code


def _supervise(plan: Plan, supervisor: Supervisor) -> int:
    """Tick the supervisor until a child has a configuration error; keep the state file's
    PIDs current."""
    published = plan.state("ready")
    while True:
        status = supervisor.tick()
        if status is not None:
            write_state(plan.data_dir, plan.state("failed", "a child exited with a "
                                                  "configuration error (see the log)"))
            return status
        current = plan.state("ready")
        if current.processes != published.processes:
            write_state(plan.data_dir, current)
            published = current
        time.sleep(TICK_S)


def _follower(log: Path, offset: int) -> Callable[[], None]:
    """A function printing what ``log`` gained since the last call (``up`` shows the
    supervisor's progress)."""
    position = offset

    def show() -> None:
        nonlocal position
        with log.open("rb") as fh:
            fh.seek(position)
            data = fh.read()
        position += len(data)
        if data:
            sys.stdout.write(data.decode("utf-8", "replace"))
            sys.stdout.flush()

    return show


def up(data_dir: Path, balancer_port: int) -> int:
    state = read_state(data_dir)
    if state is not None and alive(state.supervisor_pid, state.supervisor_started):
        print(f"the cluster in {data_dir} is already running (supervisor pid "
              f"{state.supervisor_pid}); `make cluster-status` checks it")
        return 0
    load_layout(data_dir, balancer_port)  # a port taken is a usage error, before any start
    (data_dir / STATE_FILE).unlink(missing_ok=True)
    logs = data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / "supervisor.log"
    with log.open("ab") as out:
        offset = out.tell()
        supervisor = subprocess.Popen(
            [sys.executable, "-m", "infra.cluster", "serve", "--data-dir", str(data_dir),
             "--balancer-port", str(balancer_port)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
    deadline = time.monotonic() + UP_TIMEOUT_S
    show = _follower(log, offset)
    while True:
        show()
        state = read_state(data_dir)
        if state is not None and state.supervisor_pid == supervisor.pid:
            if state.phase == "ready":
                print(banner(state, data_dir))
                return 0
            if state.phase == "failed":
                break
        if supervisor.poll() is not None:
            break
        if time.monotonic() > deadline:
            print(f"the cluster did not become ready within {UP_TIMEOUT_S:.0f} s; stopping "
                  "it", file=sys.stderr)
            supervisor.terminate()
            break
        time.sleep(POLL_S)
    show()
    supervisor.wait(DOWN_TIMEOUT_S)
    print(f"{PROG} up: the cluster did not start (see {log} and {logs})", file=sys.stderr)
    return 1


def banner(state: State, data_dir: Path) -> str:
    gateways = "\n".join(f"  gateway    {url}" for url in state.gateway_urls)
    first = state.gateway_urls[0]
    return f"""
Courier cluster is running ({len(state.processes)} processes, supervisor pid \
{state.supervisor_pid}).
  balancer   {state.balancer_url} (POST /v1/connect: a gateway and a ticket for it)
{gateways}
  NATS       {", ".join(state.nats_urls)}
  Cassandra  {", ".join(state.cassandra_contact_points)} (keyspace {state.keyspace}, \
RF 3, {CASSANDRA_CONSISTENCY})
  nats keys  {state.credentials}
  logs       {data_dir / "logs"}
Try it from two terminals (registration on a gateway, the socket where the balancer says):
  .venv/bin/python -m client --url {first} --balancer {state.balancer_url} chat --user alice \
--to bob
  .venv/bin/python -m client --url {first} --balancer {state.balancer_url} chat --user bob \
--to alice
make cluster-status checks every process; make cluster-stop stops them.
"""


def down(data_dir: Path) -> int:
    state = read_state(data_dir)
    if state is None:
        print(f"no cluster is running in {data_dir}: nothing to stop")
        return 0
    if alive(state.supervisor_pid, state.supervisor_started):
        print(f"stopping the cluster (supervisor pid {state.supervisor_pid})...", flush=True)
        os.kill(state.supervisor_pid, signal.SIGTERM)
        deadline = time.monotonic() + DOWN_TIMEOUT_S
        while (alive(state.supervisor_pid, state.supervisor_started)
               and time.monotonic() < deadline):
            time.sleep(POLL_S)
    left = [entry for entry in (read_state(data_dir) or state).processes
            if alive(entry.pid, entry.started)]
    if alive(state.supervisor_pid, state.supervisor_started):
        left.append(ProcessEntry("supervisor", "service", state.supervisor_pid,
                                 state.supervisor_started, ""))
    for entry in left:
        assert entry.pid is not None
        print(f"{entry.name} (pid {entry.pid}) still running: killing it")
        os.kill(entry.pid, signal.SIGKILL)
    (data_dir / STATE_FILE).unlink(missing_ok=True)
    print("cluster stopped")
    return 0


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"must be within 0-65535 (0: a free one), got {port}")
    return port


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="up|down|status")
    for name, text in (("up", "start the cluster in the background, return once healthy"),
                       ("down", "stop every process of the cluster"),
                       ("status", "print each process's health, partition leases, stream "
                        "leaders and the Cassandra ring; exit 1 if anything is unhealthy"),
                       ("serve", "the supervisor itself, in the foreground (``up`` runs it)")):
        command = commands.add_parser(name, help=text)
        command.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                             help=f"where the cluster's data, state and logs live (default "
                             f"{DEFAULT_DATA_DIR})")
        if name in ("up", "serve"):
            command.add_argument("--balancer-port", type=_port, default=DEFAULT_BALANCER_PORT,
                                 help=f"the balancer's port (default {DEFAULT_BALANCER_PORT}; "
                                 "0: a free one)")
    return parser


def usage_error(message: str) -> NoReturn:
    print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    data_dir: Path = args.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        if args.command == "up":
            return up(data_dir, args.balancer_port)
        if args.command == "serve":
            return serve(data_dir, args.balancer_port)
        if args.command == "down":
            return down(data_dir)
        from infra.cluster_status import status
        return status(data_dir)
    except UsageError as exc:
        usage_error(str(exc))


if __name__ == "__main__":
    sys.exit(main())
