"""Helpers that run the real external services (Cassandra, ...) for tests and local development."""
