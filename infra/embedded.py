"""``python -m infra.embedded`` (``make run``): the whole system on its embedded defaults.

Starts nats-server with JetStream, the storage worker (SQLite), a router, the push worker
(log provider) and a gateway as child processes on loopback, prints where to connect, and
stops them all on Ctrl-C. A dev signing key and the NATS credentials (one nkey seed per
service, ``infra.nats_auth``) are generated once into the data directory so tokens and
credentials survive restarts; each service gets only its own credential.
"""

import argparse
import secrets
import signal
import sys
import time
from pathlib import Path

from infra.nats_auth import NatsCredentials
from infra.nats_server import NatsServer, free_port
from infra.processes import ServiceProcess, wait_http_ok


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _dev_secret(data_dir: Path) -> str:
    path = data_dir / "dev-secret"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m infra.embedded", description=__doc__)
    parser.add_argument("--data-dir", type=Path, default=Path(".data"),
                        help="where NATS, SQLite and logs live (default: .data)")
    parser.add_argument("--port", type=int, default=8080, help="gateway HTTP port (8080)")
    parser.add_argument("--nats-port", type=int, default=4222,
                        help="nats-server port (4222; a free one if taken)")
    parser.add_argument("--sync-always", action="store_true",
                        help="fsync every JetStream write (survives power loss, ~8x slower)")
    args = parser.parse_args(argv)
    for name in ("port", "nats_port"):
        if not 1 <= getattr(args, name) <= 65535:
            parser.error(f"--{name.replace('_', '-')} must be within 1-65535")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data_dir: Path = args.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    logs = data_dir / "logs"
    logs.mkdir(exist_ok=True)
    nats_port = args.nats_port if _port_free(args.nats_port) else free_port()
    credentials = NatsCredentials.ensure(data_dir / "nats-auth")
    nats = NatsServer(data_dir / "nats", port=nats_port, sync_always=args.sync_always,
                      log_file=logs / "nats-server.log",
                      authorization=credentials.authorization())
    nats.start()
    env = {
        "COURIER_NATS_URL": nats.url,
        "COURIER_AUTH_SECRET": _dev_secret(data_dir),
        "COURIER_AUTH_DEV_REGISTRATION": "true",
        "COURIER_STORE_SQLITE_PATH": str(data_dir / "courier.db"),
        "COURIER_GATEWAY_PORT": str(args.port),
    }
    services = [ServiceProcess(name, {**env, **credentials.env(name)}, logs / f"{name}.log")
                for name in ("storage_worker", "router", "push_worker", "gateway")]
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    code = 0
    try:
        for service in services:
            service.start()
        wait_http_ok(f"http://127.0.0.1:{args.port}/healthz", 60, services[-1])
        print(_banner(args.port, nats.url, logs, credentials.directory), flush=True)
        while not stopping:
            dead = [s for s in services if not s.running()]
            if dead:
                print(f"{dead[0].name} exited ({dead[0].returncode()}); see {logs}",
                      file=sys.stderr)
                code = 1
                break
            time.sleep(0.5)
    finally:
        print("stopping...", flush=True)
        for service in reversed(services):
            service.stop()
        nats.stop()
    return code


def _banner(port: int, nats_url: str, logs: Path, nats_keys: Path) -> str:
    return f"""
Courier is running (embedded mode).
  health     http://127.0.0.1:{port}/healthz
  websocket  ws://127.0.0.1:{port}/v1/ws
  REST API   http://127.0.0.1:{port}/openapi.json
  NATS       {nats_url}
  nats keys  {nats_keys} (admin.nk, service.nk for your tools and services)
  logs       {logs}
Try it from two terminals:
  .venv/bin/python -m client chat --user alice --to bob
  .venv/bin/python -m client chat --user bob --to alice
Ctrl-C stops everything.
"""


if __name__ == "__main__":
    sys.exit(main())
