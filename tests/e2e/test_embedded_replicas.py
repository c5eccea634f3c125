"""``make run --storage-workers N --routers N``: N processes of each service start (the first
on the metrics port the runner chose, the others on a free one), they share the partitions by
lease, and messages flow through them."""

import re
from pathlib import Path

from bench.observe import wait_leases_spread
from client.sdk import CourierClient, register_device
from infra.nats_auth import NatsCredentials
from infra.nats_server import free_port
from runtime.config import PartitionsConfig
from tests.e2e.test_supervisor import answers_within, metrics_ports, start_embedded

LEASE_WAIT_S = 60.0


async def test_extra_storage_workers_and_routers_share_the_partitions(tmp_path: Path) -> None:
    port = free_port()
    system = start_embedded(tmp_path, port, "--nats-port", str(free_port()),
                            "--storage-workers", "2", "--routers", "3")
    try:
        storage = [system.pid(name) for name in ("storage_worker", "storage_worker-2")]
        routers = [system.pid(name) for name in ("router", "router-2", "router-3")]
        assert len(set(storage + routers)) == 5
        assert (tmp_path / "logs" / "storage_worker-2.log").exists()
        nats_url = re.findall(r"NATS +(nats://\S+)", system.output)[0]
        credentials = NatsCredentials(tmp_path / "nats-auth")
        partitions = PartitionsConfig().count
        held = await wait_leases_spread(credentials, nats_url, "storage", partitions, 2,
                                        LEASE_WAIT_S)
        assert sorted(held) == sorted(storage)  # both workers consume, half each
        assert sum(held.values()) == partitions and max(held.values()) == partitions // 2
        held = await wait_leases_spread(credentials, nats_url, "router", partitions, 3,
                                        LEASE_WAIT_S)
        assert set(held) <= set(routers) and len(held) >= 2
        assert sum(held.values()) == partitions

        url = f"http://127.0.0.1:{port}"
        alice = await register_device(url, "alice")
        bob = await register_device(url, "bob")
        async with CourierClient(url, alice) as sender, CourierClient(url, bob) as receiver:
            await receiver.sync()
            sent = [await sender.send("bob", f"m{i}".encode()) for i in range(20)]
            got = [(await receiver.next_message()).message_id for _ in sent]
            assert got == [accepted.message_id for accepted in sent]
        for service, metrics in metrics_ports(system.output).items():
            assert await answers_within(f"http://127.0.0.1:{metrics}/metrics"), service
        assert not re.search(r"^\S+ (exited|restarted) ", system.output, re.MULTILINE), \
            system.output
    finally:
        assert system.stop() == 0, system.output
