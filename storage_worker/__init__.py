"""Storage worker: the only writer of the message store.

Consumes: the partitions whose lease it holds (``runtime.partitions``), each partition stream
``MSGS_<p>`` through its durable pull consumer ``storage`` (explicit ack); any number of storage
workers share the partitions, one writer per partition at a time. Messages are stored with their
inbox entries, receipts update delivery state and read markers; a batch is acked only after the
store committed it, so a crash means redelivery, and every write is idempotent (keyed by server id /
seq). Envelopes that cannot be decoded, and envelopes the store keeps refusing on their own (after
the batch was split to isolate them), are dead-lettered in the ``DLQ`` stream (``dlq.storage``) and
termed; a store outage (``StoreUnavailable``) is retried in place and dead-letters nothing
(``runtime.consumer``).

Serves: ``store.rpc.<op>`` request/reply in queue group ``storage`` (device registry, backlog
sync, history, conversation lists); a sync waits until everything the stream accepted before
the request was stored (the subscribe-before-fetch barrier).

Order: batches are applied in stream order, so the store sees each conversation in seq order.

Groups and contacts (``storage_worker.group_*``, ``storage_worker.contacts``): group writes are
``group_write`` RPCs the worker decides, publishes on ``msgs.group`` and applies in stream order
(announced on ``grp.changed``), so a group message enters the inboxes of the members at its seq;
contact writes are plain RPC writes announced on ``contacts.changed``.
"""
