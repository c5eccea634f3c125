"""Failover on the loopback cluster (``make test-cluster``): each test streams messages through
the client library (``chaos.run.stream_around``: senders, online and offline recipients, a
settle phase), every device connecting through the balancer (before each connect it asks
``/v1/connect`` for a gateway and a ticket), around one fault injected by PID, and checks
the architecture's guarantees (``chaos.accounting``): nothing accepted is lost, nothing is
shown twice or out of order.
Each result goes into the cluster block of docs/reliability.md.

The tests run in file order on one cluster; each waits for the cluster to be healthy first.
The Cassandra kill is last: its node takes longest to come back.
"""

import secrets
import signal
import time
from collections.abc import Awaitable, Callable

import msgspec
import nats.errors
import pytest

from chaos.accounting import resumed_s, tally
from chaos.faults import Injection
from chaos.load import EventLog
from chaos.run import EVENTS_FILE, FaultResult, client_notes, stream_around
from runtime.config import Config
from schemas.ids import direct_conversation
from schemas.partitions import partition_of
from schemas.subjects import msgs_stream
from tests.cluster.report import SETTINGS
from tests.cluster.running import RunningCluster, pid_of_member
from tests.e2e.social_helpers import wait_for

pytestmark = pytest.mark.cluster

#: How long publishing may take to resume after the stream leader died (the issue's bound):
#: from the kill to the first ``accepted`` of a message first tried after it.
LEADER_RECOVERY_S = 10.0
TAKEOVER_TIMEOUT_S = 30.0
ELECTION_TIMEOUT_S = 20.0


def user_prefix(name: str) -> str:
    """Names of this run's users: a cluster may have served the same test before, and a
    resent ``client_id`` within the duplicate window gets the earlier message back."""
    return f"{name}-{secrets.token_hex(3)}-"


async def run_fault(cluster: RunningCluster, name: str,
                    inject: Callable[[Injection], Awaitable[None]],
                    results: list[FaultResult], prefix: str | None = None,
                    more_notes: Callable[[EventLog, Injection], list[str]] | None = None,
                    ) -> FaultResult:
    """Traffic around ``inject`` (which marks when the fault began); the tally, recorded
    with the notes of the run (and ``more_notes`` of its event log)."""
    log = EventLog()
    injection = Injection()
    receivers, settled = await stream_around(
        cluster.gateway_urls, cluster.register, lambda: inject(injection), SETTINGS, log,
        prefix=prefix or user_prefix(name), balancer=cluster.state().balancer_url)
    notes = [*injection.notes, *client_notes(receivers, log, settled),
             *(more_notes(log, injection) if more_notes is not None else [])]
    result = FaultResult(name, tally(list(log.sent.values()), log.shown, injection.began),
                         notes)
    if not result.clean:  # the event log beside the cluster's logs, as make chaos keeps it
        result.logs = cluster.data_dir / "logs"
        (result.logs / f"{name}-{EVENTS_FILE}").write_bytes(msgspec.json.encode(
            {"fault_at": injection.began, "sent": list(log.sent.values()),
             "shown": log.shown}))
    results.append(result)
    return result


def assert_clean(result: FaultResult) -> None:
    t = result.tally
    assert t.accepted > 0 and t.delivered == t.expected, result
    assert (t.lost, t.duplicates, t.out_of_order) == (0, 0, 0), result


async def test_nats_stream_leader_killed(healthy: RunningCluster,
                                         results: list[FaultResult]) -> None:
    name = "nats-leader-kill"
    prefix = user_prefix(name)
    partition = partition_of(Config().app, direct_conversation(f"{prefix}s0", f"{prefix}r0"),
                             healthy.state().partitions)
    stream = msgs_stream(partition)
    nc = await healthy.admin()

    async def inject(injection: Injection) -> None:
        leader = await healthy.stream_leader(nc, stream)
        assert leader is not None, f"{stream} has no leader"
        injection.began = time.monotonic()
        healthy.signal(f"nats-{leader}", signal.SIGKILL)
        new: list[str | None] = []

        async def elected() -> bool:
            try:
                new[:] = [await healthy.stream_leader(nc, stream)]
            except (OSError, TimeoutError, nats.errors.Error):  # mid-election
                return False
            return new[0] not in (None, leader)

        await wait_for(elected, ELECTION_TIMEOUT_S)
        injection.notes.append(f"killed {leader}, leader of {stream}; {new[0]} leads it "
                               f"{time.monotonic() - injection.began:.1f} s later")

    resumed: list[float | None] = []

    def on_the_partition(log: EventLog, injection: Injection) -> list[str]:
        """Publishing resumed on the killed leader's partition: the first sender's messages
        (the other senders' conversations may sit on partitions led elsewhere)."""
        mine = [sent for sent in log.sent.values() if sent.key[0] == f"{prefix}s0"]
        resumed.append(resumed_s(mine, injection.began))
        return [f"publishing on {stream} (the first sender's conversation) resumed "
                + ("never" if resumed[0] is None else f"{resumed[0]:.2f} s after the kill")]

    try:
        result = await run_fault(healthy, name, inject, results, prefix, on_the_partition)
    finally:
        await nc.close()
    assert_clean(result)
    assert resumed[0] is not None and resumed[0] < LEADER_RECOVERY_S, result


def _takeover(service: str, process: str) -> Callable[[RunningCluster],
                                                      Callable[[Injection], Awaitable[None]]]:
    """SIGKILL ``process`` (a member of ``service``) and wait until no partition lease is
    held by it any more."""
    def make(cluster: RunningCluster) -> Callable[[Injection], Awaitable[None]]:
        async def inject(injection: Injection) -> None:
            nc = await cluster.admin()
            try:
                pid = cluster.process(process).pid
                held = sorted(p for p, member in (await cluster.lease_holders(nc, service))
                              .items() if pid_of_member(member) == pid)
                injection.began = time.monotonic()
                cluster.signal(process, signal.SIGKILL)

                async def taken_over() -> bool:
                    holders = await cluster.lease_holders(nc, service)
                    return all(p in holders and pid_of_member(holders[p]) != pid for p in held)

                await wait_for(taken_over, TAKEOVER_TIMEOUT_S)
                injection.notes.append(
                    f"{process} held partitions {held}; all were held by another member "
                    f"{time.monotonic() - injection.began:.1f} s after the kill")
            finally:
                await nc.close()
        return inject
    return make


async def test_storage_worker_killed(healthy: RunningCluster,
                                     results: list[FaultResult]) -> None:
    inject = _takeover("storage", "storage_worker-1")(healthy)
    assert_clean(await run_fault(healthy, "storage-kill", inject, results))


async def test_router_killed(healthy: RunningCluster, results: list[FaultResult]) -> None:
    inject = _takeover("router", "router-1")(healthy)
    assert_clean(await run_fault(healthy, "router-kill", inject, results))


def _gateway_down(cluster: RunningCluster,
                  sig: signal.Signals) -> Callable[[Injection], Awaitable[None]]:
    async def inject(injection: Injection) -> None:
        injection.began = time.monotonic()
        entry = cluster.signal("gateway-1", sig)
        await wait_for(lambda: cluster.restarted(entry), TAKEOVER_TIMEOUT_S)
        injection.notes.append(f"gateway-1 ran again (a new process) "
                               f"{time.monotonic() - injection.began:.1f} s after the signal")
    return inject


async def test_gateway_killed(healthy: RunningCluster, results: list[FaultResult]) -> None:
    result = await run_fault(healthy, "gateway-kill", _gateway_down(healthy, signal.SIGKILL),
                             results)
    assert_clean(result)


async def test_gateway_drained(healthy: RunningCluster, results: list[FaultResult]) -> None:
    result = await run_fault(healthy, "gateway-drain", _gateway_down(healthy, signal.SIGTERM),
                             results)
    assert_clean(result)


async def test_cassandra_node_killed(healthy: RunningCluster,
                                     results: list[FaultResult]) -> None:
    async def inject(injection: Injection) -> None:
        injection.began = time.monotonic()
        entry = healthy.signal("cassandra-3", signal.SIGKILL)
        injection.notes.append(f"killed cassandra-3 (pid {entry.pid}); the traffic went on "
                               "with 2 of 3 replicas")

    assert_clean(await run_fault(healthy, "cassandra-kill", inject, results))
