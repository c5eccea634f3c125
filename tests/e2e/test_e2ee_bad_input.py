"""Bad input on every key directory route: typed problems, at and past every bound, and
nothing of a refused upload stored."""

from pathlib import Path

import aiohttp
import msgspec
import vodozemac

from client.sdk import CourierClient
from schemas.keys import (
    MAX_CLAIM_DEVICES,
    MAX_ONE_TIME_KEYS,
    MAX_QUERY_USERS,
    IdentityKeys,
    OneTimeKey,
    signed_bytes,
)
from tests.e2e.e2ee_helpers import close_all, secure_device
from tests.e2e.social_helpers import call, refused
from tests.harness import System


def identity(account: vodozemac.Account, user: str, device: str) -> IdentityKeys:
    curve, ed = account.curve25519_key.to_base64(), account.ed25519_key.to_base64()
    return IdentityKeys(curve25519=curve, ed25519=ed, signature=account.sign(
        signed_bytes("device", user, device, curve, ed)).to_base64())


def one_time_keys(account: vodozemac.Account, user: str, device: str, count: int,
                  start: int = 0) -> list[OneTimeKey]:
    keys = []
    for n in range(start, start + count):
        key = vodozemac.Curve25519SecretKey().public_key().to_base64()
        keys.append(OneTimeKey(key_id=f"k{n}", key=key, signature=account.sign(
            signed_bytes("one_time", user, device, f"k{n}", key)).to_base64()))
    return keys


def body(**fields: object) -> object:
    return msgspec.to_builtins(fields)


async def count_left(client: CourierClient) -> int:
    reply = await call(client, "PUT", "/v1/keys", {})
    left: int = reply["one_time_keys_left"]
    return left


async def test_upload_refuses_bad_keys_and_signatures(system: System) -> None:
    creds = await system.device("alice", "alice-phone")
    client = await system.connect(creds)
    account = vodozemac.Account()
    mine = identity(account, "alice", "alice-phone")
    try:
        assert await count_left(client) == 0  # an empty upload reads the count
        await refused(client, "PUT", "/v1/keys", body(one_time_keys=one_time_keys(
            account, "alice", "alice-phone", 1)), 422, "invalid")  # no identity keys yet
        forged = msgspec.structs.replace(mine, signature=identity(
            vodozemac.Account(), "alice", "alice-phone").signature)
        await refused(client, "PUT", "/v1/keys", body(device_keys=forged), 422, "invalid")
        as_other = identity(account, "alice", "alice-laptop")  # signed for another device
        await refused(client, "PUT", "/v1/keys", body(device_keys=as_other), 422, "invalid")
        for bad in ({"curve25519": "A" * 42}, {"ed25519": "A" * 44}, {"signature": "!" * 86},
                    {"user": "mallory"}):
            await refused(client, "PUT", "/v1/keys",
                          {"device_keys": {**msgspec.to_builtins(mine), **bad}}, 422, "invalid")
        assert (await call(client, "PUT", "/v1/keys", body(device_keys=mine)))[
            "one_time_keys_left"] == 0
        await refused(client, "PUT", "/v1/keys", body(one_time_keys=one_time_keys(
            account, "alice", "alice-phone", MAX_ONE_TIME_KEYS + 1)), 422, "invalid")
        keys = one_time_keys(account, "alice", "alice-phone", 3)
        keys[2] = msgspec.structs.replace(keys[2], signature=keys[0].signature)
        await refused(client, "PUT", "/v1/keys", body(one_time_keys=keys), 422, "invalid")
        assert await count_left(client) == 0  # nothing of the refused upload was stored
        fallback = one_time_keys(account, "alice", "alice-phone", 1)[0]  # signed as one-time
        await refused(client, "PUT", "/v1/keys", body(fallback_key=fallback), 422, "invalid")
        reply = await call(client, "PUT", "/v1/keys", body(one_time_keys=one_time_keys(
            account, "alice", "alice-phone", MAX_ONE_TIME_KEYS)))
        assert reply["one_time_keys_left"] == MAX_ONE_TIME_KEYS
        await refused(client, "PUT", "/v1/keys", {"one_time_keys": "x"}, 422, "invalid")
        await refused(client, "PUT", "/v1/keys", {"extra": 1}, 422, "invalid")
        headers = {"Authorization": f"Bearer {creds.token}"}
        async with aiohttp.ClientSession() as session:
            async with session.put(f"{system.url}/v1/keys", data=b"{not json",
                                   headers=headers) as response:
                assert response.status == 400
                assert (await response.json())["code"] == "bad_frame"
            async with session.put(f"{system.url}/v1/keys", data=b" " * (600 * 1024),
                                   headers=headers) as response:
                assert response.status == 413
            async with session.put(f"{system.url}/v1/keys", data=b"{}") as response:
                assert response.status == 401
    finally:
        await client.close()


async def test_query_and_claim_bounds(system: System, tmp_path: Path) -> None:
    alice = await secure_device(system, "alice", "alice-phone", tmp_path)
    client = alice.client
    try:
        users = [f"u{i}" for i in range(MAX_QUERY_USERS)]
        reply = await call(client, "POST", "/v1/keys/query", {"users": ["alice", *users[1:]]})
        assert list(reply["devices"]) == ["alice"]
        assert reply["devices"]["alice"][0]["device"] == "alice-phone"
        for bad in ([], [*users, "one-more"], ["bad id"], "alice"):
            await refused(client, "POST", "/v1/keys/query", {"users": bad}, 422, "invalid")
        await refused(client, "POST", "/v1/keys/query", {"users": ["a"], "app": "x"}, 422,
                      "invalid")
        devices = [{"user": "nobody", "device": f"d{i}"} for i in range(MAX_CLAIM_DEVICES)]
        reply = await call(client, "POST", "/v1/keys/claim", {"devices": devices})
        assert reply["keys"] == [] and len(reply["missing"]) == MAX_CLAIM_DEVICES
        for bad_devices in ([], [*devices, {"user": "x", "device": "y"}],
                            [{"user": "x"}], [{"user": "x", "device": "a:b"}]):
            await refused(client, "POST", "/v1/keys/claim", {"devices": bad_devices}, 422,
                          "invalid")
        reply = await call(client, "GET", "/v1/devices")
        assert [d["device"] for d in reply["devices"]] == ["alice-phone"]
        await refused(client, "GET", "/v1/devices?x=1", None, 422, "invalid")
    finally:
        await close_all(alice)
