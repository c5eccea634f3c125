"""Real push endpoints for tests: an SNS-compatible server (``moto_server``) and a local webhook
receiver, both recording what they were sent so tests read it back; plus helpers to register
push tokens and to wait until the push worker has settled every job.

Registered as a pytest plugin by ``tests/conftest.py``.
"""

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import pytest
from aiohttp import web

from infra.nats_server import free_port
from infra.processes import terminate
from schemas.push import PUSH_CONSUMER, PUSH_STREAM
from tests.harness import System

AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1"}
WEBHOOK_SECRET = "w" * 40
SERVICE_SECRET = "s" * 40
ADMIN_SECRET = "a" * 40


class MotoServer:
    """``moto_server`` on a free loopback port; SNS platform applications and what was
    published to their endpoints."""

    def __init__(self, log_file: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log_file = log_file
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        binary = Path(sys.executable).parent / "moto_server"
        with self._log_file.open("ab") as log:
            self._process = subprocess.Popen(
                [str(binary), "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"moto_server exited: see {self._log_file}")
            try:
                with urllib.request.urlopen(f"{self.url}/moto-api/data.json", timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"moto_server not ready after {timeout}s")

    def stop(self) -> None:
        if self._process is not None:
            terminate(self._process, grace=10)

    def client(self) -> Any:
        return boto3.session.Session().client(
            "sns", region_name=AWS_ENV["AWS_DEFAULT_REGION"], endpoint_url=self.url,
            aws_access_key_id=AWS_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=AWS_ENV["AWS_SECRET_ACCESS_KEY"])

    def platform_application(self, name: str, platform: str) -> str:
        reply = self.client().create_platform_application(
            Name=name, Platform=platform, Attributes={"PlatformCredential": "test-credential"})
        return str(reply["PlatformApplicationArn"])

    def endpoints(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"{self.url}/moto-api/data.json", timeout=5) as response:
            data = json.load(response)
        endpoints: list[dict[str, Any]] = data["sns"]["PlatformEndpoint"]
        return endpoints

    def messages(self, token: str) -> list[dict[str, Any]]:
        """Every message published to the endpoints of ``token``, as the JSON structure."""
        return [json.loads(text) for endpoint in self.endpoints()
                if endpoint["token"] == token for text in endpoint["messages"].values()]

    def endpoint_arn(self, token: str) -> str:
        return next(str(e["arn"]) for e in self.endpoints() if e["token"] == token)


@dataclass
class Delivery:
    """One request the webhook receiver got."""

    headers: dict[str, str]
    body: bytes
    received_at: float = field(default_factory=time.monotonic)

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class WebhookReceiver:
    """An aiohttp server on its own thread and loop; answers 200 unless told otherwise for a
    token (``status``) or for the next N requests of a token (``fail_next``)."""

    url: str = ""
    deliveries: list[Delivery] = field(default_factory=list)
    status: dict[str, int] = field(default_factory=dict)
    fail_next: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def for_token(self, token: str) -> list[Delivery]:
        with self._lock:
            return [d for d in self.deliveries if d.json["token"] == token]

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        token = json.loads(body)["token"]
        with self._lock:
            self.deliveries.append(Delivery(dict(request.headers), body))
            if self.fail_next.get(token, 0) > 0:
                self.fail_next[token] -= 1
                return web.Response(status=503)
            return web.Response(status=self.status.get(token, 200))


class _Thread:
    """The receiver's thread, loop and stop signal."""

    def __init__(self, receiver: WebhookReceiver) -> None:
        self.receiver = receiver
        self.ready = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stopping: asyncio.Event | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def stop(self) -> None:
        if self.loop is not None and self.stopping is not None:
            self.loop.call_soon_threadsafe(self.stopping.set)
        self.thread.join(10)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.stopping = asyncio.Event()
        receiver = self.receiver
        app = web.Application()
        app.router.add_post("/push", receiver.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        site = web.TCPSite(runner, "127.0.0.1", port)
        await site.start()
        receiver.url = f"http://127.0.0.1:{port}/push"
        self.ready.set()
        await self.stopping.wait()
        await runner.cleanup()


@pytest.fixture(scope="session")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """One ``moto_server`` for the session (tests use distinct tokens)."""
    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def webhook() -> Iterator[WebhookReceiver]:
    """One webhook receiver for the session (tests use distinct tokens)."""
    receiver = WebhookReceiver()
    server = _Thread(receiver)
    server.thread.start()
    assert server.ready.wait(10), "webhook receiver did not start"
    try:
        yield receiver
    finally:
        server.stop()


def push_env(moto: MotoServer, webhook: WebhookReceiver, **overrides: str) -> dict[str, str]:
    """Service environment routing fcm/apns to SNS (moto) and webhook/webpush to the receiver."""
    return {
        **AWS_ENV,
        "COURIER_PUSH_PROVIDERS": "fcm=sns,apns=sns,apns_sandbox=log,webhook=webhook,"
                                  "webpush=webhook",
        "COURIER_PUSH_SNS_ENDPOINT_URL": moto.url,
        "COURIER_PUSH_SNS_FCM_ARN": moto.platform_application("courier-fcm", "GCM"),
        "COURIER_PUSH_SNS_APNS_ARN": moto.platform_application("courier-apns", "APNS"),
        "COURIER_PUSH_WEBHOOK_URL": webhook.url,
        "COURIER_PUSH_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "COURIER_PUSH_COLLAPSE_WINDOW_S": "1.0",
        "COURIER_PUSH_RETRY_BASE_S": "0.2",
        "COURIER_PUSH_RETRY_MAX_S": "0.5",
        "COURIER_PUSH_MAX_ATTEMPTS": "3",
        "COURIER_AUTH_SERVICE_SECRET": SERVICE_SECRET,
        "COURIER_AUTH_ADMIN_SECRET": ADMIN_SECRET,
        **overrides,
    }


async def register_push(base_url: str, token: str, platform: str,
                        push_token: str) -> dict[str, Any]:
    """``PUT /v1/devices/me/push`` with a device token."""
    async with aiohttp.ClientSession() as session:
        async with session.put(f"{base_url}/v1/devices/me/push",
                               headers={"Authorization": f"Bearer {token}"},
                               json={"platform": platform, "token": push_token}) as response:
            assert response.status == 200, await response.text()
            body: dict[str, Any] = await response.json()
            return body


async def wakeup_details(base_url: str, token: str, wakeup: str) -> tuple[int, dict[str, Any]]:
    """What the app does when a wake-up arrives: trade its id for the details, with the
    device's token. (status, decoded body)."""
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base_url}/v1/devices/me/push/wakeups/{wakeup}",
                               headers={"Authorization": f"Bearer {token}"}) as response:
            body: dict[str, Any] = await response.json(content_type=None)
            return response.status, body


async def wait_until(condition: Any, within_s: float = 15.0, interval: float = 0.05) -> None:
    """Poll ``condition`` (sync or async) until it is truthy."""
    async with asyncio.timeout(within_s):
        while True:
            result = condition()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return
            await asyncio.sleep(interval)


async def push_settled(system: System) -> bool:
    """Whether the push worker has no job left: none pending, none held unacknowledged."""
    nc = await system.nats_client("admin")
    try:
        info = await nc.jetstream().consumer_info(PUSH_STREAM, PUSH_CONSUMER)
        return bool(info.num_pending == 0 and info.num_ack_pending == 0)
    finally:
        await nc.close()


async def nats_request(system: System, credential: str, subject: str,
                       body: Any) -> dict[str, Any]:
    """What an internal service (or an admin tool) does: a JSON request/reply on ``subject``
    with its own credential."""
    nc = await system.nats_client(credential)
    try:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        reply = await nc.request(subject, data, timeout=15)
        decoded: dict[str, Any] = json.loads(reply.data)
        return decoded
    finally:
        await nc.close()
