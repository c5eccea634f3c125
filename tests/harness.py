"""A whole system started for one test: nats-server, storage worker, routers and gateways as
real processes, the way ``make run`` starts them: NATS with a credential per service."""

import secrets
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any

from nats.aio.client import Client

from client.sdk import CourierClient, Credentials, register_device
from infra.loadenv import lifted_limits
from infra.nats_auth import NatsCredentials
from infra.nats_server import NatsServer, free_port
from infra.processes import ServiceProcess, wait_http_ok

#: Longest a storage worker may take to start (a new Cassandra keyspace and its tables).
STORAGE_START_TIMEOUT_S = 120.0


def fresh_keyspace() -> str:
    """A Cassandra keyspace name no other test uses (the store creates it)."""
    return f"t_{uuid.uuid4().hex[:24]}"


def cassandra_env(contact_point: str) -> dict[str, str]:
    """Service environment for a system on the Cassandra store, in a keyspace of its own."""
    return {
        "COURIER_STORE_BACKEND": "cassandra",
        "COURIER_STORE_CASSANDRA_CONTACT_POINTS": contact_point,
        "COURIER_STORE_CASSANDRA_KEYSPACE": fresh_keyspace(),
    }


class System:
    """Processes of one test system; every process is stopped by ``stop``.

    Use it as a context manager, ``with System(root, env) as system:``: it is started inside
    and always stopped, also when starting fails half-way (``start`` stops what it started
    before it raises)."""

    def __init__(self, root: Path, extra_env: dict[str, str] | None = None) -> None:
        self.root = root
        self.logs = root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.nats_credentials = NatsCredentials.ensure(root / "nats-auth")
        self.nats = NatsServer(root / "nats", log_file=self.logs / "nats.log",
                               authorization=self.nats_credentials.authorization())
        self.secret = secrets.token_urlsafe(24)
        self.ticket_secret = secrets.token_urlsafe(24)
        self.extra_env = extra_env or {}
        self.storage: ServiceProcess | None = None
        self.push: ServiceProcess | None = None
        #: Started only by the tests that archive (``add_archive_worker``).
        self.archive: ServiceProcess | None = None
        self.routers: list[ServiceProcess] = []
        #: Storage workers beyond the first (``add_storage_worker``).
        self.more_storage: list[ServiceProcess] = []
        self.gateways: list[tuple[ServiceProcess, int]] = []
        #: Balancers (``add_balancer``) and their ports.
        self.balancers: list[tuple[ServiceProcess, int]] = []

    def env(self, credential: str, **overrides: str) -> dict[str, str]:
        """The environment of one service process, with its own NATS credential only."""
        return {
            "COURIER_NATS_URL": self.nats.url,
            **self.nats_credentials.env(credential),
            "COURIER_AUTH_SECRET": self.secret,
            "COURIER_AUTH_TICKET_SECRET": self.ticket_secret,
            "COURIER_AUTH_DEV_REGISTRATION": "true",
            "COURIER_STORE_SQLITE_PATH": str(self.root / "courier.db"),
            "COURIER_MEDIA_LOCAL_DIR": str(self.root / "media"),
            "COURIER_METRICS_ROUTER_PORT": "0",
            "COURIER_METRICS_STORAGE_PORT": "0",
            "COURIER_METRICS_PUSH_PORT": "0",
            "COURIER_METRICS_ARCHIVE_PORT": "0",
            "COURIER_RETENTION_PURGE_INTERVAL_S": "3600",
            "COURIER_LOG_LEVEL": "info",
            **lifted_limits(),
            "COURIER_GATEWAY_PRESENCE_TTL_S": "3",
            **self.extra_env,
            **overrides,
        }

    def start(self) -> "System":
        try:
            self.nats.start()
            self.storage = ServiceProcess("storage_worker", self.env("storage_worker"),
                                          self.logs / "storage_worker.log")
            self.storage.start()
            self.push = ServiceProcess("push_worker", self.env("push_worker"),
                                       self.logs / "push_worker.log")
            self.push.start()
            self.add_router()
            # the gateway's first requests (registrations) need the storage worker's RPC: on a
            # loaded machine Cassandra's session and migrations take longer than an RPC waits
            self.storage.wait_started(STORAGE_START_TIMEOUT_S)
            self.add_gateway()
        except BaseException:
            self.stop()
            raise
        return self

    def __enter__(self) -> "System":
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def add_router(self) -> ServiceProcess:
        router = ServiceProcess("router", self.env("router"),
                                self.logs / f"router-{len(self.routers)}.log")
        router.start()
        self.routers.append(router)
        return router

    def add_storage_worker(self) -> ServiceProcess:
        """Another storage worker on the same store (for SQLite: the same file)."""
        worker = ServiceProcess("storage_worker", self.env("storage_worker"),
                                self.logs / f"storage_worker-{len(self.more_storage) + 1}.log")
        worker.start()
        worker.wait_started(STORAGE_START_TIMEOUT_S)
        self.more_storage.append(worker)
        return worker

    def add_archive_worker(self, **overrides: str) -> ServiceProcess:
        """The archive worker on the system's store and blob store (once per system)."""
        assert self.archive is None, "one archive worker per system"
        self.archive = ServiceProcess("archive_worker", self.env("archive_worker", **overrides),
                                      self.logs / "archive_worker.log")
        self.archive.start()
        self.archive.wait_started(STORAGE_START_TIMEOUT_S)
        return self.archive

    def add_gateway(self, **overrides: str) -> str:
        port = free_port()
        gateway = ServiceProcess("gateway", self.env("gateway", COURIER_GATEWAY_PORT=str(port),
                                                     **overrides),
                                 self.logs / f"gateway-{len(self.gateways)}.log")
        gateway.start()
        self.gateways.append((gateway, port))
        wait_http_ok(f"http://127.0.0.1:{port}/healthz", 60, gateway)
        return f"http://127.0.0.1:{port}"

    def add_balancer(self, *, wait: bool = True, **overrides: str) -> str:
        """A balancer on a free port, its base URL; ``wait``: until its health is ok (NATS,
        and a gateway beating)."""
        port = free_port()
        balancer = ServiceProcess("balancer", self.env("balancer",
                                                       COURIER_BALANCER_PORT=str(port),
                                                       **overrides),
                                  self.logs / f"balancer-{len(self.balancers)}.log")
        balancer.start()
        self.balancers.append((balancer, port))
        url = f"http://127.0.0.1:{port}"
        if wait:
            wait_http_ok(f"{url}/healthz", 60, balancer)
        else:
            balancer.wait_started(60)
        return url

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.gateways[0][1]}"

    def gateway_url(self, index: int) -> str:
        return f"http://127.0.0.1:{self.gateways[index][1]}"

    async def device(self, user: str, device: str | None = None) -> Credentials:
        return await register_device(self.url, user, device)

    async def connect(self, creds: Credentials, url: str | None = None,
                      sync: bool = True) -> CourierClient:
        client = CourierClient(url or self.url, creds)
        await client.connect()
        if sync:
            await client.sync()
        return client

    async def nats_client(self, credential: str, **options: Any) -> Client:
        """A NATS connection as ``credential`` (``service`` for what an internal business
        service does, ``admin`` for operators' tools); the caller closes it."""
        return await self.nats_credentials.connect(self.nats.url, credential, **options)

    def permission_violations(self) -> list[str]:
        """nats-server's log lines of refused publishes and subscriptions."""
        log = self.logs / "nats.log"
        lines = log.read_text(errors="replace").splitlines() if log.exists() else []
        return [line for line in lines if " Violation " in line]

    def stop(self) -> None:
        for balancer, _ in self.balancers:
            balancer.stop()
        for gateway, _ in self.gateways:
            gateway.stop()
        for router in self.routers:
            router.stop()
        if self.push is not None:
            self.push.stop()
        if self.archive is not None:
            self.archive.stop()
        for worker in self.more_storage:
            worker.stop()
        if self.storage is not None:
            self.storage.stop()
        self.nats.stop()
