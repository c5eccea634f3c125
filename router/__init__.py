"""Router: the delivery brain.

Consumes: the partitions whose lease it holds (``runtime.partitions``), each partition stream
``MSGS_<p>`` through its durable pull consumer ``router``: one router per partition at a time, so a
conversation's frames go out in order whatever the number of routers. Explicit ack after the
deliveries of a batch were published; undecodable envelopes, and envelopes whose delivery keeps
failing on their own, are dead-lettered in the ``DLQ`` stream (``dlq.router``) and termed; RPC and
NATS outages are retried in place (``runtime.consumer``).

Produces: for each message, the ready-to-send ``message`` frame for every device of every
recipient user and the sender's other devices; for each receipt, a ``receipt`` frame to the
devices that should hear of it. Frames go to the gateways holding those devices: one
``EdgeBatch`` on ``edge.<gateway>`` (core NATS) per gateway per handled batch, each frame
encoded once with that gateway's devices (``router.edge``). Where a device is comes from the
``AttachEnvelope`` markers gateways publish into every partition (ordered with the messages),
else from presence; a device in neither is offline and gets the message from its backlog
when it syncs. For each recipient device that is offline
(presence registry), a ``PushJob`` on ``push.jobs`` (``router.push_jobs``); a batch is acked
only once JetStream stored its push jobs. Disabled devices, users and modules (control bucket)
get nothing.

Order: one replica publishes a batch in stream order, so deliveries of one conversation leave
a replica in seq order; with several replicas, frames of one conversation may interleave and
clients order by ``seq``. A frame is carried as the exact bytes the device receives, so
gateways forward it without re-encoding.

Groups: a group message goes to the members at its seq, from a membership cache that follows
the group's writes in stream order (``router.membership``); a group write's system message goes
to the members before and after it. Group delivery and read receipts are counted by the storage
worker, not forwarded per recipient.
"""
