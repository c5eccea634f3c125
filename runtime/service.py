"""Process lifecycle: every service is started, drained and stopped the same way.

``main`` loads the configuration, configures logging, serves the worker's metrics and ``run``s
the service. ``run`` installs uvloop, starts the service, waits for SIGINT/SIGTERM, then drains
(stop taking new work, finish in-flight work) and stops (close connections). A second signal
stops at once.

Exit codes: 0 after a clean stop; 2 for a configuration error (the message names the key and
the reason, on stderr, without a traceback: a missing secret, a malformed value, a metrics
port that is taken); 1 when ``start`` failed half-way (logged as ``service_start_failed``,
after the parts that did start were drained and stopped). Supervisors (``make run``) restart
on 1 and give up with the reason on 2.
"""

import asyncio
import signal
import sys
from collections.abc import Callable
from typing import NoReturn, Protocol

import structlog
import uvloop

from runtime.config import Config, ConfigError, load_config
from runtime.logging import configure_logging
from runtime.metrics import serve_metrics

log = structlog.get_logger(__name__)

#: Exit status of a process whose configuration is wrong (restarting would not help).
EXIT_CONFIG = 2
#: Exit status of a process that could not start (restarting may help).
EXIT_START_FAILED = 1


class Service(Protocol):
    """Explicit async lifecycle of a service process."""

    async def start(self) -> None:
        """Connect to dependencies and begin work. Raises if the service cannot run; raises
        ``ConfigError`` (naming the key) if its configuration cannot work."""

    async def drain(self) -> None:
        """Stop taking new work and finish what is in flight. Also called after a ``start``
        that failed half-way, so it must cope with parts that never started."""

    async def stop(self) -> None:
        """Release every resource. Called once, after ``drain``, even if it failed."""


class StartFailed(Exception):
    """``start`` raised; the service was drained and stopped."""


async def _shutdown(service: Service) -> None:
    try:
        await service.drain()
    finally:
        await service.stop()


async def _serve(service: Service) -> None:
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    try:
        await service.start()
    except ConfigError:
        await _shutdown(service)
        raise
    except Exception as exc:
        log.exception("service_start_failed", error=repr(exc))
        await _shutdown(service)
        raise StartFailed(repr(exc)) from exc
    log.info("service_started")
    await stopping.wait()
    log.info("service_draining")
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.remove_signal_handler(sig)
    await _shutdown(service)
    log.info("service_stopped")


def config_exit(exc: ConfigError) -> NoReturn:
    """Print a configuration error (it names the key) and exit with ``EXIT_CONFIG``."""
    print(f"configuration error: {exc}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_CONFIG) from None


def run(service: Service) -> None:
    """Run ``service`` until SIGINT or SIGTERM; exit 2 on a configuration error, 1 when it
    could not start."""
    try:
        uvloop.run(_serve(service))
    except ConfigError as exc:
        config_exit(exc)
    except StartFailed as exc:
        print(f"start failed: {exc} (see the log above)", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_START_FAILED) from None


def main(name: str, build: Callable[[Config], Service], metrics_port: str | None = None) -> None:
    """A service process's ``main``: configuration, logging, the worker's metrics server on
    the ``MetricsConfig`` field named ``metrics_port``, then ``run``."""
    try:
        config = load_config()
        configure_logging(config.log, name)
        if metrics_port is not None:
            serve_metrics(config.metrics.host, getattr(config.metrics, metrics_port),
                          key=f"COURIER_METRICS_{metrics_port.upper()}")
        service = build(config)
    except ConfigError as exc:
        config_exit(exc)
    run(service)
