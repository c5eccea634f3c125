"""Courier's benchmark: real WebSocket clients against a system started the way ``make run``
starts it, with the NATS fabric floor measured in the same run.

``python -m bench`` (``make bench``) runs the scenarios below, each against a fresh system in
a temporary data directory on free ports, and writes ``bench/results/latest.json``, a Markdown
table and PNG plots. The load comes from several generator processes (``multiprocessing``,
spawn) so the generator is not the bottleneck it measures.

==================== =======================================================================
scenario             what it measures
==================== =======================================================================
floor-nats           raw nats-py: publisher -> JetStream -> forwarder (pull, republish) ->
                     subscriber; p50/p99 at direct-latency's offered rate, and the max rate
direct-latency       1:1 messages between connected pairs at a fixed offered rate: send to
                     receipt p50/p95/p99, lost, duplicate and out-of-order counts
direct-throughput    the highest sustained delivered 1:1 rate (closed loop, persistence on)
group-fanout         one group of online members: deliveries per second and p99
offline-catchup      a device offline while messages arrive: reconnect to last message
connections          idle authenticated sockets on one gateway: RSS per socket, heartbeat CPU
==================== =======================================================================
"""
