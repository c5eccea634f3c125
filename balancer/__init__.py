"""The balancer: tells a client which gateway to open its WebSocket on, and hands it a
short-lived ticket for that gateway (docs/protocol.md, "Connecting through the balancer").

It follows the ``courier_gateways`` KV bucket (each gateway's beat: its public URL, open
sockets, CPU, draining; ``schemas.presence.GatewayBeat``) into a local copy, and answers
``POST /v1/connect`` from it alone: no NATS round trip per request. It holds no other state,
so any number of balancers can run behind a plain HTTP load balancer. Its NATS credential
reads that one bucket and nothing else.
"""
