"""Choose the key directory store for the message store's backend."""

from storage_worker.store.base import MessageStore
from storage_worker.store.keys import KeyStore
from storage_worker.store.keys_sqlite import SqliteKeyStore
from storage_worker.store.sqlite import SqliteStore


def create_key_store(messages: MessageStore) -> KeyStore:
    """A closed ``KeyStore`` in the database of ``messages``; ``open()`` it after ``messages``."""
    if isinstance(messages, SqliteStore):
        return SqliteKeyStore(messages)
    from storage_worker.store.cassandra import CassandraStore
    from storage_worker.store.keys_cassandra import CassandraKeyStore

    assert isinstance(messages, CassandraStore)
    return CassandraKeyStore(messages)
