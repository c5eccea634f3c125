"""Helpers of the end-to-end encryption tests: encrypted devices on a real system."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import vodozemac

from client.crypto.machine import Decrypted, OlmMachine, Undecryptable
from client.e2ee import SecureClient
from schemas.frames import Message
from schemas.keys import IdentityKeys, signed_bytes
from tests.harness import System

PICKLE_KEY = bytes(range(32))


async def secure_device(system: System, user: str, device: str, state_dir: Path,
                        url: str | None = None) -> SecureClient:
    """A registered, connected device that has published its keys."""
    creds = await system.device(user, device)
    client = await system.connect(creds, url)
    machine = OlmMachine.open(user, creds.device, PICKLE_KEY, state_dir / f"{device}.e2ee")
    secure = SecureClient(client, machine)
    await secure.publish_keys()
    return secure


async def next_chat(device: SecureClient, timeout: float = 10.0) -> Decrypted | Undecryptable:
    """The next chat message (system messages of groups skipped)."""
    while True:
        result = await device.next_message(timeout)
        if not isinstance(result, Message):
            return result


async def next_text(device: SecureClient, timeout: float = 10.0) -> str:
    result = await next_chat(device, timeout)
    assert isinstance(result, Decrypted), result
    return result.text


async def close_all(*devices: SecureClient) -> None:
    for device in devices:
        await device.client.close()


def signed_identity(user: str, device: str) -> IdentityKeys:
    """Identity keys of a fresh account, validly self-signed as ``user``'s ``device``."""
    account = vodozemac.Account()
    curve, ed = account.curve25519_key.to_base64(), account.ed25519_key.to_base64()
    return IdentityKeys(curve25519=curve, ed25519=ed, signature=account.sign(
        signed_bytes("device", user, device, curve, ed)).to_base64())


@asynccontextmanager
async def secure_devices(system: System, state_dir: Path,
                         *devices: str) -> AsyncIterator[list[SecureClient]]:
    """``secure_device`` for each of ``devices`` (named ``<user>-<label>``), closed after."""
    opened: list[SecureClient] = []
    try:
        for device in devices:
            opened.append(await secure_device(system, device.split("-")[0], device, state_dir))
        yield opened
    finally:
        await close_all(*opened)
