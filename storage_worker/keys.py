"""The key directory's storage RPC (``store.rpc.keys_*``): uploads, queries and claims of
end-to-end encryption keys (docs/e2ee.md).

Uploads are checked here, where the device's stored identity key is at hand: the identity
keys' self-signature, then each one-time and fallback key's signature by that identity key.
A bad signature or different identity keys for a known device are refused (``invalid``,
``conflict``) and nothing of the upload is stored. Keys are opaque strings otherwise.
"""

from collections.abc import Awaitable, Callable
from typing import Any

import structlog
import vodozemac
from prometheus_client import Counter

from schemas.errors import ErrorCode, ProtocolError
from schemas.keys import (
    ClaimedKey,
    DeviceKeys,
    DeviceRef,
    KeysClaimOutcome,
    KeysClaimRequest,
    KeysClaimResult,
    KeysLeft,
    KeysQueryRequest,
    KeysQueryResult,
    KeysRemoved,
    KeysRemoveRequest,
    KeysUploadOutcome,
    KeysUploadRequest,
    KeysUploadResult,
    OneTimeKey,
    signed_bytes,
)
from storage_worker.store.keys import IdentityConflict, KeyStore

log = structlog.get_logger(__name__)

UPLOADED = Counter("courier_keys_uploaded_total",
                   "Key directory uploads by outcome (ok, invalid, conflict)", ["outcome"])
CLAIMED = Counter("courier_keys_claimed_total",
                  "Key claims by result (one_time, fallback, missing)", ["result"])


def verify(ed25519: str, message: bytes, signature: str, what: str) -> None:
    """Raise ``invalid`` unless ``signature`` is ``ed25519``'s over ``message``."""
    try:
        vodozemac.Ed25519PublicKey.from_base64(ed25519).verify_signature(
            message, vodozemac.Ed25519Signature.from_base64(signature))
    except ValueError as exc:  # vodozemac's Key/Decode/SignatureException
        raise ProtocolError(ErrorCode.INVALID, f"{what}: bad signature") from exc


class KeyService:
    """The ``keys_*`` RPC handlers over a ``KeyStore``."""

    def __init__(self, keys: KeyStore) -> None:
        self._keys = keys

    def handlers(self) -> dict[str, Callable[[Any], Awaitable[Any]]]:
        return {"keys_upload": self.upload, "keys_query": self.query,
                "keys_claim": self.claim, "keys_remove": self.remove}

    async def upload(self, request: KeysUploadRequest) -> KeysUploadOutcome:
        try:
            return await self._upload(request)
        except ProtocolError as exc:
            UPLOADED.labels(exc.code).inc()
            log.info("keys_upload_refused", app=request.app, user=request.user,
                     device=request.device, code=exc.code, reason=exc.message)
            raise

    async def _upload(self, request: KeysUploadRequest) -> KeysUploadOutcome:
        app, user, device, upload = request.app, request.user, request.device, request.upload
        held = await self._keys.identity(app, user, device)
        new_device = held is None and upload.device_keys is not None
        if upload.device_keys is not None:
            new = upload.device_keys
            verify(new.ed25519, signed_bytes("device", user, device, new.curve25519,
                                             new.ed25519), new.signature, "device_keys")
            if held is not None and (held.curve25519, held.ed25519) != (new.curve25519,
                                                                        new.ed25519):
                raise ProtocolError(ErrorCode.CONFLICT, f"device {device!r} has other "
                                    "identity keys; new keys need a new device id")
            held = DeviceKeys(user=user, device=device, curve25519=new.curve25519,
                              ed25519=new.ed25519, signature=new.signature)
        if held is None:
            if not upload.one_time_keys and upload.fallback_key is None:
                return KeysUploadOutcome(  # an empty upload: the count
                    result=KeysUploadResult(one_time_keys_left=0))
            raise ProtocolError(ErrorCode.INVALID, "the first upload of a device must carry "
                                "its device_keys")
        self._check_keys(held, upload.one_time_keys, "one_time")
        if upload.fallback_key is not None:
            self._check_keys(held, [upload.fallback_key], "fallback")
        try:
            await self._keys.put_identity(app, held)
        except IdentityConflict as exc:  # a concurrent upload of other keys won
            raise ProtocolError(ErrorCode.CONFLICT, str(exc)) from exc
        left = await self._keys.add_one_time_keys(app, user, device, upload.one_time_keys)
        if upload.fallback_key is not None:
            await self._keys.set_fallback(app, user, device, upload.fallback_key)
        UPLOADED.labels("ok").inc()
        if new_device:
            log.info("device_keys_added", app=app, user=user, device=device)
        return KeysUploadOutcome(result=KeysUploadResult(one_time_keys_left=left),
                                 new_device=new_device)

    @staticmethod
    def _check_keys(identity: DeviceKeys, keys: list[OneTimeKey], kind: str) -> None:
        for key in keys:
            verify(identity.ed25519, signed_bytes(kind, identity.user, identity.device,
                                                  key.key_id, key.key),
                   key.signature, f"{kind} key {key.key_id!r}")

    async def query(self, request: KeysQueryRequest) -> KeysQueryResult:
        devices: dict[str, list[DeviceKeys]] = {}
        for user in dict.fromkeys(request.users):
            if found := await self._keys.devices(request.app, user):
                devices[user] = found
        return KeysQueryResult(devices=devices)

    async def claim(self, request: KeysClaimRequest) -> KeysClaimOutcome:
        keys: list[ClaimedKey] = []
        missing: list[DeviceRef] = []
        left: list[KeysLeft] = []
        for ref in dict.fromkeys(request.devices):
            claimed = await self._keys.claim(request.app, ref.user, ref.device)
            if claimed is None:
                missing.append(ref)
            else:
                keys.append(claimed)
                left.append(KeysLeft(user=ref.user, device=ref.device,
                                     left=await self._keys.count(request.app, ref.user,
                                                                 ref.device)))
            CLAIMED.labels("missing" if claimed is None
                           else "fallback" if claimed.fallback else "one_time").inc()
        return KeysClaimOutcome(result=KeysClaimResult(keys=keys, missing=missing), left=left)

    async def remove(self, request: KeysRemoveRequest) -> KeysRemoved:
        await self._keys.remove_device(request.app, request.user, request.device)
        log.info("device_keys_removed", app=request.app, user=request.user,
                 device=request.device)
        return KeysRemoved(device=request.device)
