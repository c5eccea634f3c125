"""The machine's state on disk: one MessagePack file, replaced atomically, readable by its
owner only. Every vodozemac object in it (the account, Olm and Megolm sessions) is pickled
with the application's 32-byte pickle key (vodozemac encrypts and authenticates pickles), so
the file without the key yields no key material; the rest is the device directory this
device has seen (public keys) and replay bookkeeping."""

import os
from pathlib import Path

import msgspec


class KnownDevice(msgspec.Struct):
    """A device of a user as first seen in the directory (trust on first use)."""

    user: str
    device: str
    curve25519: str
    ed25519: str
    verified: bool = False


class KeyChange(msgspec.Struct):
    """The directory gave other identity keys for a device seen before: a device re-created
    under the same id, or a directory (server) that lies. Shown to the user; the device is
    no longer verified."""

    user: str
    device: str
    old_ed25519: str
    new_ed25519: str


class OutboundGroup(msgspec.Struct):
    """This device's current Megolm session in a group conversation."""

    pickle: str
    created_ms: int
    sent: int = 0
    #: device id -> Curve25519 key of every device the session key was sent to.
    shared_with: dict[str, str] = {}


class InboundGroup(msgspec.Struct):
    """A Megolm session some device shared with this one, and whose it is."""

    pickle: str
    conversation: str
    sender: str
    sender_device: str
    sender_key: str


class CryptoState(msgspec.Struct):
    """Everything ``OlmMachine`` persists."""

    user: str
    device: str
    account: str
    published: bool = False
    devices: dict[str, dict[str, KnownDevice]] = {}
    #: Curve25519 key of a peer device -> its Olm session pickles, most recently used first.
    olm: dict[str, list[str]] = {}
    outbound: dict[str, OutboundGroup] = {}
    inbound: dict[str, InboundGroup] = {}
    #: Ciphertext digest or Megolm "session:index" -> the message id it came in.
    seen: dict[str, str] = {}
    key_changes: list[KeyChange] = []


def save(path: Path, state: CryptoState) -> None:
    """Write ``state`` to ``path`` (mode 0600) through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(msgspec.msgpack.encode(state))
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


def load(path: Path) -> CryptoState:
    return msgspec.msgpack.decode(path.read_bytes(), type=CryptoState)
