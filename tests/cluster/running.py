"""A cluster started by ``python -m infra.cluster up``, seen from a test: its state file (read
afresh each time: the supervisor rewrites it when it restarts a child), its processes killed
by PID, and what NATS says about leases and stream leaders (as the operator, ``admin``)."""

import os
import signal
from pathlib import Path

from nats.aio.client import Client
from nats.js.errors import NotFoundError

from client.sdk import Credentials, register_device
from infra.cluster import ProcessEntry, State, alive, read_state
from infra.nats_auth import NatsCredentials
from runtime.partitions import lease_key
from schemas.buckets import LEASES


class RunningCluster:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir

    def state(self) -> State:
        state = read_state(self.data_dir)
        if state is None or not alive(state.supervisor_pid, state.supervisor_started):
            raise RuntimeError(f"no cluster is running in {self.data_dir}")
        return state

    def process(self, name: str) -> ProcessEntry:
        entry = next((e for e in self.state().processes if e.name == name), None)
        if entry is None or not alive(entry.pid, entry.started):
            raise RuntimeError(f"{name} is not running in the cluster")
        return entry

    def signal(self, name: str, sig: signal.Signals) -> ProcessEntry:
        """Send ``sig`` to the running process ``name``; its entry (PID) at that moment."""
        entry = self.process(name)
        assert entry.pid is not None
        os.kill(entry.pid, sig)
        return entry

    def restarted(self, entry: ProcessEntry) -> bool:
        """Whether the supervisor runs ``entry``'s process again under another PID."""
        now = next((e for e in self.state().processes if e.name == entry.name), None)
        return now is not None and now.pid != entry.pid and alive(now.pid, now.started)

    @property
    def gateway_urls(self) -> list[str]:
        return self.state().gateway_urls

    async def register(self, user: str, device: str) -> Credentials:
        return await register_device(self.gateway_urls[0], user, device)

    async def admin(self) -> Client:
        state = self.state()
        return await NatsCredentials(Path(state.credentials)).connect(
            state.nats_urls, "admin", reconnect_time_wait=0.2)

    async def stream_leader(self, nc: Client, stream: str) -> str | None:
        info = await nc.jetstream(timeout=1).stream_info(stream)
        return info.cluster.leader if info.cluster is not None else None

    async def lease_holders(self, nc: Client, service: str) -> dict[int, str]:
        """Partition -> member id holding its ``service`` lease (partitions without one are
        left out)."""
        leases = await nc.jetstream(timeout=5).key_value(LEASES.name)
        holders = {}
        for partition in range(self.state().partitions):
            try:
                entry = await leases.get(lease_key(service, partition))
            except NotFoundError:  # a missing or deleted key: nobody holds it
                continue
            if entry.value:
                holders[partition] = entry.value.decode()
        return holders


def pid_of_member(member: str) -> int:
    """The PID inside a member id (``runtime.partitions.member_id``:
    ``<service>-<host>-<pid>-<random>``)."""
    return int(member.rsplit("-", 2)[1])
