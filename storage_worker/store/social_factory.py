"""Choose the groups and contacts store for the configured backend."""

from runtime.config import StoreConfig
from storage_worker.store.base import MessageStore
from storage_worker.store.social import SocialStore
from storage_worker.store.social_sqlite import SqliteSocialStore
from storage_worker.store.sqlite import SqliteStore


def create_social_store(config: StoreConfig, messages: MessageStore, *,
                        default_app: str = "default") -> SocialStore:
    """A closed ``SocialStore``; ``open()`` it after ``messages``.

    On SQLite it shares the message store's database. There is no Cassandra implementation
    yet: with ``backend = "cassandra"`` groups and contacts live in the SQLite file at
    ``sqlite_path`` (one storage worker) until one is written against the contract suite.
    """
    if isinstance(messages, SqliteStore):
        return SqliteSocialStore(messages)
    return SqliteSocialStore(SqliteStore(config.sqlite_path, default_app), owned=True)
