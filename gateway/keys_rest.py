"""REST handlers of the end-to-end encryption key directory (routes in ``gateway.routes``):
parse, call one storage RPC (``keys_*``, where the signatures are checked), encode. The user,
device and app always come from the token."""

from aiohttp import web

from gateway.auth import Identity
from gateway.rest import json_response
from runtime.rpc import RpcClient
from schemas.keys import (
    DeviceList,
    KeysClaim,
    KeysClaimRequest,
    KeysClaimResult,
    KeysQuery,
    KeysQueryRequest,
    KeysQueryResult,
    KeysUpload,
    KeysUploadRequest,
    KeysUploadResult,
)


class KeysRest:
    """``/v1/keys``, ``/v1/keys/query``, ``/v1/keys/claim`` and ``GET /v1/devices``."""

    def __init__(self, rpc: RpcClient) -> None:
        self._rpc = rpc

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
        return json_response(await self._rpc.call("keys_claim", KeysClaimRequest(
            app=identity.app, devices=body.devices), KeysClaimResult))

    async def devices(self, request: web.Request, identity: Identity) -> web.Response:
        found = await self._query(identity.app, [identity.user])
        return json_response(DeviceList(devices=found.devices.get(identity.user, [])))

    async def _query(self, app: str, users: list[str]) -> KeysQueryResult:
        return await self._rpc.call("keys_query", KeysQueryRequest(app=app, users=users),
                                    KeysQueryResult)
