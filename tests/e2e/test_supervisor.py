"""``make run``'s supervisor, run as ``python -m infra.embedded`` with its console read here:
each service (nats-server included) SIGKILLed comes back and nothing acknowledged is lost; a
second system runs beside the first; taken ports and configuration errors stop with exit 2
and the reason on the console."""

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from client.sdk import ClientError, CourierClient, Credentials, register_device
from infra.nats_server import free_port
from infra.processes import http_ok

T = TypeVar("T")
START_TIMEOUT_S = 90.0
RECOVERY_TIMEOUT_S = 60.0


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without COURIER_ variables (the supervisor sets its own)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("COURIER_")}
    return {**env, **extra}


class Embedded:
    """One ``python -m infra.embedded`` process and the lines it printed."""

    def __init__(self, data_dir: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "infra.embedded", "--data-dir", str(data_dir), *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env=env or clean_env())
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def output(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def wait_line(self, pattern: str, timeout: float, after: int = 0) -> re.Match[str]:
        """The first line from index ``after`` on matching ``pattern``; fails with the whole
        console output if none appears in time or the process ends first."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines[after:]:
                    match = regex.search(line)
                    if match:
                        return match
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.process.poll() is not None
                                      and not self._reader.is_alive()):
                    raise AssertionError(f"no line matching {pattern!r}; console:\n"
                                         + "\n".join(self.lines) + self.log_tails())
                self._changed.wait(min(remaining, 0.5))

    def log_tails(self, lines: int = 15) -> str:
        """The last lines of every service's log (a hung service says why there)."""
        tails = []
        for log_file in sorted((self.data_dir / "logs").glob("*.log")):
            tail = log_file.read_text(errors="replace").splitlines()[-lines:]
            tails.append(f"\n--- {log_file.name} ---\n" + "\n".join(row[:300] for row in tail))
        return "".join(tails)

    def mark(self) -> int:
        with self._changed:
            return len(self.lines)

    def pid(self, service: str) -> int:
        """The pid of the service's latest (re)start."""
        with self._changed:
            found = [m for line in self.lines
                     if (m := re.search(rf"^{re.escape(service)} (?:re)?started \(pid (\d+)\)",
                                        line))]
        return int(found[-1].group(1))

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running; console:\n{self.output}") from None

    def stop(self) -> int:
        """Ctrl-C, as a user would; the supervisor stops its children."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return self.process.returncode


def start_embedded(data_dir: Path, port: int, *args: str) -> Embedded:
    system = Embedded(data_dir, "--port", str(port), *args)
    try:
        system.wait_line(r"^Courier is running", START_TIMEOUT_S)
    except BaseException:
        system.stop()
        raise
    return system


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Embedded, str]]:
    port = free_port()
    system = start_embedded(tmp_path_factory.mktemp("embedded"), port,
                            "--nats-port", str(free_port()))
    try:
        yield system, f"http://127.0.0.1:{port}"
    finally:
        assert system.stop() == 0, system.output
        assert "stopping..." in system.output


async def retry(action: Callable[[], Awaitable[T]], timeout: float = RECOVERY_TIMEOUT_S,
                recover: Callable[[], Awaitable[None]] | None = None) -> T:
    """``action()`` until it succeeds (a service may still be coming back)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await action()
        except (ClientError, OSError, TimeoutError, ConnectionError) as exc:
            if time.monotonic() > deadline:
                raise AssertionError(f"still failing after {timeout}s: {exc!r}") from exc
            await asyncio.sleep(0.5)
            if recover is not None:
                try:
                    await recover()
                except (ClientError, OSError, TimeoutError, ConnectionError):
                    pass


async def reconnect(client: CourierClient) -> None:
    await client.abort()
    await client.connect()
    await client.sync()


def metrics_ports(console: str) -> dict[str, int]:
    return {m.group(2): int(m.group(1))
            for m in re.finditer(r"metrics +http://127\.0\.0\.1:(\d+)/metrics \((\w+)\)",
                                 console)}


async def answers_within(url: str, timeout: float = RECOVERY_TIMEOUT_S) -> bool:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(http_ok, url):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.2)
    return True


@pytest.mark.timeout(240)
@pytest.mark.parametrize(("service", "sig"), [
    ("router", signal.SIGKILL), ("storage_worker", signal.SIGKILL),
    ("push_worker", signal.SIGKILL), ("gateway", signal.SIGKILL),
    ("nats-server", signal.SIGKILL),
    ("gateway", signal.SIGTERM),  # drains and exits 0, but nobody asked it to stop
], ids=["router", "storage_worker", "push_worker", "gateway", "nats-server", "gateway-sigterm"])
async def test_a_killed_service_comes_back_and_nothing_acknowledged_is_lost(
        embedded: tuple[Embedded, str], service: str, sig: signal.Signals) -> None:
    system, url = embedded
    tag = f"{service.replace('_', '-')}-{uuid.uuid4().hex[:6]}"
    alice_creds: Credentials = await register_device(url, f"alice-{tag}")
    bob_creds = await register_device(url, f"bob-{tag}")
    alice = CourierClient(url, alice_creds)
    bob = CourierClient(url, bob_creds)
    await alice.connect()
    await bob.connect()
    await bob.sync()
    try:
        before = [await alice.send(bob_creds.user, f"before {i}".encode()) for i in range(10)]
        mark = system.mark()
        os.kill(system.pid(service), sig)
        code = -9 if sig == signal.SIGKILL else 0
        # in a thread: the clients keep answering (a drained gateway's close frames) meanwhile
        await asyncio.to_thread(
            system.wait_line, rf"^{re.escape(service)} exited \({code}\).*restarting in", 30,
            mark)
        await asyncio.to_thread(system.wait_line, rf"^{re.escape(service)} restarted \(pid \d+\)",
                                RECOVERY_TIMEOUT_S, mark)
        after_id = uuid.uuid4().hex  # one client id for every retry: sent once

        async def send_after() -> str:
            return (await alice.send(bob_creds.user, b"after", client_id=after_id)).message_id

        after = await retry(send_after, recover=lambda: reconnect(alice))
        expected = {a.message_id for a in before} | {after}
        received: set[str] = set()
        async with asyncio.timeout(RECOVERY_TIMEOUT_S):
            while not expected <= received:
                if bob.closed:
                    await retry(lambda: reconnect(bob))
                try:
                    received.add((await bob.next_message(timeout=2)).message_id)
                except TimeoutError:
                    continue
        await retry(bob.sync)  # the storage worker answers again
        port = metrics_ports(system.output).get(service)
        if port is not None:  # a worker: its new process serves metrics on the same port
            assert await answers_within(f"http://127.0.0.1:{port}/metrics")
    finally:
        await alice.abort()
        await bob.abort()


async def test_make_run_starts_the_balancer_and_clients_connect_through_it(
        embedded: tuple[Embedded, str]) -> None:
    system, url = embedded
    found = re.search(r"balancer +(http://127\.0\.0\.1:\d+) ", system.output)
    assert found, system.output
    balancer = found.group(1)
    alice = CourierClient(url, await register_device(url, "alice-via-balancer"),
                          balancer=balancer)
    bob_creds = await register_device(url, "bob-via-balancer")
    bob = CourierClient(url, bob_creds, balancer=balancer)
    try:
        # healthy once it has seen the gateway's beat
        assert await answers_within(f"{balancer}/healthz"), system.log_tails()
        await alice.connect()
        await bob.connect()
        await bob.sync()
        accepted = await alice.send(bob_creds.user, b"through the balancer")
        assert (await bob.next_message()).message_id == accepted.message_id
        assert alice.gateway == bob.gateway is not None
    finally:
        await alice.close()
        await bob.close()


async def test_a_second_system_runs_beside_the_first(embedded: tuple[Embedded, str],
                                                     tmp_path: Path) -> None:
    first, first_url = embedded
    port = free_port()
    second = start_embedded(tmp_path / "second", port)
    try:
        url = f"http://127.0.0.1:{port}"
        nats_urls = re.findall(r"NATS +(nats://\S+)", first.output + "\n" + second.output)
        assert len(set(nats_urls)) == 2  # each its own nats-server
        assert not set(metrics_ports(first.output).values()) & set(
            metrics_ports(second.output).values())
        alice = await register_device(url, "alice")
        bob = await register_device(url, "bob")
        async with CourierClient(url, alice) as sender, CourierClient(url, bob) as receiver:
            await receiver.sync()
            accepted = await sender.send("bob", b"next door")
            assert (await receiver.next_message()).message_id == accepted.message_id
        assert await asyncio.to_thread(http_ok, f"{first_url}/healthz"), first.log_tails()
    finally:
        assert second.stop() == 0, second.output


async def test_one_data_directory_serves_one_system(embedded: tuple[Embedded, str]) -> None:
    first, _ = embedded
    again = Embedded(first.data_dir, "--port", str(free_port()))
    assert again.wait_exit(60) == 2
    again.stop()
    assert "--data-dir" in again.output and "in use by another make run" in again.output


@pytest.mark.parametrize("flag", ["--port", "--nats-port", "--metrics-port-base"])
def test_a_taken_port_given_by_flag_exits_2_naming_it(tmp_path: Path, flag: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = {"--port": [], "--nats-port": ["--port", str(free_port())],
                "--metrics-port-base": ["--port", str(free_port())]}[flag]
        system = Embedded(tmp_path, *args, flag, str(port))
        assert system.wait_exit(60) == 2
        system.stop()
    assert f"{flag} {port}: the port is taken" in system.output
    assert "Traceback" not in system.output
    assert not (tmp_path / "logs" / "gateway.log").exists()  # nothing was started


def test_a_configuration_error_under_the_supervisor_prints_the_key_and_exits_2(
        tmp_path: Path) -> None:
    system = Embedded(tmp_path, "--port", str(free_port()), "--nats-port", str(free_port()),
                      env=clean_env(COURIER_GATEWAY_PROT="1"))
    assert system.wait_exit(90) == 2
    system.stop()
    assert re.search(r"^  \w+: configuration error: COURIER_GATEWAY_PROT: unknown "
                     r"configuration key$", system.output, re.MULTILINE), system.output
    assert "restarted" not in system.output  # not restarted in a loop
    assert "stopping..." in system.output
