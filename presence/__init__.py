"""Which devices are connected, shared across gateways (NATS KV).

``PresenceWriter`` runs in each gateway and records its sockets; ``PresenceView`` runs in
routers and workers and answers "is this device online?" from a local copy kept current by KV
watchers. A gateway that dies stops beating; when its beat expires (``gateway_ttl_s``), every
device it held counts as offline, and the next janitor pass deletes their keys.
"""
