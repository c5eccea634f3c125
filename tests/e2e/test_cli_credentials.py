"""The CLI's cached credentials: ``--fresh`` never takes the cached device away from a terminal
that uses it; ``--device`` keeps more devices of one user; each server has its own cache."""

from pathlib import Path

import pytest

from client import cli
from tests.harness import System


async def test_fresh_and_labelled_devices_leave_the_cached_one_alone(
        shared_system: System, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "CACHE", tmp_path)
    url = shared_system.url
    first = await cli.credentials(url, "carol")
    assert (await cli.credentials(url, "carol")).device == first.device  # cached
    fresh = await cli.credentials(url, "carol", fresh=True)
    assert fresh.device != first.device
    assert (await cli.credentials(url, "carol")).device == first.device  # not overwritten
    tablet = await cli.credentials(url, "carol", label="tablet")
    assert tablet.device not in (first.device, fresh.device)
    assert (await cli.credentials(url, "carol", label="tablet")).device == tablet.device
    assert cli.cache_path(url, "carol", None).stat().st_mode & 0o077 == 0
    assert cli.cache_path("http://127.0.0.1:1", "carol", None) != cli.cache_path(
        url, "carol", None)
