"""Choose the groups and contacts store for the configured backend."""

from storage_worker.store.base import MessageStore
from storage_worker.store.social import SocialStore
from storage_worker.store.social_sqlite import SqliteSocialStore
from storage_worker.store.sqlite import SqliteStore


def create_social_store(messages: MessageStore) -> SocialStore:
    """A closed ``SocialStore`` in the database of ``messages``; ``open()`` it after
    ``messages`` (whose migrations create its tables)."""
    if isinstance(messages, SqliteStore):
        return SqliteSocialStore(messages)
    from storage_worker.store.cassandra import CassandraStore
    from storage_worker.store.social_cassandra import CassandraSocialStore

    if isinstance(messages, CassandraStore):
        return CassandraSocialStore(messages)
    raise TypeError(f"no groups and contacts store for {type(messages).__name__}")
