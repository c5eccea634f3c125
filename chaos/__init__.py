"""Fault injection: ``python -m chaos`` (``make chaos``).

While senders stream messages through the client library to online and offline recipients
(``chaos.load``), each fault of ``chaos.faults`` is injected in turn into a fresh system
started by ``tests.harness.System`` (SIGKILL and restart of each service and of nats-server,
SIGSTOP past the JetStream ack wait, a storage worker restarted while its store is locked).
``chaos.accounting`` counts what was accepted, delivered, lost, shown twice and out of order,
and how long delivery took to come back; ``chaos.report`` writes the table into
docs/reliability.md. Processes are ended only by the PIDs the suite started; traffic goes to
127.0.0.1 only, bounded in count and time.
"""
