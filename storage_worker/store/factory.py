"""Choose the store backend named by configuration."""

from runtime.config import StoreConfig
from storage_worker.store.base import MessageStore
from storage_worker.store.sqlite import SqliteStore


def create_store(config: StoreConfig) -> MessageStore:
    """A closed store of the configured backend; call ``open()`` before use."""
    if config.backend == "sqlite":
        return SqliteStore(config.sqlite_path)
    from storage_worker.store.cassandra import CassandraStore

    return CassandraStore(config)
