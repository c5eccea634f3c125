"""Prometheus exposition for worker processes (the gateway serves ``/metrics`` itself)."""

import structlog
from prometheus_client import start_http_server

log = structlog.get_logger(__name__)


def serve_metrics(host: str, port: int) -> int:
    """Serve ``/metrics`` from a background thread; returns the bound port (0 picks one)."""
    server, _thread = start_http_server(port, addr=host)
    bound: int = server.server_address[1]
    log.info("metrics_listening", host=host, port=bound)
    return bound
