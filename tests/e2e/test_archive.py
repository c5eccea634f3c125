"""The archive end to end (issue 15), against a real SeaweedFS: half of a 2,000-message
conversation archived in verified chunks and purged from the store; history pages backwards
and forwards across the seam with the API's cursors, every message once, in order; a
non-member cannot page the archive; a SIGKILL of the archive worker in the middle of a run,
then a rerun, loses and duplicates nothing; bad ``archive.run`` requests get typed errors."""

import asyncio
import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from archive_worker.chunks import index_key
from infra.seaweedfs import SeaweedFs
from schemas.archive import MAX_TS
from schemas.errors import ErrorCode
from schemas.ids import direct_conversation
from tests.conftest import store_env
from tests.e2e.archive_helpers import (
    archive_system,
    bucket_keys,
    get_json,
    page_all,
    read_index,
    run_archive,
    send_all,
    stored,
)
from tests.e2e.social_helpers import wait_for
from tests.harness import System

AB = direct_conversation("alice", "bob")
HALF = 1000


async def _cutoff_after_newest(system: System, token: str, conversation: str) -> int:
    """A ``before_ts`` just after the newest message of the conversation, once the clock
    has passed it (so every message sent from now on is at or after it)."""
    status, page = await get_json(
        f"{system.url}/v1/conversations/{conversation}/messages?limit=1", token)
    assert status == 200
    cutoff = int(page["items"][0]["message"]["ts"]) + 1
    while time.time() * 1000 <= cutoff:
        await asyncio.sleep(0.005)
    return cutoff


async def test_half_archived_pages_across_the_seam(tmp_path: Path, seaweedfs: SeaweedFs,
                                                   request: pytest.FixtureRequest) -> None:
    with archive_system(tmp_path, seaweedfs, store_env(request),
                        COURIER_ARCHIVE_CHUNK_MESSAGES="128") as (system, bucket):
        alice = await system.connect(await system.device("alice"))
        bob = await system.device("bob")
        carol = await system.device("carol")
        try:
            old = [f"old-{i}" for i in range(HALF)]
            new = [f"new-{i}" for i in range(HALF)]
            await send_all(alice, "bob", old)
            cutoff = await _cutoff_after_newest(system, bob.token, AB)
            await send_all(alice, "bob", new)
            before = await page_all(system, AB, bob.token, forward=True, limit=200)

            reply = await run_archive(system, {"before_ts": cutoff})
            assert reply["r"] == "ok", reply
            report = reply["value"]
            assert report["messages"] == HALF and report["purged"] == HALF
            assert report["chunks"] == 8  # 7 of 128 and one of 104

            # the archived rows are gone from the store; the rest stayed
            rows, mark = await stored(system, AB)
            assert sorted(row.envelope.body.decode() for row in rows  # type: ignore[union-attr]
                          ) == sorted(new)
            assert mark.archived == mark.purged == before[HALF - 1][0]
            assert min(row.seq for row in rows) > mark.archived
            index = read_index(seaweedfs, bucket, AB)
            assert sum(ref.count for ref in index.chunks) == HALF
            assert bucket_keys(seaweedfs, bucket, AB) == {
                index_key("default", AB), *(ref.key for ref in index.chunks)}

            # every message once, in order, both ways, with a page straddling the seam
            for limit in (200, 150, 7):
                forward = await page_all(system, AB, bob.token, forward=True, limit=limit)
                assert forward == before
                backward = await page_all(system, AB, bob.token, forward=False, limit=limit)
                assert backward == before[::-1]
            assert sorted(body for _, body in before) == sorted(old + new)
            sender_view = await page_all(system, AB, alice.credentials.token, forward=True,
                                         limit=200)
            assert [seq for seq, _ in sender_view] == [seq for seq, _ in before]

            # a non-member pages neither the archive nor the store
            url = f"{system.url}/v1/conversations/{AB}/messages"
            for query in ("", f"?before={mark.archived}", "?after=0",
                          f"?after={mark.archived}"):
                status, problem = await get_json(url + query, carol.token)
                assert status == 403 and problem["code"] == ErrorCode.NOT_MEMBER, query

            # a rerun finds nothing more to do
            again = await run_archive(system, {"before_ts": cutoff})
            assert again["value"]["messages"] == 0 and again["value"]["purged"] == 0
            assert await page_all(system, AB, bob.token, forward=True, limit=200) == before
        finally:
            await alice.close()


async def test_a_sigkill_mid_run_loses_and_duplicates_nothing(
        tmp_path: Path, seaweedfs: SeaweedFs, request: pytest.FixtureRequest) -> None:
    with archive_system(tmp_path, seaweedfs, store_env(request),
                        COURIER_ARCHIVE_CHUNK_MESSAGES="10") as (system, bucket):
        alice = await system.connect(await system.device("alice"))
        bob = await system.device("bob")
        try:
            bodies = [f"m-{i}" for i in range(HALF)]
            await send_all(alice, "bob", bodies)
            cutoff = await _cutoff_after_newest(system, bob.token, AB)
            await send_all(alice, "bob", ["after the cutoff"])  # a sentinel that stays hot
            before = await page_all(system, AB, bob.token, forward=True, limit=200)
            assert archive_worker_running(system)
            for chunks in (5, 30, 60):  # kill the worker in the middle of three runs
                run = asyncio.create_task(run_archive(system, {"before_ts": cutoff}))
                try:
                    await _until_chunks(seaweedfs, bucket, chunks)
                    assert system.archive is not None
                    system.archive.kill()
                finally:
                    run.cancel()  # its reply will never come
                    await asyncio.gather(run, return_exceptions=True)
                assert (await stored(system, AB))[1].archived < before[HALF - 1][0]
                assert await page_all(system, AB, bob.token, forward=True, limit=200) == before
                assert system.archive is not None
                system.archive.start()
                system.archive.wait_started(60)
            reply = await run_archive(system, {"before_ts": cutoff})
            assert reply["r"] == "ok", reply
            rows, mark = await stored(system, AB)
            assert [row.envelope.body for row in rows] == [b"after the cutoff"]
            assert mark.archived == mark.purged == before[HALF - 1][0]
            index = read_index(seaweedfs, bucket, AB)
            covered = [(ref.first, ref.last) for ref in index.chunks]
            assert covered == sorted(covered)
            assert all(a[1] < b[0] for a, b in itertools.pairwise(covered))
            assert sum(ref.count for ref in index.chunks) == HALF
            # a chunk written before a kill was overwritten by the rerun, not left behind
            assert bucket_keys(seaweedfs, bucket, AB) == {
                index_key("default", AB), *(ref.key for ref in index.chunks)}
            assert await page_all(system, AB, bob.token, forward=True, limit=200) == before
            assert await page_all(system, AB, bob.token, forward=False, limit=33) == before[::-1]
        finally:
            await alice.close()


def archive_worker_running(system: System) -> bool:
    return system.archive is not None and system.archive.running()


async def _until_chunks(server: SeaweedFs, bucket: str, count: int,
                        timeout: float = 120.0) -> None:
    """Until the conversation's archive holds more than ``count`` chunk objects."""

    async def more() -> bool:
        return len(await asyncio.to_thread(bucket_keys, server, bucket, AB)) > count

    await wait_for(more, within=timeout)


@pytest.mark.parametrize("request_body, code", [
    (b"not json", ErrorCode.BAD_FRAME),
    (b'{"before_ts": -1}', ErrorCode.INVALID),
    (f'{{"before_ts": {MAX_TS + 1}}}'.encode(), ErrorCode.INVALID),
    (b'{"before_ts": "soon"}', ErrorCode.INVALID),
    (b'{"app": "no spaces allowed"}', ErrorCode.INVALID),
    (b'{"unknown": 1}', ErrorCode.INVALID),
    (b'{"app": "' + b"a" * 5000 + b'"}', ErrorCode.TOO_LARGE),
    (b'{"app": "chat-ephemeral"}', ErrorCode.INVALID),
])
async def test_bad_archive_requests_get_typed_errors(archive_only: System, request_body: bytes,
                                                      code: str) -> None:
    reply = await run_archive(archive_only, request_body, timeout=30)
    assert reply == {"r": "failed", "code": code, "message": reply["message"]}
    # the worker keeps serving: requests at the bounds succeed
    for good in ({"before_ts": MAX_TS}, {"before_ts": 0}, {"app": "a" * 64}, {}):
        assert (await run_archive(archive_only, good, timeout=30))["r"] == "ok", good


@pytest.fixture(scope="module")
def archive_only(tmp_path_factory: pytest.TempPathFactory, seaweedfs: SeaweedFs,
                 request: pytest.FixtureRequest) -> Iterator[System]:
    with archive_system(tmp_path_factory.mktemp("archive"), seaweedfs, store_env(request),
                        COURIER_RETENTION_EPHEMERAL_APPS="chat-ephemeral") as (system, _):
        yield system


ADMIN_SECRET = "a" * 40


async def _admin_archive(url: str, body: bytes, secret: str | None = ADMIN_SECRET,
                         ) -> tuple[int, dict[str, object]]:
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{url}/v1/admin/archive", data=body,
                                headers=headers) as response:
            return response.status, await response.json(content_type=None)


async def test_admin_rest_runs_the_archive(tmp_path: Path, seaweedfs: SeaweedFs,
                                           request: pytest.FixtureRequest) -> None:
    with archive_system(tmp_path, seaweedfs, store_env(request),
                        COURIER_AUTH_ADMIN_SECRET=ADMIN_SECRET) as (system, bucket):
        alice = await system.connect(await system.device("alice"))
        bob = await system.device("bob")
        try:
            await send_all(alice, "bob", [f"r-{i}" for i in range(30)])
            cutoff = await _cutoff_after_newest(system, bob.token, AB)
            status, report = await _admin_archive(system.url,
                                                  f'{{"before_ts": {cutoff}}}'.encode())
            assert status == 200 and report["messages"] == 30, report
            assert read_index(seaweedfs, bucket, AB).through > 0
            for body, code in ((b"{", 400), (b'{"before_ts": -1}', 422),
                               (f'{{"before_ts": {MAX_TS + 1}}}'.encode(), 422),
                               (b'{"app": "x y"}', 422), (b'{"nope": true}', 422)):
                status, problem = await _admin_archive(system.url, body)
                assert status == code, (body, problem)
            status, problem = await _admin_archive(system.url, b"{}", secret=None)
            assert status == 401
            status, problem = await _admin_archive(system.url, b"{}", secret="b" * 40)
            assert status in (401, 403)
            assert system.archive is not None
            system.archive.stop()
            status, problem = await _admin_archive(system.url, b"{}")
            assert status == 503 and problem["code"] == ErrorCode.UNAVAILABLE
        finally:
            await alice.close()
