"""Process lifecycle: every service is started, drained and stopped the same way.

``run`` installs uvloop, starts the service, waits for SIGINT/SIGTERM, then drains (stop taking
new work, finish in-flight work) and stops (close connections). A second signal stops at once.
"""

import asyncio
import signal
from typing import Protocol

import structlog
import uvloop

log = structlog.get_logger(__name__)


class Service(Protocol):
    """Explicit async lifecycle of a service process."""

    async def start(self) -> None:
        """Connect to dependencies and begin work. Raises if the service cannot run."""

    async def drain(self) -> None:
        """Stop taking new work and finish what is in flight."""

    async def stop(self) -> None:
        """Release every resource. Called once, after ``drain``, even if it failed."""


async def _serve(service: Service) -> None:
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    await service.start()
    log.info("service_started")
    await stopping.wait()
    log.info("service_draining")
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.remove_signal_handler(sig)
    try:
        await service.drain()
    finally:
        await service.stop()
    log.info("service_stopped")


def run(service: Service) -> None:
    """Run ``service`` until SIGINT or SIGTERM."""
    uvloop.run(_serve(service))
