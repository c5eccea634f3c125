"""Socket plumbing of the gateway on its own: the aiohttp hook the lingering close relies on
(the close itself is tested end to end in tests/e2e/test_close_codes.py, where the gateway is
its own process), the cleanup steps of a socket, the close-code table against ``CloseCode``,
and the socket budget configuration keys at and past their bounds."""

import asyncio
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import structlog
from aiohttp import web

from gateway.ws.sockets import run_all
from runtime.config import ConfigError, load_config
from schemas.errors import CloseCode

PROTOCOL_DOC = Path(__file__).parents[2] / "docs" / "protocol.md"


def test_aiohttp_still_ends_transports_through_the_hook() -> None:
    """``LingeringWebSocket`` overrides aiohttp's one place for ending the transport."""
    assert "_close_transport" in vars(web.WebSocketResponse)


async def test_every_cleanup_step_runs_and_a_cancellation_comes_last() -> None:
    ran: list[str] = []

    def step(name: str, error: BaseException | None = None) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            ran.append(name)
            if error is not None:
                raise error
        return run

    logger = structlog.get_logger("test")
    await run_all(logger, [("a", step("a", RuntimeError("boom"))), ("b", step("b"))])
    assert ran == ["a", "b"]
    ran.clear()
    with pytest.raises(asyncio.CancelledError):
        await run_all(logger, [("a", step("a", asyncio.CancelledError())),
                               ("b", step("b", ValueError("also"))), ("c", step("c"))])
    assert ran == ["a", "b", "c"]


def test_the_close_code_table_lists_every_close_code() -> None:
    text = PROTOCOL_DOC.read_text()
    section = text[text.index("### 7.3 Close codes"):text.index("### 7.4")]
    documented = {int(code) for code in re.findall(r"^\| (\d{4}) \|", section, re.MULTILINE)}
    # 1000 (the answer to a client's close) and 1006 (no close frame) are not codes it picks
    assert documented == {int(code) for code in CloseCode} | {1000, 1006}


@pytest.mark.parametrize(("key", "good", "bad"), [
    ("SEND_BUFFER_BYTES", ["65536", str(1024**3)], ["65535", str(1024**3 + 1), "x"]),
    ("SYNC_BUFFER_BYTES", ["65536", str(1024**3)], ["65535", str(1024**3 + 1), "-1"]),
    ("WRITE_STALL_S", ["0.5", "600"], ["0.49", "600.1", "0"]),
    ("CLOSE_TIMEOUT_S", ["0.1", "60"], ["0.09", "60.5", "-1"]),
])
def test_socket_budget_keys_at_and_past_their_bounds(key: str, good: list[str],
                                                     bad: list[str]) -> None:
    name = f"COURIER_GATEWAY_{key}"
    for value in good:
        assert load_config({name: value}).gateway is not None
    for value in bad:
        with pytest.raises(ConfigError, match=name):
            load_config({name: value})


@pytest.mark.parametrize("key", ["SEND_BUFFER_BYTES", "SYNC_BUFFER_BYTES"])
def test_a_budget_holds_at_least_one_frame(key: str) -> None:
    name = f"COURIER_GATEWAY_{key}"
    frame = {"COURIER_GATEWAY_MAX_FRAME_BYTES": str(128 * 1024)}
    assert load_config({**frame, name: str(128 * 1024)}).gateway is not None
    with pytest.raises(ConfigError, match=name):
        load_config({**frame, name: str(128 * 1024 - 1)})
