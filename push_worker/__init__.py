"""Push worker: wakes up devices that are offline when something arrives for them.

Consumes: ``push.jobs`` (stream ``PUSH``, work-queue retention) through the durable pull
consumer ``push``, shared by every replica. The router publishes one ``PushJob`` per message
and offline recipient device (messages, business notifications, system messages alike).

Coalesces: jobs of one (device, conversation) arriving within ``collapse_window_s`` of the first
become one ``WakeUp`` with a per-device-and-conversation collapse key, so a burst is one push
and, on the device, one visible notification. The wake-up carries a random id and a count,
nothing that names the conversation, its members or its messages: what it stands for is
recorded in ``courier_push_wakeups`` (KV, ``push_worker.wakeups``) for the device to fetch.
Per user, pushes are limited (``user_per_minute``/``user_burst``); a burst over the limit
waits and keeps coalescing.

Produces: one provider call per burst; the provider is chosen by the device's registered
platform (``courier_push_tokens`` KV): AWS SNS platform endpoints (apns, apns_sandbox, fcm), a
signed webhook (webpush, webhook) or the log (development). A token the provider rejects is
disabled in the registry. ``DeadPush`` records go to ``push.dead`` (same stream) after
``max_attempts`` sends or on a permanent failure; undecodable jobs are dead-lettered too.

Ack policy: explicit. A burst's jobs are acked after the provider accepted the wake-up (or the
token was rejected, or the device has no usable registration); on a transient failure they are
nak'ed with exponential backoff (JetStream redelivers them, and they coalesce again); held jobs
get ``in_progress`` so JetStream does not redeliver them while they wait. A crash before the
ack means redelivery and possibly a second identical push (at-least-once).

Replicas: with one replica, a burst gives exactly one push. With several, the jobs of one
burst can be split between replicas and each sends its part: at most one push per replica per
burst, all with the same collapse key, so the device still shows one notification.
"""
