"""``OlmMachine``: one device's end-to-end encryption, with no I/O (the caller moves keys and
messages; ``client.e2ee`` does it over a ``CourierClient``).

- Keys: a vodozemac ``Account`` (Curve25519 + Ed25519 identity), signed one-time keys and a
  signed fallback key for the directory (``schemas.keys``).
- Directory: the devices of the users it talks to, trusted on first use; a device whose
  identity keys change is recorded in ``key_changes`` and loses its verification.
- 1:1: an Olm message per device (the peer's and this user's other devices), in ``payloads``.
- Groups: one outbound Megolm session per group conversation, its key sent over Olm to each
  member device that lacks it, rotated when a device that had it is gone (a member left or was
  removed, a device was removed) and after ``RotationPolicy`` messages or seconds.
- Decryption returns ``Decrypted``, ``Undecryptable`` (with a reason) or None (a room key, or
  a message already handed out once); it never raises for what a peer or the server sent.
  A ciphertext seen before under another message id is ``replayed``.
"""

import hashlib
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Final, Literal

import msgspec
import vodozemac as vz

from client.crypto import state as store
from client.crypto import wire
from client.crypto.state import CryptoState, InboundGroup, KeyChange, KnownDevice, OutboundGroup
from schemas.frames import Message
from schemas.keys import (
    ClaimedKey,
    DeviceKeys,
    DeviceRef,
    IdentityKeys,
    OneTimeKey,
    signed_bytes,
)

#: Replay bookkeeping entries kept (oldest forgotten first).
MAX_SEEN: Final = 100_000

Reason = Literal["not_encrypted", "unknown_device", "no_session", "unknown_session", "tampered",
                 "replayed", "wrong_recipient", "sender_mismatch"]


class RotationPolicy(msgspec.Struct, frozen=True):
    """When a group's outbound Megolm session is replaced (besides membership changes)."""

    max_messages: int = 100
    max_age_s: float = 7 * 86400.0


DEFAULT_ROTATION: Final = RotationPolicy()


class Decrypted(msgspec.Struct):
    """A message this device decrypted; ``verified``: its sender device was verified."""

    message_id: str
    conversation: str
    seq: int
    sender: str
    sender_device: str
    text: str
    verified: bool = False


class Undecryptable(msgspec.Struct):
    """A message this device cannot decrypt, and why (``reason``; ``detail`` for people)."""

    message_id: str
    conversation: str
    seq: int
    sender: str
    sender_device: str
    reason: Reason
    detail: str


class _Refused(Exception):
    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _sign(account: vz.Account, message: bytes) -> str:
    return account.sign(message).to_base64()


def _verify(ed25519: str, message: bytes, signature: str) -> bool:
    try:
        vz.Ed25519PublicKey.from_base64(ed25519).verify_signature(
            message, vz.Ed25519Signature.from_base64(signature))
    except ValueError:
        return False
    return True


class OlmMachine:
    """The encryption state of device ``device`` of ``user``. ``pickle_key``: 32 bytes the
    application keeps (a keychain); ``path``: where ``save()`` writes the state."""

    def __init__(self, state: CryptoState, pickle_key: bytes, path: Path | None = None,
                 policy: RotationPolicy = DEFAULT_ROTATION,
                 clock: Callable[[], float] = time.time) -> None:
        if len(pickle_key) != 32:
            raise ValueError("the pickle key is 32 bytes")
        self._state = state
        self._key = pickle_key
        self._path = path
        self._policy = policy
        self._clock = clock
        #: Olm sessions opened by peers' pre-key messages (each used a one-time key).
        self.sessions_created = 0
        self._account = vz.Account.from_pickle(state.account, pickle_key)
        self._olm = {key: [vz.Session.from_pickle(p, pickle_key) for p in pickles]
                     for key, pickles in state.olm.items()}
        self._outbound = {c: vz.GroupSession.from_pickle(g.pickle, pickle_key)
                          for c, g in state.outbound.items()}
        self._inbound = {s: vz.InboundGroupSession.from_pickle(g.pickle, pickle_key)
                         for s, g in state.inbound.items()}

    @classmethod
    def create(cls, user: str, device: str, pickle_key: bytes, path: Path | None = None,
               **options: Any) -> "OlmMachine":
        """A new device identity (new keys)."""
        account = vz.Account()
        state = CryptoState(user=user, device=device, account=account.pickle(pickle_key))
        return cls(state, pickle_key, path, **options)

    @classmethod
    def open(cls, user: str, device: str, pickle_key: bytes, path: Path,
             **options: Any) -> "OlmMachine":
        """The machine saved at ``path``, or a new one if there is none."""
        if not path.exists():
            return cls.create(user, device, pickle_key, path, **options)
        state = store.load(path)
        if (state.user, state.device) != (user, device):
            raise ValueError(f"{path} holds the keys of {state.user}/{state.device}")
        return cls(state, pickle_key, path, **options)

    def save(self) -> None:
        """Persist everything (pickled with the pickle key) to ``path``."""
        if self._path is None:
            return
        key = self._key
        self._state.account = self._account.pickle(key)
        self._state.olm = {k: [s.pickle(key) for s in sessions]
                           for k, sessions in self._olm.items()}
        for conversation, session in self._outbound.items():
            self._state.outbound[conversation].pickle = session.pickle(key)
        for session_id, inbound in self._inbound.items():
            self._state.inbound[session_id].pickle = inbound.pickle(key)
        store.save(self._path, self._state)

    # ------------------------------------------------------------------ own keys

    @property
    def user(self) -> str:
        return self._state.user

    @property
    def device(self) -> str:
        return self._state.device

    @property
    def curve25519(self) -> str:
        return self._account.curve25519_key.to_base64()

    @property
    def ed25519(self) -> str:
        return self._account.ed25519_key.to_base64()

    @property
    def key_changes(self) -> list[KeyChange]:
        return list(self._state.key_changes)

    def identity_keys(self) -> IdentityKeys | None:
        """This device's signed identity keys, until the directory has them."""
        if self._state.published:
            return None
        curve, ed = self.curve25519, self.ed25519
        return IdentityKeys(curve25519=curve, ed25519=ed, signature=_sign(
            self._account, signed_bytes("device", self.user, self.device, curve, ed)))

    def new_one_time_keys(self, count: int) -> list[OneTimeKey]:
        """Generate up to ``count`` one-time keys (the account holds at most
        ``max_number_of_one_time_keys`` unpublished) and return them signed."""
        count = min(count, self._account.max_number_of_one_time_keys)
        if count > 0:
            self._account.generate_one_time_keys(count)
        return [self._signed("one_time", key_id, key.to_base64())
                for key_id, key in self._account.one_time_keys.items()]

    def new_fallback_key(self) -> OneTimeKey:
        """Generate a fallback key (replacing the previous one) and return it signed."""
        account: Any = self._account  # the stubs lack the fallback-key methods
        account.generate_fallback_key()
        ((key_id, key),) = account.fallback_key.items()
        return self._signed("fallback", key_id, key.to_base64())

    def mark_published(self) -> None:
        """The directory stored what the last ``identity_keys``/``new_*`` calls returned."""
        self._account.mark_keys_as_published()
        self._state.published = True

    def _signed(self, kind: str, key_id: str, key: str) -> OneTimeKey:
        return OneTimeKey(key_id=key_id, key=key, signature=_sign(
            self._account, signed_bytes(kind, self.user, self.device, key_id, key)))

    # ------------------------------------------------------------------ directory

    def update_devices(self, user: str, devices: Iterable[DeviceKeys]) -> list[KeyChange]:
        """Learn ``user``'s devices from a directory query. Devices with a bad
        self-signature are ignored; returns the devices whose keys changed."""
        known = self._state.devices.setdefault(user, {})
        changes: list[KeyChange] = []
        current: dict[str, KnownDevice] = {}
        for keys in devices:
            if keys.user != user or not _verify(keys.ed25519, signed_bytes(
                    "device", keys.user, keys.device, keys.curve25519, keys.ed25519),
                    keys.signature):
                continue
            before = known.get(keys.device)
            if before is not None and (before.curve25519, before.ed25519) == (keys.curve25519,
                                                                              keys.ed25519):
                current[keys.device] = before
                continue
            if before is not None:
                changes.append(KeyChange(user=user, device=keys.device,
                                         old_ed25519=before.ed25519, new_ed25519=keys.ed25519))
            current[keys.device] = KnownDevice(user=user, device=keys.device,
                                               curve25519=keys.curve25519, ed25519=keys.ed25519)
        gone = {device: d.curve25519 for device, d in known.items()
                if device not in current or current[device].curve25519 != d.curve25519}
        self._state.devices[user] = current  # devices gone from the directory are forgotten
        self._state.key_changes.extend(changes)
        self._retire_outbound(gone)
        return changes

    def _retire_outbound(self, gone: dict[str, str]) -> None:
        """Drop the outbound group sessions whose key went to a device now gone from the
        directory (or re-keyed; ``gone``: device -> the Curve25519 key it had): the next
        ``share_group_key`` starts a new session, which that device never gets."""
        for conversation, meta in list(self._state.outbound.items()):
            if any(meta.shared_with.get(device) == key for device, key in gone.items()):
                del self._state.outbound[conversation]
                self._outbound.pop(conversation, None)

    def group_session_id(self, conversation: str) -> str | None:
        """The id of this device's current outbound Megolm session in ``conversation``."""
        session = self._outbound.get(conversation)
        return None if session is None else session.session_id

    def devices_of(self, user: str) -> list[KnownDevice]:
        return list(self._state.devices.get(user, {}).values())

    def knows_device(self, user: str, device: str) -> bool:
        return device in self._state.devices.get(user, {})

    def set_verified(self, user: str, verified: bool = True) -> None:
        """The user compared safety numbers: mark ``user``'s current devices verified."""
        for device in self._state.devices.get(user, {}).values():
            device.verified = verified

    def missing_sessions(self, users: Iterable[str]) -> list[DeviceRef]:
        """Known devices of ``users`` (this one excepted) without an Olm session."""
        return [DeviceRef(user=d.user, device=d.device) for d in self._targets(users)
                if not self._olm.get(d.curve25519)]

    def add_claimed_keys(self, keys: Iterable[ClaimedKey]) -> None:
        """Open Olm sessions with the one-time keys claimed from the directory (a key whose
        signature does not check against the device's identity key is dropped)."""
        for claimed in keys:
            device = self._state.devices.get(claimed.user, {}).get(claimed.device)
            kind = "fallback" if claimed.fallback else "one_time"
            if device is None or not _verify(device.ed25519, signed_bytes(
                    kind, claimed.user, claimed.device, claimed.key_id, claimed.key),
                    claimed.signature):
                continue
            session = self._account.create_outbound_session(
                vz.Curve25519PublicKey.from_base64(device.curve25519),
                vz.Curve25519PublicKey.from_base64(claimed.key))
            self._olm.setdefault(device.curve25519, []).insert(0, session)

    def _targets(self, users: Iterable[str]) -> list[KnownDevice]:
        return [d for user in dict.fromkeys(users)
                for d in self._state.devices.get(user, {}).values()
                if d.device != self.device]

    # ------------------------------------------------------------------ encryption

    def _olm_encrypt(self, device: KnownDevice, conversation: str,
                     content: wire.Text | wire.RoomKey) -> bytes:
        session = self._olm[device.curve25519][0]
        plaintext = wire.OlmPlaintext(
            conversation=conversation, sender=self.user, sender_device=self.device,
            sender_ed25519=self.ed25519, recipient=device.user, recipient_device=device.device,
            recipient_ed25519=device.ed25519, content=content)
        kind, body = session.encrypt(wire.encode(plaintext)).to_parts()
        return wire.encode(wire.OlmCiphertext(sender_key=self.curve25519, type=kind, body=body))

    def encrypt_direct(self, conversation: str, users: Iterable[str],
                       text: str) -> dict[str, bytes]:
        """Payloads (device id -> Olm ciphertext) of ``text`` for every known device of
        ``users`` with a session (``missing_sessions`` first)."""
        return {d.device: self._olm_encrypt(d, conversation, wire.Text(text))
                for d in self._targets(users) if self._olm.get(d.curve25519)}

    def share_group_key(self, conversation: str, members: Iterable[str]) -> dict[str, bytes]:
        """Make the group's outbound session current for ``members`` (rotating it if a
        device that had it is gone, or by policy) and return the Olm payloads of its key for
        the member devices that lack it (send them to the group before the message)."""
        targets = {d.device: d for d in self._targets(members) if self._olm.get(d.curve25519)}
        meta = self._state.outbound.get(conversation)
        now = self._clock()
        if meta is not None and (
                any(targets.get(device) is None or targets[device].curve25519 != key
                    for device, key in meta.shared_with.items())
                or meta.sent >= self._policy.max_messages
                or now - meta.created_ms / 1000 >= self._policy.max_age_s):
            meta = None
        if meta is None:
            session = vz.GroupSession()
            self._outbound[conversation] = session
            meta = self._state.outbound[conversation] = OutboundGroup(
                pickle="", created_ms=int(now * 1000))
            self._add_inbound(conversation, self.user, self.device, self.curve25519,
                              session.session_id, session.session_key.to_base64())
        session = self._outbound[conversation]
        key = wire.RoomKey(session_id=session.session_id,
                           session_key=session.session_key.to_base64())
        payloads = {device: self._olm_encrypt(d, conversation, key)
                    for device, d in targets.items() if device not in meta.shared_with}
        meta.shared_with = {**meta.shared_with,
                            **{device: targets[device].curve25519 for device in payloads}}
        return payloads

    def encrypt_group(self, conversation: str, text: str) -> bytes:
        """The shared body of ``text`` under the group's current session (after
        ``share_group_key``)."""
        session = self._outbound[conversation]
        plaintext = wire.MegolmPlaintext(conversation=conversation, sender=self.user,
                                         sender_device=self.device, content=wire.Text(text))
        self._state.outbound[conversation].sent += 1
        return wire.encode(wire.MegolmCiphertext(
            sender_key=self.curve25519, session_id=session.session_id,
            body=session.encrypt(wire.encode(plaintext)).to_bytes()))

    def _add_inbound(self, conversation: str, sender: str, sender_device: str, sender_key: str,
                     session_id: str, session_key: str) -> None:
        if session_id in self._inbound:  # a key shared again: keep the one known first
            return
        self._inbound[session_id] = vz.InboundGroupSession(vz.SessionKey(session_key))
        self._state.inbound[session_id] = InboundGroup(
            pickle="", conversation=conversation, sender=sender, sender_device=sender_device,
            sender_key=sender_key)

    # ------------------------------------------------------------------ decryption

    def decrypt(self, message: Message) -> Decrypted | Undecryptable | None:
        """Decrypt a ``message`` frame: its text, why it cannot be read, or None for a room
        key (stored) and for a ciphertext already handed out under this message id."""
        sender = message.sender.user or ""
        sender_device = message.sender.device or ""
        try:
            try:
                ciphertext = wire.decode_ciphertext(message.body)
            except msgspec.DecodeError as exc:
                raise _Refused("not_encrypted", "the body is not an encrypted message") from exc
            if isinstance(ciphertext, wire.OlmCiphertext):
                return self._decrypt_olm(message, sender, sender_device, ciphertext)
            return self._decrypt_megolm(message, sender, sender_device, ciphertext)
        except _Refused as refused:
            return Undecryptable(message_id=message.message_id,
                                 conversation=message.conversation, seq=message.seq,
                                 sender=sender, sender_device=sender_device,
                                 reason=refused.reason, detail=refused.detail)

    def _first_time(self, key: str, message_id: str) -> bool:
        """Record ``key``; False if it was seen under this message id (a redelivery)."""
        seen = self._state.seen.get(key)
        if seen == message_id:
            return False
        if seen is not None:
            raise _Refused("replayed", f"this ciphertext came before as message {seen}")
        self._state.seen[key] = message_id
        while len(self._state.seen) > MAX_SEEN:
            del self._state.seen[next(iter(self._state.seen))]
        return True

    def _sender_device(self, sender: str, sender_device: str, sender_key: str) -> KnownDevice:
        device = self._state.devices.get(sender, {}).get(sender_device)
        if device is None:
            raise _Refused("unknown_device", f"{sender}/{sender_device} is not in the directory")
        if device.curve25519 != sender_key:
            raise _Refused("sender_mismatch",
                           f"the ciphertext is not from {sender}/{sender_device}'s key")
        return device

    def _decrypt_olm(self, message: Message, sender: str, sender_device: str,
                     ciphertext: wire.OlmCiphertext) -> Decrypted | Undecryptable | None:
        device = self._sender_device(sender, sender_device, ciphertext.sender_key)
        digest = hashlib.sha256(ciphertext.body).hexdigest()
        if not self._first_time(digest, message.message_id):
            return None
        try:
            plain = wire.decode_olm(self._olm_plaintext(ciphertext))
        except msgspec.DecodeError as exc:
            del self._state.seen[digest]
            raise _Refused("tampered", "the decrypted message is malformed") from exc
        except _Refused:
            del self._state.seen[digest]  # not read: a redelivery is refused the same way
            raise
        if (plain.sender, plain.sender_device, plain.sender_ed25519) != (
                sender, sender_device, device.ed25519):
            raise _Refused("sender_mismatch", "the message names another sender")
        if (plain.recipient, plain.recipient_device, plain.recipient_ed25519) != (
                self.user, self.device, self.ed25519):
            raise _Refused("wrong_recipient", "the message was encrypted for another device")
        if plain.conversation != message.conversation:
            raise _Refused("sender_mismatch", "the message belongs to another conversation")
        if isinstance(plain.content, wire.RoomKey):
            self._add_inbound(plain.conversation, sender, sender_device, ciphertext.sender_key,
                              plain.content.session_id, plain.content.session_key)
            return None
        return self._decrypted(message, sender, sender_device, plain.content.text, device)

    def _olm_plaintext(self, ciphertext: wire.OlmCiphertext) -> bytes:
        try:
            olm = vz.AnyOlmMessage.from_parts(ciphertext.type, ciphertext.body)
        except ValueError as exc:
            raise _Refused("tampered", f"not an Olm message: {exc}") from exc
        sessions = self._olm.setdefault(ciphertext.sender_key, [])
        pre_key = olm.to_pre_key() if ciphertext.type == wire.PRE_KEY else None
        for session in list(sessions):
            if pre_key is not None and not session.session_matches(pre_key):
                continue
            try:
                plaintext = session.decrypt(olm)
            except ValueError as exc:
                if pre_key is not None:  # the session it was made for cannot read it
                    raise _Refused("tampered", f"Olm decryption failed: {exc}") from exc
                continue
            sessions.remove(session)
            sessions.insert(0, session)  # the one in use now: encrypt with it next
            return plaintext
        if pre_key is None:
            raise _Refused("no_session" if not sessions else "tampered",
                           "no Olm session with this device decrypts the message")
        try:
            session, plaintext = self._account.create_inbound_session(
                vz.Curve25519PublicKey.from_base64(ciphertext.sender_key), pre_key)
        except ValueError as exc:
            raise _Refused("tampered", f"Olm session creation failed: {exc}") from exc
        self.sessions_created += 1
        sessions.insert(0, session)
        return plaintext

    def _decrypt_megolm(self, message: Message, sender: str, sender_device: str,
                        ciphertext: wire.MegolmCiphertext) -> Decrypted | Undecryptable | None:
        session = self._inbound.get(ciphertext.session_id)
        meta = self._state.inbound.get(ciphertext.session_id)
        if session is None or meta is None:
            raise _Refused("unknown_session", "no key for this group session (sent before "
                           "this device joined, or after it left)")
        if (meta.sender, meta.sender_device, meta.sender_key) != (
                sender, sender_device, ciphertext.sender_key):
            raise _Refused("sender_mismatch", "the group session belongs to another device")
        if meta.conversation != message.conversation:
            raise _Refused("sender_mismatch", "the group session belongs to another group")
        try:
            megolm = vz.MegolmMessage.from_bytes(ciphertext.body)
        except ValueError as exc:
            raise _Refused("tampered", f"not a Megolm message: {exc}") from exc
        index = f"{ciphertext.session_id}:{megolm.message_index()}"
        if not self._first_time(index, message.message_id):
            return None
        try:
            plain = wire.decode_megolm(session.decrypt(megolm).plaintext)
        except (ValueError, msgspec.DecodeError) as exc:
            del self._state.seen[index]
            raise _Refused("tampered", f"Megolm decryption failed: {exc}") from exc
        if (plain.conversation, plain.sender, plain.sender_device) != (
                message.conversation, sender, sender_device):
            raise _Refused("sender_mismatch", "the message names another sender or group")
        device = self._state.devices.get(sender, {}).get(sender_device)
        return self._decrypted(message, sender, sender_device, plain.content.text, device)

    @staticmethod
    def _decrypted(message: Message, sender: str, sender_device: str, text: str,
                   device: KnownDevice | None) -> Decrypted:
        return Decrypted(message_id=message.message_id, conversation=message.conversation,
                         seq=message.seq, sender=sender, sender_device=sender_device,
                         text=text, verified=device is not None and device.verified)
