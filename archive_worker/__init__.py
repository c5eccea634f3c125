"""The archive worker: moves old history from the message store to the blob store in verified,
immutable, compressed chunks (one index object per conversation), then purges what it moved;
the storage worker reads history back across store and archive (``archive_worker.reader``).
See docs/archive.md."""
