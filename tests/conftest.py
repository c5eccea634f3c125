"""Fixtures that start real servers (nats-server, the services) in a temp directory."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import System


@pytest.fixture
def system(tmp_path: Path) -> Iterator[System]:
    """nats-server + storage worker + one router + one gateway, stopped after the test."""
    system = System(tmp_path).start()
    try:
        yield system
    finally:
        system.stop()


@pytest.fixture(scope="module")
def shared_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """One system for a whole module of tests that do not disturb each other."""
    system = System(tmp_path_factory.mktemp("system")).start()
    try:
        yield system
    finally:
        system.stop()
