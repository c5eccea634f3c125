"""REST handlers of the end-to-end encryption key directory and of a user's devices (routes
in ``gateway.routes``): parse, call one storage RPC (``keys_*``, where the signatures are
checked), encode. The user, device and app always come from the token. A claim that leaves a
device fewer one-time keys than ``keys.low_water`` sends its user's sockets a ``keys_low``
frame naming it.

Removing a device drops its keys from the directory and disables it (a control action with the
user as actor, audited like an administrator's): its token is refused from then on and its
sockets are closed with ``disabled``, on every gateway.
"""

from typing import Final

from aiohttp import web
from prometheus_client import Counter

from control.admin import ControlAdmin
from gateway.auth import Identity
from gateway.rest import json_response
from gateway.routing import IdParam
from gateway.user_channel import UserChannel
from runtime.rpc import RpcClient
from schemas import rpc
from schemas.control import ControlRequest, ControlTarget
from schemas.errors import ErrorCode, ProtocolError
from schemas.frames import KeysLow
from schemas.keys import (
    DeviceList,
    KeysClaim,
    KeysClaimOutcome,
    KeysClaimRequest,
    KeysQuery,
    KeysQueryRequest,
    KeysQueryResult,
    KeysRemoved,
    KeysRemoveRequest,
    KeysUpload,
    KeysUploadRequest,
    KeysUploadResult,
)

KEYS_LOW = Counter("courier_gateway_keys_low_total",
                   "keys_low frames sent: a claim left a device below keys.low_water")
DEVICE: Final = IdParam("device", "One of the caller's devices", where="path", label="device")


class KeysRest:
    """``/v1/keys``, ``/v1/keys/query``, ``/v1/keys/claim`` and ``/v1/devices``."""

    def __init__(self, rpc: RpcClient, admin: ControlAdmin, channel: UserChannel,
                 low_water: int) -> None:
        self._rpc = rpc
        self._admin = admin
        self._channel = channel
        self._low_water = low_water

    async def upload(self, request: web.Request, identity: Identity,
                     body: KeysUpload) -> web.Response:
        return json_response(await self._rpc.call("keys_upload", KeysUploadRequest(
            app=identity.app, user=identity.user, device=identity.device, upload=body),
            KeysUploadResult))

    async def query(self, request: web.Request, identity: Identity,
                    body: KeysQuery) -> web.Response:
        return json_response(await self._query(identity.app, body.users))

    async def claim(self, request: web.Request, identity: Identity,
                    body: KeysClaim) -> web.Response:
        outcome = await self._rpc.call("keys_claim", KeysClaimRequest(
            app=identity.app, devices=body.devices), KeysClaimOutcome)
        for device in outcome.left:
            if device.left < self._low_water:
                KEYS_LOW.inc()
                await self._channel.publish(identity.app, [device.user], KeysLow(
                    device=device.device, one_time_keys_left=device.left))
        return json_response(outcome.result)

    async def devices(self, request: web.Request, identity: Identity) -> web.Response:
        found = await self._query(identity.app, [identity.user])
        return json_response(DeviceList(devices=found.devices.get(identity.user, [])))

    async def remove_device(self, request: web.Request, identity: Identity) -> web.Response:
        device = DEVICE.value(request)
        owner = await self._rpc.call("device_owner", rpc.DeviceOwner(
            app=identity.app, device=device), rpc.Owner)
        if owner.user != identity.user:  # another user's device looks like no device
            raise ProtocolError(ErrorCode.NOT_FOUND, f"you have no device {device!r}")
        await self._rpc.call("keys_remove", KeysRemoveRequest(
            app=identity.app, user=identity.user, device=device), KeysRemoved)
        await self._admin.apply(ControlRequest(
            action="disable", target=ControlTarget(kind="device", id=device, app=identity.app),
            actor=f"user:{identity.user}", reason="removed by its user"), via="rest")
        return web.Response(status=204)

    async def _query(self, app: str, users: list[str]) -> KeysQueryResult:
        return await self._rpc.call("keys_query", KeysQueryRequest(app=app, users=users),
                                    KeysQueryResult)
