"""The push provider contract: every ``PushProvider`` must pass every test here.

Each backend is real: SNS is ``moto_server`` (read back from ``/moto-api/data.json``), the
webhook a local aiohttp receiver, the log provider structlog's captured output.
"""

import json
import time
from collections.abc import AsyncIterator, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import pytest
import structlog

from infra.nats_server import free_port
from push_worker.providers.base import Outcome, PushProvider, PushTarget
from push_worker.providers.log import LogProvider
from push_worker.providers.sns import SnsProvider
from push_worker.providers.webhook import SIGNATURE_HEADER, WebhookProvider, verify_signature
from runtime.config import PushConfig
from schemas.push import WakeUp, collapse_key, new_wakeup_id
from tests.pushkit import (  # noqa: F401  (fixtures)
    AWS_ENV,
    WEBHOOK_SECRET,
    MotoServer,
    WebhookReceiver,
    moto,
    webhook,
)

PROVIDERS = ["sns", "webhook", "log"]
#: Providers with a remote service that can refuse a token or be unreachable.
REMOTE = ["sns", "webhook"]
SECRET_BODY = "the plaintext nobody may see"


@dataclass
class Backend:
    """A provider, the platform it serves, and how to read back what it sent."""

    provider: PushProvider
    platform: str
    sent: Callable[[str], list[dict[str, Any]]]  # token -> wake-ups received
    reject: Callable[[str], None] | None  # make the service refuse a token
    transient: Callable[[], PushProvider] | None  # a provider whose service is failing


def wake(count: int = 3) -> WakeUp:
    return WakeUp(id=new_wakeup_id(), count=count,
                  collapse_key=collapse_key("dev", "d:alice:bob"))


def target(backend: Backend, token: str, registered_at: int = 1) -> PushTarget:
    return PushTarget(device=f"dev-{token}", user="bob", app="app", platform=backend.platform,
                      token=token, registered_at=registered_at)


def unique(prefix: str) -> str:
    return f"{prefix}-{time.monotonic_ns()}"


def sns_config(server: MotoServer, fcm_arn: str, endpoint: str | None = None) -> PushConfig:
    return PushConfig(providers={"fcm": "sns"}, sns_endpoint_url=endpoint or server.url,
                      sns_fcm_arn=fcm_arn, concurrency=4)


@pytest.fixture(params=PROVIDERS)
async def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
                  moto: MotoServer, webhook: WebhookReceiver) -> AsyncIterator[Backend]:  # noqa: F811
    for name, value in AWS_ENV.items():
        monkeypatch.setenv(name, value)
    kind = request.param
    if kind == "sns":
        fcm_arn = moto.platform_application("contract-fcm", "GCM")
        provider: PushProvider = SnsProvider.from_config(sns_config(moto, fcm_arn))

        def sns_sent(token: str) -> list[dict[str, Any]]:
            return [json.loads(m["default"]) for m in moto.messages(token)]

        def sns_reject(token: str) -> None:
            moto.client().set_endpoint_attributes(EndpointArn=moto.endpoint_arn(token),
                                                  Attributes={"Enabled": "false"})

        dead_url = f"http://127.0.0.1:{free_port()}"
        yield Backend(provider, "fcm", sns_sent, sns_reject,
                      lambda: SnsProvider.from_config(sns_config(moto, fcm_arn, dead_url)))
    elif kind == "webhook":
        provider = WebhookProvider(webhook.url, WEBHOOK_SECRET, timeout_s=5)

        def webhook_sent(token: str) -> list[dict[str, Any]]:
            found = []
            for delivery in webhook.for_token(token):
                assert verify_signature(WEBHOOK_SECRET.encode(),
                                        delivery.headers[SIGNATURE_HEADER], delivery.body,
                                        int(time.time()))
                found.append(delivery.json["wake"])
            return found

        def webhook_reject(token: str) -> None:
            webhook.status[token] = 410

        def failing() -> PushProvider:
            return WebhookProvider(f"http://127.0.0.1:{free_port()}/push", WEBHOOK_SECRET,
                                   timeout_s=2)

        yield Backend(provider, "webhook", webhook_sent, webhook_reject, failing)
    else:
        provider = LogProvider()
        captured: list[MutableMapping[str, Any]] = []

        def log_sent(token: str) -> list[dict[str, Any]]:
            return [entry["wake"] for entry in captured if entry["device"] == f"dev-{token}"]

        with structlog.testing.capture_logs() as logs:
            captured = logs
            yield Backend(provider, "webpush", log_sent, None, None)
    await provider.close()


async def test_a_wake_up_arrives_once_with_its_id_and_count_only(backend: Backend) -> None:
    token = unique("tok")
    sent = wake()
    result = await backend.provider.send(target(backend, token), sent)
    assert result.outcome is Outcome.SENT, result.detail
    [received] = backend.sent(token)
    assert received == {"id": sent.id, "count": 3, "collapse_key": sent.collapse_key,
                        "type": "wake", "v": 1}
    assert SECRET_BODY not in json.dumps(received)


async def test_each_send_is_one_push(backend: Backend) -> None:
    token = unique("tok")
    for count in (1, 2):
        assert (await backend.provider.send(target(backend, token), wake(count=count))
                ).outcome is Outcome.SENT
    assert [w["count"] for w in backend.sent(token)] == [1, 2]


@pytest.mark.parametrize("backend", REMOTE, indirect=True)  # the log provider never fails
async def test_a_rejected_token_is_reported_as_rejected(backend: Backend) -> None:
    assert backend.reject is not None
    token = unique("tok")
    assert (await backend.provider.send(target(backend, token), wake())).outcome is Outcome.SENT
    backend.reject(token)
    result = await backend.provider.send(target(backend, token), wake())
    assert result.outcome is Outcome.REJECTED, result.detail


@pytest.mark.parametrize("backend", REMOTE, indirect=True)
async def test_an_unreachable_service_is_retried(backend: Backend) -> None:
    assert backend.transient is not None
    failing = backend.transient()
    try:
        result = await failing.send(target(backend, unique("tok")), wake())
    finally:
        await failing.close()
    assert result.outcome is Outcome.RETRY, result.detail


async def test_sns_re_enables_a_token_the_device_registered_again(
        moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    for name, value in AWS_ENV.items():
        monkeypatch.setenv(name, value)
    provider = SnsProvider.from_config(sns_config(
        moto, moto.platform_application("contract-fcm", "GCM")))
    token = unique("tok")
    first = PushTarget(device="d", user="u", app="a", platform="fcm", token=token,
                       registered_at=1)
    try:
        assert (await provider.send(first, wake())).outcome is Outcome.SENT
        moto.client().set_endpoint_attributes(EndpointArn=moto.endpoint_arn(token),
                                              Attributes={"Enabled": "false"})
        assert (await provider.send(first, wake())).outcome is Outcome.REJECTED
        again = PushTarget(device="d", user="u", app="a", platform="fcm", token=token,
                           registered_at=2)  # the app reported the token again
        assert (await provider.send(again, wake())).outcome is Outcome.SENT
        assert len(moto.messages(token)) == 2
    finally:
        await provider.close()
