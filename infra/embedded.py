"""``python -m infra.embedded`` (``make run``): the whole system on its embedded defaults.

Starts nats-server with JetStream, the storage worker (SQLite), a router, the push worker
(log provider), the archive worker (local files), a gateway and the balancer as child
processes on loopback, prints where to connect, keeps them running (``infra.supervisor``: a
crashed child is restarted with back-off and reported here) and stops them all on Ctrl-C. A
dev signing key, the connection ticket key and the NATS credentials (one nkey seed per
service, ``infra.nats_auth``) are generated once into the data directory so tokens and
credentials survive restarts; each service gets only its own credential.

Ports: the gateway listens on ``--port`` (8080); the balancer on ``--balancer-port`` (8090
when free, else any free port); nats-server on ``--nats-port`` (4222 when free, else any free
port); the workers' metrics on ``--metrics-port-base`` and the three ports
after it (default: free ones). A port given by flag that is taken stops here with exit 2 and
the flag's name; every port is printed at start and stays the same across restarts.

Scale: ``--storage-workers N`` and ``--routers N`` (1 to 8 each, default 1) start N storage
workers and N routers; they share the partitions by lease (``COURIER_PARTITIONS_COUNT``,
from the environment like every setting) and the extra storage workers share the store (the
SQLite file, or the Cassandra keyspace). The first of each uses the ``--metrics-port-base``
port; the others get metrics port 0 (a free one, written to their logs).
"""

import argparse
import fcntl
import os
import secrets
import signal
import socket
import sys
import time
from pathlib import Path
from typing import IO, NoReturn

from infra.nats_auth import NatsCredentials
from infra.nats_server import NatsServer, free_port
from infra.processes import ServiceProcess, http_ok
from infra.supervisor import Child, Supervisor

PROG = "python -m infra.embedded"
DEFAULT_GATEWAY_PORT = 8080
DEFAULT_BALANCER_PORT = 8090
DEFAULT_NATS_PORT = 4222
#: Workers with a metrics port, in the order of ``--metrics-port-base`` + 0, 1, 2, 3.
METRICS_KEYS = (("router", "COURIER_METRICS_ROUTER_PORT"),
                ("storage_worker", "COURIER_METRICS_STORAGE_PORT"),
                ("push_worker", "COURIER_METRICS_PUSH_PORT"),
                ("archive_worker", "COURIER_METRICS_ARCHIVE_PORT"))
TICK_S = 0.25
#: Bounds of ``--storage-workers`` and ``--routers``.
MAX_REPLICAS = 8


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether nothing listens on ``port`` (a socket in TIME_WAIT does not count)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _port(text: str) -> int:
    port = int(text)
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError("must be within 1-65535")
    return port


def _replicas(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 1 <= count <= MAX_REPLICAS:
        raise argparse.ArgumentTypeError(f"must be within 1-{MAX_REPLICAS}")
    return count


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=Path(".data"),
                        help="where NATS, SQLite, media and logs live (default: .data); one "
                        "running system per data directory")
    parser.add_argument("--port", type=_port, default=None,
                        help=f"gateway HTTP/WebSocket port (default {DEFAULT_GATEWAY_PORT})")
    parser.add_argument("--balancer-port", type=_port, default=None,
                        help=f"balancer HTTP port (default {DEFAULT_BALANCER_PORT}, or a free "
                        "one if that is taken)")
    parser.add_argument("--nats-port", type=_port, default=None,
                        help=f"nats-server port (default {DEFAULT_NATS_PORT}, or a free one "
                        "if that is taken)")
    parser.add_argument("--metrics-port-base", type=_port, default=None,
                        help="metrics ports of router, storage worker, push worker, archive "
                        "worker: this one and the next three (default: free ones)")
    parser.add_argument("--storage-workers", type=_replicas, default=1,
                        help=f"storage worker processes, 1-{MAX_REPLICAS} (default 1): they "
                        "share the partitions and the store; the extra ones get metrics port 0")
    parser.add_argument("--routers", type=_replicas, default=1,
                        help=f"router processes, 1-{MAX_REPLICAS} (default 1): they share the "
                        "partitions; the extra ones get metrics port 0")
    parser.add_argument("--sync-always", action="store_true",
                        help="fsync every JetStream write (survives power loss, ~8x slower)")
    args = parser.parse_args(argv)
    if args.metrics_port_base is not None and args.metrics_port_base > 65535 - 3:
        parser.error("--metrics-port-base: must leave room for three more ports (<= 65532)")
    return args


def usage_error(message: str) -> NoReturn:
    print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def _given_port(flag: str, port: int) -> int:
    if not port_free(port):
        usage_error(f"{flag} {port}: the port is taken (by another make run?); choose another")
    return port


def choose_ports(args: argparse.Namespace) -> tuple[int, int, int, dict[str, int]]:
    """Gateway, balancer, NATS and metrics ports; a port given by flag must be free (else
    exit 2)."""
    gateway = _given_port("--port", args.port or DEFAULT_GATEWAY_PORT)
    if args.balancer_port is not None:
        balancer = _given_port("--balancer-port", args.balancer_port)
    else:
        balancer = DEFAULT_BALANCER_PORT if port_free(DEFAULT_BALANCER_PORT) else free_port()
    if args.nats_port is not None:
        nats = _given_port("--nats-port", args.nats_port)
    else:
        nats = DEFAULT_NATS_PORT if port_free(DEFAULT_NATS_PORT) else free_port()
    metrics: dict[str, int] = {}
    for offset, (service, _) in enumerate(METRICS_KEYS):
        if args.metrics_port_base is None:
            metrics[service] = free_port()
        else:
            metrics[service] = _given_port("--metrics-port-base",
                                           args.metrics_port_base + offset)
    return gateway, balancer, nats, metrics


def lock_data_dir(data_dir: Path) -> IO[str]:
    """Hold ``data_dir/run.lock`` for as long as this process runs (exit 2 if another
    ``make run`` holds it: two systems must not share one store)."""
    lock = (data_dir / "run.lock").open("a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.seek(0)
        usage_error(f"--data-dir {data_dir}: in use by another make run (pid "
                    f"{lock.read().strip() or '?'}); give this one its own --data-dir")
    lock.seek(0)
    lock.truncate()
    lock.write(str(os.getpid()))
    lock.flush()
    return lock


def _dev_secret(data_dir: Path, name: str = "dev-secret") -> str:
    path = data_dir / name
    if not path.exists():
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data_dir: Path = args.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    lock = lock_data_dir(data_dir)
    logs = data_dir / "logs"
    logs.mkdir(exist_ok=True)
    port, balancer_port, nats_port, metrics = choose_ports(args)
    credentials = NatsCredentials.ensure(data_dir / "nats-auth")
    nats = NatsServer(data_dir / "nats", port=nats_port, sync_always=args.sync_always,
                      log_file=logs / "nats-server.log", supervised=True,
                      authorization=credentials.authorization())
    env = {
        "COURIER_NATS_URL": nats.url,
        "COURIER_AUTH_SECRET": _dev_secret(data_dir),
        "COURIER_AUTH_TICKET_SECRET": _dev_secret(data_dir, "ticket-secret"),
        "COURIER_AUTH_DEV_REGISTRATION": "true",
        "COURIER_STORE_SQLITE_PATH": str(data_dir / "courier.db"),
        "COURIER_MEDIA_LOCAL_DIR": str(data_dir / "media"),
        "COURIER_GATEWAY_PORT": str(port),
        "COURIER_BALANCER_PORT": str(balancer_port),
        **{key: str(metrics[service]) for service, key in METRICS_KEYS},
    }
    counts = {"storage_worker": args.storage_workers, "router": args.routers}
    services = [service
                for module in ("storage_worker", "router", "push_worker", "archive_worker",
                               "gateway", "balancer")
                for service in _replicas_of(module, counts.get(module, 1), env, credentials,
                                            logs)]
    children: list[Child] = [nats, *services]
    supervisor = Supervisor(children, sys.stdout)
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    code = 0
    health = f"http://127.0.0.1:{port}/healthz"
    announced = False
    try:
        supervisor.start_all()
        while not stopping:
            status = supervisor.tick()
            if status is not None:
                code = status
                break
            if not announced and http_ok(health):
                announced = True
                print(_banner(port, balancer_port, nats.url, metrics, logs,
                              credentials.directory), flush=True)
            time.sleep(TICK_S)
    finally:
        print("stopping...", flush=True)
        supervisor.stop_all()
        lock.close()
    return code


def _replicas_of(module: str, count: int, env: dict[str, str], credentials: NatsCredentials,
                 logs: Path) -> list[ServiceProcess]:
    """``count`` processes of ``module``: ``module``, then ``module-2``, ... (their log files
    named alike), all with the service's credential; only the first has the chosen metrics
    port, the others 0 (a free one)."""
    metrics_key = dict(METRICS_KEYS).get(module)
    processes = []
    for index in range(1, count + 1):
        name = module if index == 1 else f"{module}-{index}"
        own = {metrics_key: "0"} if metrics_key is not None and index > 1 else {}
        processes.append(ServiceProcess(module, {**env, **credentials.env(module), **own},
                                        logs / f"{name}.log", name, supervised=True))
    return processes


def _banner(port: int, balancer_port: int, nats_url: str, metrics: dict[str, int], logs: Path,
            nats_keys: Path) -> str:
    metrics_lines = "\n".join(f"  metrics    http://127.0.0.1:{p}/metrics ({name})"
                              for name, p in metrics.items())
    url = "" if port == DEFAULT_GATEWAY_PORT else f" --url http://127.0.0.1:{port}"
    return f"""
Courier is running (embedded mode).
  health     http://127.0.0.1:{port}/healthz
  websocket  ws://127.0.0.1:{port}/v1/ws
  REST API   http://127.0.0.1:{port}/openapi.json
  metrics    http://127.0.0.1:{port}/metrics (gateway)
  balancer   http://127.0.0.1:{balancer_port} (POST /v1/connect; /healthz, /metrics,
             /openapi.json)
{metrics_lines}
  NATS       {nats_url}
  nats keys  {nats_keys} (admin.nk, service.nk for your tools and services)
  logs       {logs}
Try it from two terminals:
  .venv/bin/python -m client{url} chat --user alice --to bob
  .venv/bin/python -m client{url} chat --user bob --to alice
  (or through the balancer: add --balancer http://127.0.0.1:{balancer_port})
A service that crashes is restarted and reported here. Ctrl-C stops everything.
"""


if __name__ == "__main__":
    sys.exit(main())
