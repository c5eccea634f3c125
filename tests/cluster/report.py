"""The cluster results block of docs/reliability.md, rewritten by ``make test-cluster`` the way
``make chaos`` rewrites its own block (``chaos.report``: same table, its own markers)."""

import datetime
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from chaos.report import fault_notes, machine, table, write
from chaos.run import FaultResult, Settings

BEGIN: Final = "<!-- cluster-results:start -->"
END: Final = "<!-- cluster-results:end -->"
#: The load of every failover test.
SETTINGS: Final = Settings(rate_per_s=20.0, duration_s=30.0, senders=4, settle_s=120.0)

MEANINGS: Final = {
    "nats-leader-kill": "SIGKILL the NATS node that leads the partition stream (`MSGS_<p>`) of "
                        "the first sender's conversation; the supervisor starts it again",
    "cassandra-kill": "SIGKILL Cassandra node 3 (of 3, RF 3): reads and writes go on at "
                      "LOCAL_QUORUM on the other two; the supervisor starts it again",
    "gateway-kill": "SIGKILL gateway 1 (half the devices' sockets drop; they reconnect to the "
                    "other gateway); the supervisor starts it again",
    "storage-kill": "SIGKILL storage worker 1: its partition leases lapse and are taken over; "
                    "the supervisor starts it again",
    "router-kill": "SIGKILL router 1: its partition leases lapse and are taken over; the "
                   "supervisor starts it again",
    "gateway-drain": "SIGTERM gateway 1: it drains (its sockets are closed and their clients "
                     "connect to the other gateway), exits, and the supervisor starts it again",
}


def _commit() -> str:
    result = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=False)
    return result.stdout.strip() or "unknown"


def block(results: Sequence[FaultResult], now: datetime.datetime | None = None) -> str:
    when = (now or datetime.datetime.now(datetime.UTC)).isoformat(timespec="seconds")
    lines = [
        BEGIN,
        f"Command: `make test-cluster`, on commit {_commit()}  ",
        f"Date: {when}  ",
        f"Machine: {machine()}  ",
        "Cluster: `make cluster` (3 NATS nodes, streams and KV R3; 3 Cassandra nodes, RF 3, "
        "LOCAL_QUORUM; 2 gateways, 2 routers, 2 storage workers, push and archive workers)  ",
        f"Load: {SETTINGS.rate_per_s:g} messages/s from {SETTINGS.senders} senders, "
        f"{SETTINGS.duration_s:g} s of traffic per fault (the fault after the first third), "
        f"settle deadline {SETTINGS.settle_s:g} s.",
        "",
        *table(results, resumed=True),
        "",
        *fault_notes(results, MEANINGS),
        END,
    ]
    return "\n".join(lines) + "\n"


def write_results(path: Path, results: Sequence[FaultResult]) -> None:
    write(path, block(results), BEGIN, END)
