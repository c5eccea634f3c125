"""One store fixture per backend: the contract suite runs against each."""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage_worker.store.base import MessageStore
from storage_worker.store.sqlite import SqliteStore

BACKENDS = ["sqlite"]


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MessageStore]:
    backend: MessageStore = SqliteStore(tmp_path / "store.db")
    await backend.open()
    try:
        yield backend
    finally:
        await backend.close()
