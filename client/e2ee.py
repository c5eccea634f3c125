"""``SecureClient``: end-to-end encrypted chat over a ``CourierClient`` (docs/e2ee.md).

It publishes the device's keys to the key directory, learns the devices of the users it talks
to (``POST /v1/keys/query``), opens Olm sessions with claimed one-time keys
(``POST /v1/keys/claim``), and sends:

- to a user: one Olm ciphertext per device (the peer's and this user's other devices) in the
  ``payloads`` of one ``send``;
- to a group: first, to the group, the Megolm session key over Olm in ``payloads`` for the
  member devices that lack it (a later seq of the same conversation than nothing they can
  read, an earlier one than the message), then the message as one Megolm ``body``.

Received messages come back decrypted, or as ``Undecryptable`` with the reason; room keys
are consumed silently. The machine is saved after every change. One-time keys are topped up
when the server's count falls below ``LOW_WATER``: known from ``welcome``, from ``keys_low``
frames (sent when claims leave a device below the deployment's ``keys.low_water``) and from
the count of Olm sessions peers opened.

A ``device_list_changed`` frame (a user this one shares a conversation, group or contact
with gained or lost a device) re-queries that user's devices (``refresh_device_lists``, also
done by ``next_message`` as frames come): a new device is known, and gets a session, before the
next send; a device gone retires the group sessions whose key it had.
"""

import asyncio
from collections.abc import Iterable
from typing import Final, TypeVar

import msgspec
import structlog

from client.crypto.machine import Decrypted, OlmMachine, Undecryptable
from client.crypto.state import KeyChange
from client.crypto.verify import safety_number
from client.sdk import CourierClient
from schemas.frames import MAX_PAYLOADS, Accepted, Message
from schemas.groups import GroupInfo
from schemas.ids import direct_conversation, group_conversation
from schemas.keys import KeysClaimResult, KeysQueryResult, KeysUpload, KeysUploadResult

#: One-time keys a device keeps in the directory, and the count that triggers a top-up.
ONE_TIME_KEYS: Final = 50
LOW_WATER: Final = 10

log = structlog.get_logger(__name__)
T = TypeVar("T")


class E2eeError(Exception):
    """The message could not be encrypted (no device of the recipient has keys), or the key
    directory refused a request."""


class SecureClient:
    """Encrypt, send, receive and decrypt for one device (``client`` connected)."""

    def __init__(self, client: CourierClient, machine: OlmMachine) -> None:
        self.client = client
        self.machine = machine
        self._keys_left = 0
        self._welcome_used = False

    @property
    def user(self) -> str:
        return self.machine.user

    async def _call(self, method: str, path: str, body: object, reply: type[T]) -> T:
        status, data = await self.client.api(method, path, body)
        if status != 200:
            raise E2eeError(f"{method} {path}: {status} {data!r}")
        return msgspec.convert(data, reply)

    async def publish_keys(self) -> int:
        """Upload identity keys, a fallback key and ``ONE_TIME_KEYS`` one-time keys the first
        time; later, top the one-time keys up if the server holds fewer than ``LOW_WATER``.
        Returns the count the server holds."""
        identity = self.machine.identity_keys()
        if identity is None:
            self._keys_left = await self._held()
            if self._keys_left >= LOW_WATER:
                return self._keys_left
            upload = KeysUpload(
                one_time_keys=self.machine.new_one_time_keys(ONE_TIME_KEYS - self._keys_left))
        else:
            upload = KeysUpload(device_keys=identity, fallback_key=self.machine.new_fallback_key(),
                                one_time_keys=self.machine.new_one_time_keys(ONE_TIME_KEYS))
        result = await self._call("PUT", "/v1/keys", upload, KeysUploadResult)
        self.machine.mark_published()
        self.machine.save()
        self._keys_left = result.one_time_keys_left
        return self._keys_left

    async def _held(self) -> int:
        """The count the server holds: from ``welcome`` or a ``keys_low`` frame if one came
        since, else asked (an empty upload)."""
        welcome = self.client.welcome
        known = (welcome.one_time_keys_left if welcome is not None
                 and not self._welcome_used else None)
        self._welcome_used = True
        while not self.client.keys_low.empty():
            low = self.client.keys_low.get_nowait()
            if low.device == self.machine.device:
                known = low.one_time_keys_left
        if known is not None:
            return known
        held = await self._call("PUT", "/v1/keys", KeysUpload(), KeysUploadResult)
        return held.one_time_keys_left

    async def refresh(self, users: Iterable[str]) -> list[KeyChange]:
        """Query the directory for ``users``' devices; returns the key changes seen (also
        kept in ``machine.key_changes``)."""
        users = list(dict.fromkeys(users))
        result = await self._call("POST", "/v1/keys/query", {"users": users}, KeysQueryResult)
        changes = [change for user in users
                   for change in self.machine.update_devices(user, result.devices.get(user, []))]
        for change in changes:
            log.warning("device_keys_changed", user=change.user, device=change.device)
        missing = self.machine.missing_sessions(users)
        if missing:
            claimed = await self._call("POST", "/v1/keys/claim",
                                       {"devices": missing}, KeysClaimResult)
            self.machine.add_claimed_keys(claimed.keys)
        self.machine.save()
        return changes

    async def refresh_device_lists(self) -> list[str]:
        """Refresh the users named by the ``device_list_changed`` frames that came (without
        waiting for any); returns them."""
        users: list[str] = []
        while not self.client.device_lists.empty():
            users.append(self.client.device_lists.get_nowait().user)
        if users:
            await self.refresh(users)
        return list(dict.fromkeys(users))

    async def next_device_list_change(self, timeout: float = 10.0) -> list[str]:
        """Wait for a ``device_list_changed`` frame, then ``refresh_device_lists`` (that
        user and any other that came)."""
        first = await asyncio.wait_for(self.client.device_lists.get(), timeout)
        self.client.device_lists.put_nowait(first)
        return await self.refresh_device_lists()

    async def send_text(self, to: str, text: str, blobs: list[str] | None = None) -> Accepted:
        """Send ``text`` to user ``to``, encrypted for each of its devices and this user's
        other devices; ``blobs``: the ids of the attachments it references (plaintext, ids
        only: the server checks and keeps them)."""
        users = [to, self.user]
        await self.refresh(users)
        payloads = self.machine.encrypt_direct(direct_conversation(self.user, to), users, text)
        if not any(device in payloads for device in
                   (d.device for d in self.machine.devices_of(to))):
            raise E2eeError(f"no device of {to} has published keys")
        self.machine.save()  # the ratchets moved: never reuse a message key
        return await self.client.send(to, payloads=payloads, blobs=blobs)

    async def send_group_text(self, group: str, text: str,
                              blobs: list[str] | None = None) -> Accepted:
        """Send ``text`` to a group: its Megolm key to member devices that lack it, then the
        Megolm message (referencing ``blobs``, as ``send_text``)."""
        info = await self._call("GET", f"/v1/groups/{group}", None, GroupInfo)
        members = [member.user for member in info.members]
        await self.refresh(members)
        conversation = group_conversation(group)
        shares = list(self.machine.share_group_key(conversation, members).items())
        self.machine.save()
        for start in range(0, len(shares), MAX_PAYLOADS):
            await self.client.send(group, kind="group",
                                   payloads=dict(shares[start:start + MAX_PAYLOADS]))
        body = self.machine.encrypt_group(conversation, text)
        self.machine.save()
        return await self.client.send(group, body, kind="group", blobs=blobs)

    async def next_message(self, timeout: float = 10.0) -> Decrypted | Undecryptable | Message:
        """The next message for the application: decrypted chat, an ``Undecryptable``, or a
        system/notification ``Message`` as is (those are not end-to-end encrypted). Room keys
        are stored and skipped."""
        while True:
            if not self.client.keys_low.empty():
                await self.publish_keys()  # a keys_low frame came: top up if it was ours
            await self.refresh_device_lists()
            message = await self.client.next_message(timeout)
            if message.kind != "chat":
                return message
            sender, device = message.sender.user, message.sender.device
            if sender and device and not self.machine.knows_device(sender, device):
                await self.refresh([sender])
            created = self.machine.sessions_created
            result = self.machine.decrypt(message)
            self.machine.save()
            if self.machine.sessions_created != created:  # a one-time key was used
                self._keys_left -= self.machine.sessions_created - created
                if self._keys_left < LOW_WATER:
                    await self.publish_keys()
            if result is not None:
                return result

    async def safety_number(self, other: str) -> str:
        """The safety number of this user and ``other`` as the directory shows them now."""
        await self.refresh([self.user, other])
        mine = [d.ed25519 for d in self.machine.devices_of(self.user)]
        if self.machine.ed25519 not in mine:
            mine.append(self.machine.ed25519)
        return safety_number(self.user, mine, other,
                             [d.ed25519 for d in self.machine.devices_of(other)])
