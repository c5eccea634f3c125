"""Choose the store backend named by configuration."""

from runtime.config import StoreConfig
from storage_worker.store.base import ArchivingStore, RetentionPolicy
from storage_worker.store.sqlite import SqliteStore


def create_store(config: StoreConfig, retention: RetentionPolicy | None = None, *,
                 default_app: str = "default", partitions: int = 1) -> ArchivingStore:
    """A closed store of the configured backend; call ``open()`` before use. ``retention``
    lets backends with row TTLs (Cassandra) apply it from the first write; ``default_app``
    (``COURIER_APP``) is the app a schema migration gives rows that stored none;
    ``partitions`` is ``partitions.count``, what a seq's ``seq % partitions`` means."""
    if config.backend == "sqlite":
        return SqliteStore(config.sqlite_path, default_app, partitions=partitions)
    from storage_worker.store.cassandra import CassandraStore

    return CassandraStore(config, retention, default_app=default_app, partitions=partitions)
