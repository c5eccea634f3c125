"""System control state shared by every gateway and router (NATS KV ``courier_control``).

``ControlAdmin`` (in the gateways, behind the admin REST API and ``control.apply``) records
each action in the ``AUDIT`` stream, then writes or deletes the target's key. ``ControlView``
(in gateways and routers) keeps a local copy fed by a KV watcher and tells listeners about
changes: gateways close the affected sockets, routers stop delivering. The bucket is file
backed and replicated like the streams, so the state survives restarts and is the same for
every replica.
"""
