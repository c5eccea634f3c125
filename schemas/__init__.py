"""The contract between clients, gateways and workers.

Frames (client <-> gateway), envelopes (what flows on NATS), storage RPC messages, REST bodies,
subject names, stream definitions, error codes and the protocol version live here. Every
service imports this package; it imports no service and does no I/O.
"""

from schemas.version import PROTOCOL_VERSION

__all__ = ["PROTOCOL_VERSION"]
