"""NATS request/reply transport of the gateway: the service subjects."""
