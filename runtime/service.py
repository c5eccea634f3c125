"""Process lifecycle: every service is started, drained and stopped the same way.

``main`` loads the configuration, configures logging, serves the worker's metrics and ``run``s
the service. ``run`` installs uvloop, starts the service, waits for SIGINT/SIGTERM, then drains
(stop taking new work, finish in-flight work) and stops (close connections). A second signal
stops at once.

Exit codes: 0 after a clean stop; 2 for a configuration error (the message names the key and
the reason, on stderr, without a traceback: a missing secret, a malformed value, a metrics
port that is taken); 1 when ``start`` failed half-way (logged as ``service_start_failed``,
after the parts that did start were drained and stopped), and also when drain and stop took
longer than ``COURIER_PROCESS_SHUTDOWN_TIMEOUT_S`` (logged as ``shutdown_timeout`` with the
stack of every task still running, so a hung shutdown says where it hung). Supervisors
(``make run``) restart on 1 and give up with the reason on 2.
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
#: Exit status of a process that could not start or stop (restarting may help).
EXIT_FAILED = 1


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


class ShutdownTimedOut(Exception):
    """Drain and stop did not end within the shutdown timeout."""


#: After the shutdown timeout, how long the cancelled drain or stop may take to unwind.
UNWIND_S = 1.0


def _awaiting(coro: object) -> list[str]:
    """The chain of coroutines ``coro`` is suspended in, outermost first (``Task.get_stack``
    gives only the outermost frame of a suspended coroutine)."""
    frames = []
    while (frame := getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)):
        frames.append(f"{frame.f_code.co_qualname}:{frame.f_lineno}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return frames


def _task_stacks() -> list[str]:
    """Where each task of this loop but the current one is waiting."""
    current = asyncio.current_task()
    return [f"{task.get_name()}: {' -> '.join(_awaiting(task.get_coro())) or 'not started'}"
            for task in asyncio.all_tasks() if task is not current]


async def _drain_then_stop(service: Service) -> None:
    try:
        await service.drain()
    finally:
        await service.stop()


async def _shutdown(service: Service, timeout_s: float) -> None:
    """Drain, then stop (even if draining failed), within ``timeout_s``. Past it, the stacks
    of every waiting task are logged before the shutdown is cancelled: the hung step is among
    them."""
    shutdown = asyncio.create_task(_drain_then_stop(service), name="shutdown")
    done, _ = await asyncio.wait({shutdown}, timeout=timeout_s)
    if shutdown in done:
        shutdown.result()  # re-raise what drain or stop raised
        return
    log.error("shutdown_timeout", timeout_s=timeout_s, tasks=_task_stacks())
    shutdown.cancel()
    await asyncio.wait({shutdown}, timeout=UNWIND_S)
    raise ShutdownTimedOut(f"drain and stop took longer than {timeout_s} s")


async def _serve(service: Service, shutdown_timeout_s: float) -> None:
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    try:
        await service.start()
    except ConfigError:
        await _shutdown(service, shutdown_timeout_s)
        raise
    except Exception as exc:
        log.exception("service_start_failed", error=repr(exc))
        await _shutdown(service, shutdown_timeout_s)
        raise StartFailed(repr(exc)) from exc
    log.info("service_started")
    await stopping.wait()
    log.info("service_draining")
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.remove_signal_handler(sig)
    await _shutdown(service, shutdown_timeout_s)
    log.info("service_stopped")


def config_exit(exc: ConfigError) -> NoReturn:
    """Print a configuration error (it names the key) and exit with ``EXIT_CONFIG``."""
    print(f"configuration error: {exc}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_CONFIG) from None


def run(service: Service, shutdown_timeout_s: float) -> None:
    """Run ``service`` until SIGINT or SIGTERM; exit 2 on a configuration error, 1 when it
    could not start or did not stop in time."""
    try:
        uvloop.run(_serve(service, shutdown_timeout_s))
    except ConfigError as exc:
        config_exit(exc)
    except StartFailed as exc:
        print(f"start failed: {exc} (see the log above)", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_FAILED) from None
    except ShutdownTimedOut as exc:
        print(f"shutdown failed: {exc} (see shutdown_timeout in the log)", file=sys.stderr,
              flush=True)
        raise SystemExit(EXIT_FAILED) from None


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
    run(service, config.process.shutdown_timeout_s)
