"""Choose the store backend named by configuration."""

from runtime.config import StoreConfig
from storage_worker.store.base import MessageStore, RetentionPolicy
from storage_worker.store.sqlite import SqliteStore


def create_store(config: StoreConfig, retention: RetentionPolicy | None = None) -> MessageStore:
    """A closed store of the configured backend; call ``open()`` before use. ``retention``
    lets backends with row TTLs (Cassandra) apply it from the first write."""
    if config.backend == "sqlite":
        return SqliteStore(config.sqlite_path)
    from storage_worker.store.cassandra import CassandraStore

    return CassandraStore(config, retention)
