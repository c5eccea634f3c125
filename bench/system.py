"""The system under test, started the way ``make run`` starts it.

``python -m infra.embedded`` runs in a fresh temporary data directory on free ports and starts
nats-server, the storage worker(s), the router(s) and a gateway as its children (how many
storage workers and routers, and the partition count, are the system's to choose: the
partition-scaling scenario varies them); ``stop`` ends it (and,
if it does not exit in time, each of its children) by PID. The embedded runner writes its dev
signing key into the data directory; the bench, having started the system, mints device tokens
with it the way an app's backend does (HS256 with ``sub``/``dev``/``app``/``exp``), and the
gateway registers each device when it connects. It reads NATS with the runner's credentials:
``admin`` for consumer state, ``bench`` for the NATS floor.

On the Cassandra store (``COURIER_STORE_CASSANDRA_*`` from the environment point at the node)
each system gets a keyspace of its own unless ``COURIER_STORE_CASSANDRA_KEYSPACE`` names one,
dropped again by ``stop``: a system never sees the rows of the one before, and the node's heap
does not fill with the memtables of old keyspaces.
"""

import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import jwt
import msgspec

from infra.loadenv import lifted_limits
from infra.nats_auth import NatsCredentials
from infra.nats_server import free_port
from runtime.config import PartitionsConfig, load_config, parse_contact_point

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
#: The services whose PIDs the bench measures (RSS, CPU) and profiles: every Python process
#: of the embedded system.
SERVICES = ("gateway", "router", "storage_worker", "push_worker", "archive_worker")
#: Every server process (the services and nats-server): their CPU use together is the
#: server's cost of the load (``bench.stats.server_cpu_us_per_msg``).
SERVER_PROCESSES = (*SERVICES, "nats-server")
KEYSPACE_ENV = "COURIER_STORE_CASSANDRA_KEYSPACE"
TOKEN_TTL_S = 6 * 3600
LOG_TAIL_LINES = 15


class SystemUnavailable(RuntimeError):
    """The system did not start or does not answer (for example, an unavailable store)."""


def raise_file_limit() -> int:
    """Raise this process's soft ``RLIMIT_NOFILE`` to its hard limit (children inherit it).

    Returns the new limit: the most sockets one process (the gateway included) can hold."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard
    return soft


def mint_token(secret: str, user: str, device: str, app: str = "default") -> str:
    """A device token as an app backend mints it with the deployment's HS256 key."""
    claims = {"sub": user, "dev": device, "app": app, "exp": int(time.time()) + TOKEN_TTL_S}
    return jwt.encode(claims, secret, algorithm="HS256")


class SystemUnderTest:
    """One embedded system (``python -m infra.embedded``) in its own temporary directory."""

    def __init__(self, store: str, env: dict[str, str] | None = None, *,
                 storage_workers: int = 1, routers: int = 1,
                 partitions: int | None = None) -> None:
        self.store = store
        self.storage_workers = storage_workers
        self.routers = routers
        self.data_dir = Path(tempfile.mkdtemp(prefix="courier-bench-"))
        self.port = free_port()
        self.nats_port = free_port()
        self._extra_env = dict(env or {})
        if partitions is not None:
            self._extra_env["COURIER_PARTITIONS_COUNT"] = str(partitions)
        #: The keyspace this system created for itself (dropped by ``stop``), if any.
        self._own_keyspace: str | None = None
        if store == "cassandra" and KEYSPACE_ENV not in {**os.environ, **self._extra_env}:
            self._own_keyspace = f"bench_{uuid.uuid4().hex[:16]}"
            self._extra_env[KEYSPACE_ENV] = self._own_keyspace
        self._process: subprocess.Popen[bytes] | None = None
        self._children: dict[str, list[int]] = {}

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws"

    @property
    def nats_url(self) -> str:
        return f"nats://127.0.0.1:{self.nats_port}"

    @property
    def partitions(self) -> int:
        """The partition count the system runs with (its environment, else the default)."""
        raw = self._extra_env.get("COURIER_PARTITIONS_COUNT")
        return int(raw) if raw else PartitionsConfig().count

    @property
    def nats_credentials(self) -> NatsCredentials:
        """The NATS seeds the embedded runner generated (``admin``, ``bench``, ...)."""
        return NatsCredentials(self.data_dir / "nats-auth")

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def secret(self) -> str:
        return (self.data_dir / "dev-secret").read_text().strip()

    def pid(self, service: str) -> int:
        """PID of one of the embedded runner's children (``gateway``, ``router``, ...): the
        first, if the service runs more than one process."""
        return self._children[service][0]

    def pids(self, service: str) -> list[int]:
        """PIDs of every process of ``service`` (several storage workers or routers)."""
        return list(self._children[service])

    def service_pids(self) -> dict[str, list[int]]:
        """The PIDs of each measured service and nats-server, by name; a service with several
        processes also under ``<service>-1``, ``<service>-2``, ... (for CPU meters)."""
        named = {name: self.pids(name) for name in SERVER_PROCESSES}
        for name in SERVICES:
            if len(named[name]) > 1:
                named.update({f"{name}-{index}": [pid]
                              for index, pid in enumerate(named[name], start=1)})
        return named

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            # The embedded runner's fixed metrics ports may be taken by a `make run` nearby.
            "COURIER_METRICS_ROUTER_PORT": "0",
            "COURIER_METRICS_STORAGE_PORT": "0",
            "COURIER_METRICS_PUSH_PORT": "0",
            "COURIER_METRICS_ARCHIVE_PORT": "0",
            "COURIER_STORE_BACKEND": self.store,
            **lifted_limits(),
            **self._extra_env,
        }

    def start(self) -> "SystemUnderTest":
        env = self._env()
        with (self.data_dir / "embedded.log").open("wb") as out:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "infra.embedded", "--data-dir", str(self.data_dir),
                 "--port", str(self.port), "--nats-port", str(self.nats_port),
                 "--storage-workers", str(self.storage_workers),
                 "--routers", str(self.routers)],
                env=env, stdout=out, stderr=subprocess.STDOUT,
            )
        try:
            self._children = self._find_children()
            self._probe_storage()
        except (OSError, RuntimeError) as exc:
            reason = f"{exc}\n{self.log_tail()}"
            self.stop()
            raise SystemUnavailable(f"the system (store {self.store!r}) did not start: "
                                    f"{reason}") from None
        return self

    def _find_children(self) -> dict[str, list[int]]:
        """Wait for the runner's banner (printed once the gateway is healthy), then map its
        children to service names. The NATS port is read from the banner: the runner picks
        another one if ours was taken meanwhile."""
        assert self._process is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"infra.embedded exited with {self._process.returncode}")
            children = _children_by_service(self._process.pid)
            banner = (self.data_dir / "embedded.log").read_text(errors="replace")
            nats_line = [line for line in banner.splitlines() if line.strip().startswith("NATS")]
            if nats_line and all(len(children.get(name, ())) == self._expected(name)
                                 for name in SERVICES):
                self.nats_port = int(nats_line[0].rsplit(":", 1)[1])
                return children
            time.sleep(0.05)
        raise RuntimeError("infra.embedded did not report its services in time")

    def _expected(self, service: str) -> int:
        return {"storage_worker": self.storage_workers, "router": self.routers}.get(service, 1)

    def _probe_storage(self) -> None:
        """Register a device through the REST API: a round trip through the storage worker."""
        request = urllib.request.Request(
            f"{self.http_url}/v1/dev/devices", method="POST",
            data=msgspec.json.encode({"user": "bench-probe", "device": "bench-probe"}),
            headers={"Content-Type": "application/json"})
        deadline = time.monotonic() + START_TIMEOUT_S
        last_error = ""
        while time.monotonic() < deadline:
            dead = [name for name, pids in self._children.items()
                    if not all(_alive(pid) for pid in pids)]
            if dead:
                raise RuntimeError(f"{', '.join(dead)} exited")
            try:
                with urllib.request.urlopen(request, timeout=20) as response:
                    if response.status == 201:
                        return
            except urllib.error.HTTPError as exc:
                last_error = f"registration answered {exc.code}: {exc.read()[:200]!r}"
            except OSError as exc:
                last_error = repr(exc)
            time.sleep(0.2)
        raise RuntimeError(f"the storage worker does not answer: {last_error}")

    def log_tail(self) -> str:
        """The last lines of every service log (for error messages)."""
        parts = []
        for log in sorted(self.log_dir.glob("*.log")):
            lines = log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
            if lines:
                parts.append(f"--- {log.name}\n" + "\n".join(lines))
        return "\n".join(parts)

    def keep_logs(self, target: Path) -> None:
        """Copy the service logs to ``target`` (kept when a scenario failed)."""
        if self.log_dir.is_dir():
            shutil.copytree(self.log_dir, target, dirs_exist_ok=True)

    def stop(self) -> None:
        """SIGTERM the runner (it stops its children); SIGKILL whatever is left by PID."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                for pids in self._children.values():
                    for pid in pids:
                        _kill_child(pid, self._process.pid)
                self._process.kill()
                self._process.wait()
        shutil.rmtree(self.data_dir, ignore_errors=True)
        if self._own_keyspace is not None:
            _drop_keyspace(self._env(), self._own_keyspace)
            self._own_keyspace = None


def _drop_keyspace(env: dict[str, str], keyspace: str) -> None:
    """Drop a keyspace a system made for itself (a warning, not an error, if that fails: the
    figures are measured already)."""
    from cassandra.auth import PlainTextAuthProvider
    from cassandra.cluster import Cluster

    cluster = None
    try:
        store = load_config(env).store
        points = [parse_contact_point(point) for point in store.cassandra_contact_points]
        auth = (PlainTextAuthProvider(store.cassandra_username, store.cassandra_password)
                if store.cassandra_username else None)
        cluster = Cluster(contact_points=[host for host, _ in points], port=points[0][1],
                          auth_provider=auth, connect_timeout=10)
        cluster.connect().execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=60)
    except Exception as exc:  # best effort, and the driver raises plain Exceptions
        print(f"[bench] could not drop keyspace {keyspace}: {exc!r}", file=sys.stderr)
    finally:
        if cluster is not None:
            cluster.shutdown()


def _children_by_service(pid: int) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return found
    for child in children:
        try:
            argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[0].endswith(b"nats-server"):
            found.setdefault("nats-server", []).append(int(child))
        elif b"-m" in argv:
            found.setdefault(argv[argv.index(b"-m") + 1].decode(), []).append(int(child))
    return found


def _stat(pid: int) -> list[str]:
    """Fields of ``/proc/<pid>/stat`` after the command name (state, ppid, ...); [] if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return []


def _alive(pid: int) -> bool:
    fields = _stat(pid)
    return bool(fields) and fields[0] != "Z"


def _kill_child(pid: int, parent: int) -> None:
    """SIGKILL ``pid`` if it is still a live child of ``parent`` (never a reused PID)."""
    fields = _stat(pid)
    if fields and fields[0] != "Z" and int(fields[1]) == parent:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
