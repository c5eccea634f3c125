"""Rate limits as pure logic, on an injected clock: keyed buckets with bounded memory,
all-or-nothing spending, the identity each limit is keyed by, addresses."""

from collections.abc import Callable

import pytest

from gateway.auth import Identity
from gateway.handlers.limits import Limits, address_key
from gateway.handlers.ratelimit import KeyedBuckets, TokenBucket, take_all
from runtime.config import ConfigError, GatewayConfig, LimitsConfig, load_config
from schemas.errors import ErrorCode, ProtocolError
from schemas.frames import Destination, Ping, Send


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def identity(user: str, device: str, app: str = "default") -> Identity:
    return Identity(user=user, device=device, app=app, expires_at=2**40)


def send() -> Send:
    return Send(client_id="c", to=Destination(kind="user", id="bob"), body=b"x")


def refused(call: Callable[[], None]) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        call()
    assert info.value.code == ErrorCode.RATE_LIMITED
    assert info.value.retry_after_s is not None and info.value.retry_after_s > 0
    return info.value


def test_bucket_wait_and_refill() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=2, burst=2, clock=clock)
    assert bucket.take() and bucket.take() and not bucket.take()
    assert bucket.wait_s() == pytest.approx(0.5)
    clock.now = 0.25
    assert bucket.wait_s() == pytest.approx(0.25) and not bucket.full()
    clock.now = 1.0
    assert bucket.full() and bucket.wait_s() == 0.0


def test_take_all_spends_from_every_bucket_or_from_none() -> None:
    clock = Clock()
    roomy, empty = TokenBucket(1, 5, clock), TokenBucket(1, 1, clock)
    assert take_all([roomy, empty]) == 0.0
    assert take_all([roomy, empty]) == pytest.approx(1.0)  # refused by the second ...
    assert [take_all([roomy]) for _ in range(4)] == [0.0] * 4  # ... and the first kept 4
    assert take_all([roomy]) == pytest.approx(1.0)


def test_idle_buckets_are_dropped_and_keys_are_capped() -> None:
    clock = Clock()
    buckets: KeyedBuckets[str] = KeyedBuckets(rate=1, burst=2, max_keys=3, clock=clock)
    buckets.get("a").take()
    buckets.get("b").take()
    assert len(buckets) == 2
    clock.now = 5.0  # both refilled: the same as new buckets, so they go
    buckets.get("c").take()
    assert len(buckets) == 1
    for key in "defg":  # busy keys: the cap drops the least recently used
        buckets.get(key).take()
    assert len(buckets) == 3
    for key in "efg":
        assert not buckets.get(key).full()  # the three kept are the three newest
    buckets.get("d")  # an evicted key starts over with a full bucket
    assert buckets.get("d").take() and buckets.get("d").take()


def test_a_devices_frame_budget_is_its_own_across_sockets() -> None:
    clock = Clock()
    limits = Limits(GatewayConfig(rate_per_s=1, rate_burst=3), LimitsConfig(), clock)
    phone = identity("alice", "phone")
    for _ in range(3):
        limits.check_frame(phone, Ping())
    error = refused(lambda: limits.check_frame(phone, Ping()))
    assert error.retry_after_s == pytest.approx(1.0)
    limits.check_frame(identity("alice", "laptop"), Ping())  # another device: its own
    limits.check_frame(identity("alice", "phone", app="other"), Ping())  # another app too
    clock.now = 1.0
    limits.check_frame(phone, Ping())


def test_sends_also_spend_from_the_users_budget() -> None:
    clock = Clock()
    limits = Limits(GatewayConfig(), LimitsConfig(user_sends_per_s=1, user_sends_burst=4),
                    clock)
    for device in ("phone", "laptop", "tablet", "watch"):
        limits.check_frame(identity("alice", device), send())
    refused(lambda: limits.check_frame(identity("alice", "fifth"), send()))
    limits.check_frame(identity("alice", "fifth"), Ping())  # other frames: device only
    limits.check_frame(identity("bob", "phone"), send())


def test_connections_writes_groups_and_contact_requests() -> None:
    clock = Clock()
    limits = Limits(GatewayConfig(), LimitsConfig(
        device_connects_per_s=1, device_connects_burst=2, user_connects_per_s=1,
        user_connects_burst=3, user_writes_per_s=1, user_writes_burst=4, user_groups_per_s=1,
        user_groups_burst=1, user_contact_requests_per_s=1, user_contact_requests_burst=1),
        clock)
    phone = identity("alice", "phone")
    limits.check_connect(phone)
    limits.check_connect(phone)
    refused(lambda: limits.check_connect(phone))
    limits.check_connect(identity("alice", "laptop"))
    refused(lambda: limits.check_connect(identity("alice", "tablet")))  # the user's third
    limits.check_write(phone, "group_create")
    refused(lambda: limits.check_write(phone, "group_create"))
    limits.check_write(phone, "contact_request")
    refused(lambda: limits.check_write(phone, "contact_request"))
    limits.check_write(phone)
    limits.check_write(identity("alice", "laptop"))  # the user's fourth write
    refused(lambda: limits.check_write(phone))


def test_reads_are_per_user_and_apart_from_writes() -> None:
    clock = Clock()
    limits = Limits(GatewayConfig(), LimitsConfig(user_reads_per_s=1, user_reads_burst=2,
                                                  user_writes_per_s=1, user_writes_burst=1),
                    clock)
    phone, laptop = identity("alice", "phone"), identity("alice", "laptop")
    limits.check_read(phone)
    limits.check_read(laptop)
    assert refused(lambda: limits.check_read(phone)).retry_after_s == pytest.approx(1.0)
    limits.check_write(phone)  # the write budget is its own
    limits.check_read(identity("bob", "phone"))  # and so is every user's
    limits.check_read(identity("alice", "phone", app="other"))  # and every app's
    clock.now = 1.0
    limits.check_read(laptop)


@pytest.mark.parametrize(("raw", "key"), [
    ("203.0.113.7", "203.0.113.7"),
    ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),
    ("::ffff:203.0.113.7", "203.0.113.7"),
    ("not-an-address", "not-an-address"),
    ("", ""),
])
def test_address_keys(raw: str, key: str) -> None:
    assert address_key(raw) == key


@pytest.mark.parametrize(("name", "value", "ok"), [
    ("COURIER_LIMITS_USER_SENDS_PER_S", "0", False),
    ("COURIER_LIMITS_USER_SENDS_PER_S", "0.001", True),
    ("COURIER_LIMITS_USER_GROUPS_BURST", "0", False),
    ("COURIER_LIMITS_USER_GROUPS_BURST", "1", True),
    ("COURIER_LIMITS_ADDRESS_UPGRADES_PER_S", "-1", False),
    ("COURIER_LIMITS_USER_READS_PER_S", "0", False),
    ("COURIER_LIMITS_USER_READS_PER_S", "0.001", True),
    ("COURIER_LIMITS_USER_READS_BURST", "0", False),
    ("COURIER_LIMITS_USER_READS_BURST", "1", True),
    ("COURIER_LIMITS_MAX_KEYS", "99", False),
    ("COURIER_LIMITS_MAX_KEYS", "100", True),
    ("COURIER_LIMITS_MAX_KEYS", "10000000", True),
    ("COURIER_LIMITS_MAX_KEYS", "10000001", False),
    ("COURIER_LIMITS_CLIENT_ADDRESS_HEADER", "X-Forwarded-For", True),
    ("COURIER_LIMITS_CLIENT_ADDRESS_HEADER", "X Forwarded", False),
    ("COURIER_LIMITS_CLIENT_ADDRESS_HEADER", "x" * 65, False),
    ("COURIER_LIMITS_USER_SEND_PER_S", "1", False),
])
def test_limit_settings_are_validated(name: str, value: str, ok: bool) -> None:
    if ok:
        load_config({name: value})
        return
    with pytest.raises(ConfigError) as info:
        load_config({name: value})
    assert str(info.value).startswith(name), str(info.value)
