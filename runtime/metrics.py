"""Prometheus exposition for worker processes (the gateway serves ``/metrics`` itself)."""

import structlog
from prometheus_client import start_http_server

from runtime.config import ConfigError

log = structlog.get_logger(__name__)


def serve_metrics(host: str, port: int, key: str = "COURIER_METRICS_*_PORT") -> int:
    """Serve ``/metrics`` from a background thread; returns the bound port (0 picks one).
    A port that cannot be bound (taken) is a ``ConfigError`` naming ``key``."""
    try:
        server, _thread = start_http_server(port, addr=host)
    except OSError as exc:
        raise ConfigError(f"{key}: cannot serve metrics on {host}:{port}: {exc.strerror or exc}"
                          " (choose a free port, or 0 for any)") from None
    bound: int = server.server_address[1]
    log.info("metrics_listening", host=host, port=bound)
    return bound
