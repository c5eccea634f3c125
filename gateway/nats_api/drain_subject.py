"""``gateway.drain.<this gateway's id>``: an administrator's drain, relayed over NATS (the
REST route ``POST /v1/admin/gateways/{id}/drain`` of any gateway publishes it; operators'
tools with the ``admin`` credential may too). The reply is ``Ok[DrainStarted]`` as soon as
the drain started, or ``Failed`` ``conflict`` when this gateway drains already. Who may
publish it is a matter of NATS permissions (``schemas.nats_permissions``)."""

import msgspec
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from gateway.handlers.drain import Drainer
from schemas.errors import ErrorCode
from schemas.presence import DrainStarted, gateway_drain
from schemas.rpc import Failed, Ok

log = structlog.get_logger(__name__)
_encoder = msgspec.json.Encoder()


class DrainSubject:
    """Subscribes this gateway's drain subject."""

    def __init__(self, nc: Client, gateway_id: str, drainer: Drainer, drain_s: float) -> None:
        self._nc = nc
        self._gateway_id = gateway_id
        self._drainer = drainer
        self._drain_s = drain_s
        self._subscription: Subscription | None = None

    async def start(self) -> None:
        self._subscription = await self._nc.subscribe(gateway_drain(self._gateway_id),
                                                      cb=self._on_request)

    async def stop(self) -> None:
        if self._subscription is not None:
            await self._subscription.unsubscribe()
            self._subscription = None

    async def _on_request(self, msg: Msg) -> None:
        if self._drainer.started:
            reply: msgspec.Struct = Failed(code=ErrorCode.CONFLICT,
                                           message=f"gateway {self._gateway_id} drains already")
        else:
            sockets = self._drainer.start()
            log.info("drain_requested", sockets=sockets)
            reply = Ok(value=DrainStarted(gateway=self._gateway_id, sockets=sockets,
                                          drain_s=self._drain_s))
        if msg.reply:
            await msg.respond(_encoder.encode(reply))
