"""A service's drain and stop are bounded: past the shutdown timeout the process says which
task hung (its stack) and fails, instead of waiting for a supervisor's SIGKILL."""

import asyncio

import pytest
import structlog.testing

from runtime.config import ConfigError, load_config
from runtime.service import ShutdownTimedOut, _shutdown


class Stuck:
    """A service whose stop never returns (as a close waiting on a dead peer would)."""

    def __init__(self) -> None:
        self.drained = False
        self.stop_cancelled = False
        self.stopped = False

    async def start(self) -> None:
        pass

    async def drain(self) -> None:
        self.drained = True

    async def stop(self) -> None:
        try:
            await self.wait_for_a_peer_that_is_gone()
        except asyncio.CancelledError:
            self.stop_cancelled = True
            raise

    async def wait_for_a_peer_that_is_gone(self) -> None:
        await asyncio.Event().wait()


class Clean(Stuck):
    async def stop(self) -> None:
        pass


class FailingDrain(Stuck):
    async def drain(self) -> None:
        raise RuntimeError("drain broke")

    async def stop(self) -> None:
        self.stopped = True


async def test_a_hung_stop_is_cancelled_and_its_stack_logged() -> None:
    service = Stuck()
    with structlog.testing.capture_logs() as logs, pytest.raises(ShutdownTimedOut):
        await _shutdown(service, 0.2)
    assert service.drained and service.stop_cancelled
    [event] = [entry for entry in logs if entry["event"] == "shutdown_timeout"]
    [stack] = [task for task in event["tasks"] if task.startswith("shutdown:")]
    assert "Stuck.wait_for_a_peer_that_is_gone" in stack


async def test_a_clean_shutdown_returns() -> None:
    await _shutdown(Clean(), 5)


async def test_stop_runs_after_a_failed_drain_and_the_error_is_raised() -> None:
    service = FailingDrain()
    with pytest.raises(RuntimeError, match="drain broke"):
        await _shutdown(service, 5)
    assert service.stopped


@pytest.mark.parametrize("value", ["1", "3600"])
def test_shutdown_timeout_at_its_bounds(value: str) -> None:
    assert load_config({"COURIER_PROCESS_SHUTDOWN_TIMEOUT_S": value}).process.shutdown_timeout_s \
        == float(value)


@pytest.mark.parametrize("value", ["0.99", "3600.5", "0", "-1", "soon"])
def test_a_bad_shutdown_timeout_names_the_key(value: str) -> None:
    with pytest.raises(ConfigError, match="COURIER_PROCESS_SHUTDOWN_TIMEOUT_S"):
        load_config({"COURIER_PROCESS_SHUTDOWN_TIMEOUT_S": value})
