"""Python client library and CLI for the Courier protocol (used by tests, the benchmark and
people trying the system from a terminal)."""

from client.sdk import ClientError, CourierClient, Credentials, register_device

__all__ = ["ClientError", "CourierClient", "Credentials", "register_device"]
