"""Protocol version carried by every frame exchange and every NATS envelope."""

from typing import Final

#: Bumped on any incompatible change to frames or envelopes. Gateways reject clients that ask
#: for a version they do not speak (see ``ErrorCode.UNSUPPORTED_VERSION``). 2: the sync cursor
#: became an opaque string (one position per partition; docs/protocol.md, "Versioning").
PROTOCOL_VERSION: Final = 2

#: Version of what Courier hands to systems outside it besides frames: push wake-ups (to
#: apps, through the push providers) and callbacks (to business services). Separate from
#: ``PROTOCOL_VERSION``: a change to frames does not break a push handler.
PAYLOAD_VERSION: Final = 1
