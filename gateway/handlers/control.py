"""Control state applied at the gateway.

Refuses the upgrade of a disabled device or of any device of a disabled user (``disabled``,
HTTP 403), refuses sends to a disabled module (``disabled`` error frame), and closes the open
sockets of a device or user the moment the control view reports it disabled (close code 4103
``DISABLED``: do not reconnect until re-enabled).
"""

from collections.abc import Callable, Iterable
from typing import Protocol

import structlog
from prometheus_client import Counter

from control.view import ControlChange, ControlView
from gateway.auth import Identity
from schemas.errors import CloseCode, ErrorCode, ProtocolError

log = structlog.get_logger(__name__)

REFUSED = Counter("courier_gateway_disabled_refusals_total",
                  "Requests refused because a device, user or module is disabled", ["what"])


class Socket(Protocol):
    """What the guard needs of an open connection."""

    identity: Identity

    def close_soon(self, code: CloseCode, reason: str) -> None: ...


class ControlGuard:
    """Checks identities and modules against the control view; closes disabled sockets."""

    def __init__(self, view: ControlView, sockets: Callable[[], Iterable[Socket]]) -> None:
        self._view = view
        self._sockets = sockets
        view.add_listener(self._on_change)

    def check_connect(self, identity: Identity) -> None:
        """Raise ``disabled`` if the device or its user is disabled."""
        if self._view.user_disabled(identity.app, identity.user):
            REFUSED.labels("user").inc()
            raise ProtocolError(ErrorCode.DISABLED, f"user {identity.user!r} is disabled")
        if self._view.device_disabled(identity.app, identity.device):
            REFUSED.labels("device").inc()
            raise ProtocolError(ErrorCode.DISABLED, f"device {identity.device!r} is disabled")

    def check_send(self, identity: Identity, module: str) -> None:
        """Raise ``disabled`` if the module is disabled for the identity's app."""
        if self._view.module_disabled(identity.app, module):
            REFUSED.labels("module").inc()
            raise ProtocolError(ErrorCode.DISABLED, f"module {module!r} is disabled")

    def recheck(self, conn: Socket) -> None:
        """Close a socket whose device or user was disabled while it was being set up."""
        identity = conn.identity
        if self._view.blocks(identity.app, identity.user, identity.device):
            conn.close_soon(CloseCode.DISABLED, "disabled by an administrator")

    def _on_change(self, change: ControlChange) -> None:
        if not change.disabled or change.kind not in ("device", "user"):
            return
        for conn in self._sockets():
            identity = conn.identity
            if identity.app != change.app:
                continue
            if (identity.device if change.kind == "device" else identity.user) == change.id:
                conn.close_soon(CloseCode.DISABLED, f"{change.kind} disabled by an administrator")
