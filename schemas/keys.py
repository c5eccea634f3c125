"""The key directory of end-to-end encryption (docs/e2ee.md): REST bodies and storage RPC.

A device publishes its identity keys (Curve25519 for Olm, Ed25519 for signing), one-time keys
and a fallback key. Each is signed by the device's Ed25519 key over ``signed_bytes(...)``, a
canonical encoding that names the user and the device, so the server (which checks the
signatures it can) cannot hand one device's keys out as another's, and a claimer checks the
signature of the one-time key it got against the identity key it queried. Keys are unpadded
base64 strings; the server stores them as opaque strings.

Identity keys are immutable for a device id: an upload of different identity keys for a device
that has some is refused (``conflict``); a new key pair needs a new device id.
"""

from typing import Annotated, Final

import msgspec

from schemas.ids import DeviceId, UserId

#: A Curve25519 or Ed25519 public key: 32 bytes, unpadded base64.
PublicKey = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9+/]{43}$",
                                        description="32 bytes, unpadded base64.")]
#: An Ed25519 signature: 64 bytes, unpadded base64.
Signature = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9+/]{86}$",
                                        description="64 bytes, unpadded base64.")]
#: A one-time key's id, as the device's account names it.
KeyId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9+/=_\-]{1,64}$")]

#: Most one-time keys in one upload (and held per device).
MAX_ONE_TIME_KEYS: Final = 100
#: Most users in one ``keys/query``.
MAX_QUERY_USERS: Final = 100
#: Most devices in one ``keys/claim``.
MAX_CLAIM_DEVICES: Final = 256
#: Most users told of one device-list change (``device_list_changed``), the user itself
#: included: direct peers (most recent conversations first), then contacts, then fellow group
#: members; the rest learn of it at their next query.
MAX_KEY_AUDIENCE: Final = 1000
#: Most direct conversations and groups of the user read to compute that audience.
MAX_KEY_AUDIENCE_SOURCES: Final = 500


def signed_bytes(kind: str, user: str, device: str, *fields: str) -> bytes:
    """The canonical bytes a device signs: ``courier-e2ee-v1``, the kind (``device``,
    ``one_time``, ``fallback``), the user, the device and the key fields, NUL-separated
    (none of them can contain a NUL: ids and base64 have fixed alphabets)."""
    return "\x00".join(("courier-e2ee-v1", kind, user, device, *fields)).encode()


class IdentityKeys(msgspec.Struct, forbid_unknown_fields=True):
    """A device's identity keys as it uploads them (the user and device come from the
    token). ``signature``: Ed25519 over ``signed_bytes("device", user, device, curve25519,
    ed25519)``."""

    curve25519: PublicKey
    ed25519: PublicKey
    signature: Signature


class OneTimeKey(msgspec.Struct, forbid_unknown_fields=True):
    """A one-time (or fallback) Curve25519 key. ``signature``: Ed25519 over
    ``signed_bytes("one_time" or "fallback", user, device, key_id, key)``."""

    key_id: KeyId
    key: PublicKey
    signature: Signature


class KeysUpload(msgspec.Struct, forbid_unknown_fields=True):
    """``PUT /v1/keys``: identity keys (required on the first upload, the same ones after),
    more one-time keys, a new fallback key (replaces the previous one)."""

    device_keys: IdentityKeys | None = None
    one_time_keys: Annotated[list[OneTimeKey],
                             msgspec.Meta(max_length=MAX_ONE_TIME_KEYS)] = []
    fallback_key: OneTimeKey | None = None


class KeysUploadResult(msgspec.Struct):
    """How many one-time keys the server holds for this device now."""

    one_time_keys_left: int


class DeviceKeys(msgspec.Struct):
    """A device in the directory, with its signed identity keys."""

    user: str
    device: str
    curve25519: str
    ed25519: str
    signature: str


class KeysQuery(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /v1/keys/query``: the devices of these users (of the caller's app)."""

    users: Annotated[list[UserId], msgspec.Meta(min_length=1, max_length=MAX_QUERY_USERS)]


class KeysQueryResult(msgspec.Struct):
    """User -> its devices that published identity keys (a user without any: absent)."""

    devices: dict[str, list[DeviceKeys]]


class DeviceRef(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """One device of one user."""

    user: UserId
    device: DeviceId


class KeysClaim(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /v1/keys/claim``: one one-time key of each of these devices."""

    devices: Annotated[list[DeviceRef],
                       msgspec.Meta(min_length=1, max_length=MAX_CLAIM_DEVICES)]


class ClaimedKey(msgspec.Struct):
    """A one-time key, now removed from the directory (or the device's fallback key, which
    stays, when it had no one-time key left: ``fallback`` true)."""

    user: str
    device: str
    key_id: str
    key: str
    signature: str
    fallback: bool = False


class KeysClaimResult(msgspec.Struct):
    """A key per device that has one; ``missing``: devices with neither a one-time nor a
    fallback key (or unknown)."""

    keys: list[ClaimedKey]
    missing: list[DeviceRef] = []


class DeviceList(msgspec.Struct):
    """``GET /v1/devices``: the caller's devices that published identity keys."""

    devices: list[DeviceKeys]


# ---------------------------------------------------------------- storage RPC


class KeysUploadRequest(msgspec.Struct):
    """``store.rpc.keys_upload``: the storage worker checks the signatures."""

    app: str
    user: str
    device: str
    upload: KeysUpload


class KeysUploadOutcome(msgspec.Struct):
    """Reply to ``KeysUploadRequest``: the uploader's answer, and whether the upload put a
    new device in the directory (its first identity keys: the gateway sends
    ``device_list_changed``)."""

    result: KeysUploadResult
    new_device: bool = False


class KeyAudienceRequest(msgspec.Struct):
    """``store.rpc.key_audience``: who to tell that ``user``'s device list changed."""

    app: str
    user: str
    device: str


class KeyAudience(msgspec.Struct):
    """Reply to ``KeyAudienceRequest``: ``user`` and the users who share a direct
    conversation, a contact or a group with it, at most ``MAX_KEY_AUDIENCE``
    (``truncated``: some were left out)."""

    users: list[str]
    truncated: bool = False


class KeysQueryRequest(msgspec.Struct):
    """``store.rpc.keys_query``."""

    app: str
    users: list[str]


class KeysRemoveRequest(msgspec.Struct):
    """``store.rpc.keys_remove``: drop a device's keys from the directory."""

    app: str
    user: str
    device: str


class KeysRemoved(msgspec.Struct):
    """Reply to ``KeysRemoveRequest``."""

    device: str


class KeysClaimRequest(msgspec.Struct):
    """``store.rpc.keys_claim``."""

    app: str
    devices: list[DeviceRef]


class KeysLeft(msgspec.Struct):
    """A device a claim took a one-time key of, and how many it has left."""

    user: str
    device: str
    left: int


class KeysClaimOutcome(msgspec.Struct):
    """Reply to ``KeysClaimRequest``: the claimer's answer, and the counts of the devices
    whose one-time keys were taken (the gateway tells those running low)."""

    result: KeysClaimResult
    left: list[KeysLeft] = []
