"""REST endpoints of the key directory and of a user's devices (routes in
``gateway.http.routes``; the work in ``gateway.handlers.keys``)."""

from typing import Final

from aiohttp import web

from gateway.auth import Identity
from gateway.handlers.keys import KeyDirectory
from gateway.http.responses import json_response
from gateway.http.routing import IdParam
from schemas.keys import KeysClaim, KeysQuery, KeysUpload

DEVICE: Final = IdParam("device", "One of the caller's devices", where="path", label="device")


class KeysRest:
    """``/v1/keys``, ``/v1/keys/query``, ``/v1/keys/claim`` and ``/v1/devices``."""

    def __init__(self, directory: KeyDirectory) -> None:
        self._directory = directory

    async def upload(self, request: web.Request, identity: Identity,
                     body: KeysUpload) -> web.Response:
        return json_response(await self._directory.upload(identity, body))

    async def query(self, request: web.Request, identity: Identity,
                    body: KeysQuery) -> web.Response:
        return json_response(await self._directory.query(identity, body))

    async def claim(self, request: web.Request, identity: Identity,
                    body: KeysClaim) -> web.Response:
        return json_response(await self._directory.claim(identity, body))

    async def devices(self, request: web.Request, identity: Identity) -> web.Response:
        return json_response(await self._directory.devices(identity))

    async def remove_device(self, request: web.Request, identity: Identity) -> web.Response:
        await self._directory.remove_device(identity, DEVICE.value(request))
        return web.Response(status=204)
