"""WebSocket transport of the gateway: the upgrade, one socket's frames, the device hub."""
