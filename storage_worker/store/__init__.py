"""The message store: one interface (``base.MessageStore``), one implementation per backend."""
