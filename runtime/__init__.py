"""What every service process shares: configuration, logging, metrics, NATS connection and the
start/drain/stop lifecycle. No business logic lives here."""
