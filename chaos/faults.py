"""The faults, each injected into a running system (``tests.harness.System``) by the PIDs of
the processes it started: ``ServiceProcess.kill``/``start``, ``os.kill`` with SIGKILL, SIGSTOP
and SIGCONT. Blocking steps (a restart that waits for health) run in a thread so the clients'
event loop keeps running.

``inject`` returns when the fault is over (the service is back); it records in ``notes``
anything the report should say (a service that exited during the fault, for instance).
"""

import asyncio
import os
import signal
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from chaos.load import CONNECTION_ERRORS
from infra.processes import ServiceProcess, wait_http_ok
from runtime.config import NatsConfig
from tests.harness import System

#: The JetStream ack wait the suite's systems run with (``COURIER_NATS_ACK_WAIT_S``, set
#: explicitly so the pause is longer than it whatever the environment says).
ACK_WAIT_S: Final = NatsConfig().ack_wait_s
HEALTH_TIMEOUT_S: Final = 60.0
SUPERVISE_POLL_S: Final = 0.2
#: How long the store gets to answer again once its outage is over.
STORE_PROBE_S: Final = 30.0
#: How long taking the store's lock may wait for another connection to let go.
LOCK_TIMEOUT_S: Final = 5.0


@dataclass(frozen=True)
class Timing:
    #: How long a killed service stays down before it is started again.
    restart_delay_s: float = 1.0
    #: How long a SIGSTOPped service stays stopped: past the ack wait, so JetStream
    #: redelivers what it held.
    pause_s: float = ACK_WAIT_S * 1.6
    #: How long the store stays unavailable.
    outage_s: float = 30.0
    #: Delay before a storage worker that exited during the outage is started again.
    supervisor_delay_s: float = 1.0


@dataclass
class Injection:
    """What happened: when the fault began (``time.monotonic()``) and remarks for the report."""

    began: float = 0.0
    notes: list[str] = field(default_factory=list)


Inject = Callable[[System, Timing, Injection], Awaitable[None]]


@dataclass(frozen=True)
class Fault:
    name: str
    #: What the fault does, for docs/reliability.md.
    meaning: str
    inject: Inject


def _service(system: System, name: str) -> ServiceProcess:
    """The running process of ``name`` (router, storage_worker, push_worker, gateway)."""
    process = {"router": system.routers[0] if system.routers else None,
               "storage_worker": system.storage, "push_worker": system.push,
               "gateway": system.gateways[0][0] if system.gateways else None}[name]
    if process is None or process.pid is None or not process.running():
        raise RuntimeError(f"{name} is not running: cannot inject a fault into it")
    return process


def _kill_and_restart(name: str) -> Inject:
    async def inject(system: System, timing: Timing, injection: Injection) -> None:
        process = _service(system, name)
        injection.began = time.monotonic()
        process.kill()
        await asyncio.sleep(timing.restart_delay_s)
        await asyncio.to_thread(process.start)
        if name == "gateway":
            port = system.gateways[0][1]
            await asyncio.to_thread(wait_http_ok, f"http://127.0.0.1:{port}/healthz",
                                    HEALTH_TIMEOUT_S, process)
    return inject


async def _kill_nats(system: System, timing: Timing, injection: Injection) -> None:
    pid = system.nats.pid
    if pid is None:
        raise RuntimeError("nats-server is not running: cannot inject a fault into it")
    injection.began = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    await asyncio.to_thread(system.nats.stop)  # reaps the killed process
    await asyncio.sleep(timing.restart_delay_s)
    await asyncio.to_thread(system.nats.start)  # same port, same store directory


def _pause(name: str) -> Inject:
    async def inject(system: System, timing: Timing, injection: Injection) -> None:
        pid = _service(system, name).pid
        assert pid is not None
        injection.began = time.monotonic()
        os.kill(pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(timing.pause_s)
        finally:
            os.kill(pid, signal.SIGCONT)
    return inject


def lock_database(path: Path, timeout_s: float = LOCK_TIMEOUT_S) -> sqlite3.Connection:
    """Hold an exclusive lock on the SQLite database at ``path`` until the returned connection
    is closed: every other connection's reads and writes fail with "database is locked".
    Needs no other connection open (in WAL mode an exclusive locking mode takes over the
    shared-memory index only then)."""
    holder = sqlite3.connect(path, timeout=timeout_s, isolation_level=None)
    try:
        holder.execute("PRAGMA locking_mode=EXCLUSIVE")
        holder.execute("BEGIN EXCLUSIVE")
    except sqlite3.Error:
        holder.close()
        raise
    return holder


async def _store_outage(system: System, timing: Timing, injection: Injection) -> None:
    storage = _service(system, "storage_worker")
    database = Path(system.env("storage_worker")["COURIER_STORE_SQLITE_PATH"])
    injection.began = time.monotonic()
    storage.kill()
    exits: list[int | None] = []
    holder = lock_database(database)
    try:
        storage.start()
        end = time.monotonic() + timing.outage_s
        while time.monotonic() < end:
            if not storage.running():  # restarted after a delay, as a supervisor would
                exits.append(storage.returncode())
                await asyncio.sleep(timing.supervisor_delay_s)
                storage.start()
            await asyncio.sleep(SUPERVISE_POLL_S)
    finally:
        holder.close()
    released = time.monotonic()
    if not storage.running():
        exits.append(storage.returncode())
        storage.start()
    if await _store_answers(system, released + STORE_PROBE_S):
        injection.notes.append(f"the store answered again {time.monotonic() - released:.1f} s "
                               "after the lock was released")
    else:
        injection.notes.append(
            f"the store did not answer within {STORE_PROBE_S:g} s after the lock was released "
            f"(storage worker process {'alive' if storage.running() else 'gone'})")
    if exits:
        injection.notes.append(
            f"the storage worker exited {len(exits)} time(s) while the store was locked "
            f"(exit codes {sorted(set(exits), key=str)}); the suite started it again after "
            f"{timing.supervisor_delay_s:g} s each time, as a supervisor would")
    else:
        injection.notes.append("the storage worker process did not exit while the store "
                               "was locked")


async def _store_answers(system: System, deadline: float) -> bool:
    """Register a probe device (a round trip through the storage worker) until it works or
    ``deadline``."""
    while time.monotonic() < deadline:
        try:
            async with asyncio.timeout(max(deadline - time.monotonic(), 0.1)):
                await system.device("chaos-probe", "chaos-probe")
            return True
        except (*CONNECTION_ERRORS, RuntimeError):  # RuntimeError: the store refused
            await asyncio.sleep(SUPERVISE_POLL_S)
    return False


FAULTS: Final = {fault.name: fault for fault in (
    Fault("router-kill", "SIGKILL the router, start it again after the restart delay",
          _kill_and_restart("router")),
    Fault("storage-kill", "SIGKILL the storage worker, start it again after the restart delay",
          _kill_and_restart("storage_worker")),
    Fault("push-kill", "SIGKILL the push worker, start it again after the restart delay",
          _kill_and_restart("push_worker")),
    Fault("gateway-kill", "SIGKILL the first of the two gateways (half the devices' sockets "
          "drop; they reconnect to it or to the second gateway), start it again on its port "
          "after the restart delay", _kill_and_restart("gateway")),
    Fault("nats-kill", "SIGKILL nats-server, start it again on the same port and store "
          "directory after the restart delay (every service reconnects)", _kill_nats),
    Fault("router-stop", "SIGSTOP the router for the pause (longer than the JetStream ack "
          "wait, so JetStream redelivers what it held), then SIGCONT", _pause("router")),
    Fault("storage-stop", "SIGSTOP the storage worker for the pause, then SIGCONT",
          _pause("storage_worker")),
    Fault("store-outage", "SIGKILL the storage worker, lock the SQLite database exclusively "
          "from another process (every read and write fails with \"database is locked\"), "
          "start the worker again and keep the lock for the outage; a worker that exits "
          "meanwhile is started again after the supervisor delay", _store_outage),
)}
