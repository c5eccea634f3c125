"""The gateway's work, below its transports: messaging, permissions, presence, limits, control."""
