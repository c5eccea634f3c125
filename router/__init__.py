"""Router: the delivery brain.

Consumes: every envelope on the ``MSGS`` stream through the durable pull consumer ``router``,
shared by all router replicas (each envelope is handled by one replica). Explicit ack after
the deliveries of a batch were published; undecodable envelopes are termed and published to
``dlq.router``.

Produces: for each message, the ready-to-send ``message`` frame on ``dlv.<device>`` (core NATS)
for every device of every recipient user and the sender's other devices; for each receipt, a
``receipt`` frame to the devices that should hear of it. Gateways subscribe only the device
subjects of their own sockets, so a publish to an offline device costs nothing and the device
gets the message from its backlog when it syncs.

Order: one replica publishes a batch in stream order, so deliveries of one conversation leave
a replica in seq order; with several replicas, frames of one conversation may interleave and
clients order by ``seq``. Each frame carries its ``seq`` and ``message_id`` in the headers
``Courier-Seq``/``Courier-Id`` for the gateway's sync de-duplication.
"""
