"""The end-to-end encryption key directory and a user's devices, as the gateway serves them:
one storage RPC each (``keys_*``, where the signatures are checked); the user, device and app
always come from the token. A claim that leaves a device fewer one-time keys than
``keys.low_water`` sends its user's sockets a ``keys_low`` frame naming it.

A device's first identity keys (a new device in the directory) and a device's removal send
``device_list_changed`` {user} to the audience the storage worker computes (``key_audience``:
the user, its direct peers, contacts and fellow group members, bounded), so their clients
re-query the user's devices before the next send. A re-upload of the same keys sends nothing.

Removing a device drops its keys from the directory and disables it (a control action with the
user as actor, audited like an administrator's): its token is refused from then on and its
sockets are closed with ``disabled``, on every gateway.
"""

import structlog
from prometheus_client import Counter

from control.admin import ControlAdmin
from gateway.auth import Identity
from gateway.handlers.user_channel import UserChannel
from runtime.rpc import RpcClient
from schemas import rpc
from schemas.control import ControlRequest, ControlTarget
from schemas.errors import ErrorCode, ProtocolError
from schemas.frames import DeviceListChanged, KeysLow
from schemas.keys import (
    DeviceList,
    KeyAudience,
    KeyAudienceRequest,
    KeysClaim,
    KeysClaimOutcome,
    KeysClaimRequest,
    KeysClaimResult,
    KeysQuery,
    KeysQueryRequest,
    KeysQueryResult,
    KeysRemoved,
    KeysRemoveRequest,
    KeysUpload,
    KeysUploadOutcome,
    KeysUploadRequest,
    KeysUploadResult,
)

KEYS_LOW = Counter("courier_gateway_keys_low_total",
                   "keys_low frames sent: a claim left a device below keys.low_water")
DEVICE_LIST_CHANGED = Counter("courier_gateway_device_list_changed_total",
                              "device_list_changed frames published, by cause (added, removed)",
                              ["cause"])
DEVICE_LIST_UNSENT = Counter("courier_gateway_device_list_unsent_total",
                             "Device-list changes not announced: the audience lookup failed")

log = structlog.get_logger(__name__)


class KeyDirectory:
    """Upload, query and claim keys; list and remove the caller's own devices."""

    def __init__(self, rpc: RpcClient, admin: ControlAdmin, channel: UserChannel,
                 low_water: int) -> None:
        self._rpc = rpc
        self._admin = admin
        self._channel = channel
        self._low_water = low_water

    async def upload(self, identity: Identity, body: KeysUpload) -> KeysUploadResult:
        outcome = await self._rpc.call("keys_upload", KeysUploadRequest(
            app=identity.app, user=identity.user, device=identity.device, upload=body),
            KeysUploadOutcome)
        if outcome.new_device:
            await self._device_list_changed(identity, "added")
        return outcome.result

    async def query(self, identity: Identity, body: KeysQuery) -> KeysQueryResult:
        return await self._query(identity.app, body.users)

    async def claim(self, identity: Identity, body: KeysClaim) -> KeysClaimResult:
        outcome = await self._rpc.call("keys_claim", KeysClaimRequest(
            app=identity.app, devices=body.devices), KeysClaimOutcome)
        for device in outcome.left:
            if device.left < self._low_water:
                KEYS_LOW.inc()
                await self._channel.publish(identity.app, [device.user], KeysLow(
                    device=device.device, one_time_keys_left=device.left))
        return outcome.result

    async def devices(self, identity: Identity) -> DeviceList:
        found = await self._query(identity.app, [identity.user])
        return DeviceList(devices=found.devices.get(identity.user, []))

    async def remove_device(self, identity: Identity, device: str) -> None:
        owner = await self._rpc.call("device_owner", rpc.DeviceOwner(
            app=identity.app, device=device), rpc.Owner)
        if owner.user != identity.user:  # another user's device looks like no device
            raise ProtocolError(ErrorCode.NOT_FOUND, f"you have no device {device!r}")
        await self._rpc.call("keys_remove", KeysRemoveRequest(
            app=identity.app, user=identity.user, device=device), KeysRemoved)
        await self._admin.apply(ControlRequest(
            action="disable", target=ControlTarget(kind="device", id=device, app=identity.app),
            actor=f"user:{identity.user}", reason="removed by its user"), via="rest")
        await self._device_list_changed(identity, "removed")

    async def _device_list_changed(self, identity: Identity, cause: str) -> None:
        """Tell the audience; best effort: the change is stored already, and senders query
        before every send, so a storage failure here is logged, not the caller's error."""
        try:
            audience = await self._rpc.call("key_audience", KeyAudienceRequest(
                app=identity.app, user=identity.user, device=identity.device), KeyAudience)
        except ProtocolError as exc:
            DEVICE_LIST_UNSENT.inc()
            log.warning("device_list_changed_unsent", app=identity.app, user=identity.user,
                        device=identity.device, cause=cause, code=exc.code)
            return
        DEVICE_LIST_CHANGED.labels(cause).inc(len(audience.users))
        await self._channel.publish(identity.app, audience.users,
                                    DeviceListChanged(user=identity.user))

    async def _query(self, app: str, users: list[str]) -> KeysQueryResult:
        return await self._rpc.call("keys_query", KeysQueryRequest(app=app, users=users),
                                    KeysQueryResult)
