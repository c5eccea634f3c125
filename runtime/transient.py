"""Which failures are the world's fault, not the envelope's.

A worker's consumer loop (``runtime.consumer``) retries a batch in place, forever, while its
handler fails with a transient error: a store or NATS outage must not dead-letter everything
that arrives meanwhile. Any other exception counts against the envelopes of the batch, which
are split until the failing one is isolated and dead-lettered.

Transient:

* ``Transient`` and its subclasses: stores raise ``StoreUnavailable`` (a subclass) for
  connection errors, timeouts and unavailable replicas;
* ``ProtocolError`` with code ``unavailable`` (an RPC that was not answered, or answered with
  a reply this version cannot read);
* NATS connection trouble: closed, draining or reconnecting connections, timeouts, no
  responders, no servers, stale connections, full buffers, and JetStream's "no response" and
  "service unavailable";
* the built-in ``TimeoutError`` and ``ConnectionError``.

Not transient, although raised by NATS: ``MaxPayloadError`` and ``BadSubjectError`` (the same
publish fails again every time).
"""

from typing import Final

import nats.errors
import nats.js.errors

from schemas.errors import ErrorCode, ProtocolError


class Transient(Exception):
    """A failure that says nothing about the envelope being handled: retry it as it is."""


_NATS_TRANSIENT: Final = (
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionDrainingError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.NoServersError,
    nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.SlowConsumerError,
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.ServiceUnavailableError,
)


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is an outage to wait out rather than a fault of the work in hand."""
    if isinstance(exc, ProtocolError):
        return exc.code == ErrorCode.UNAVAILABLE
    return isinstance(exc, (Transient, *_NATS_TRANSIENT, TimeoutError, ConnectionError))
