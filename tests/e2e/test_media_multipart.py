"""Multipart uploads end to end, on a whole system with each blob store (local files behind
the gateway, S3 on a real SeaweedFS): a slot past ``media.part_bytes`` lists one URL per part,
each signed with its size (the storage refuses another); the completion takes every part
with its ETag and nothing else; a blob is not sendable before it; ``send_file`` uploads the
parts (retrying a failed one) and the receiver gets the whole file; an upload given up or
never completed is aborted and collected, leaving nothing in the storage."""

import io
import secrets
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web

from client.attachments import download, file_body, send_file, upload_parts
from client.sdk import ClientError
from schemas.ids import direct_conversation
from schemas.media import MIN_PART_BYTES, UploadSlot
from tests.e2e.e2ee_helpers import close_all, next_text
from tests.e2e.social_helpers import wait_for
from tests.e2e.test_media import MediaSystem, _pair, _secure_pair, _slot, media_system

PART = MIN_PART_BYTES
MAX_BYTES = 3 * PART + 1024
UNREFERENCED_TTL_S = 8
MULTIPART_ENV = {
    "COURIER_MEDIA_PART_BYTES": str(PART),
    "COURIER_MEDIA_MAX_BYTES": str(MAX_BYTES),
    "COURIER_MEDIA_USER_QUOTA_BYTES": str(4 * MAX_BYTES),
    "COURIER_MEDIA_URL_TTL_S": "5",
    "COURIER_MEDIA_UNREFERENCED_TTL_S": str(UNREFERENCED_TTL_S),
    "COURIER_MEDIA_SWEEP_INTERVAL_S": "0.5",
}
NEVER = '"0123456789abcdef0123456789abcdef"'


@pytest.fixture(scope="module", params=["local", "s3"])
def media(request: pytest.FixtureRequest,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[MediaSystem]:
    yield from media_system(request, tmp_path_factory, MULTIPART_ENV)


async def _put_part(part: dict[str, Any], body: bytes) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.request(
            part["method"], part["url"], data=io.BytesIO(body),
            headers=part["headers"]) as response:
        await response.read()
        return response.status, response.headers.get("ETag", "")


async def _complete(client: Any, blob: str, parts: object) -> tuple[int, Any]:
    status, reply = await client.api("POST", f"/v1/media/uploads/{blob}/complete",
                                     {"parts": parts})
    return int(status), reply


def _held_of(media: MediaSystem, blob: str) -> list[str]:
    return [entry for entry in media.held() if blob in entry]


async def test_a_slot_past_part_bytes_lists_parts_signed_with_their_size(
        media: MediaSystem) -> None:
    alice, bob, alice_id, bob_id = await _pair(media)
    conversation = direct_conversation(alice_id, bob_id)
    try:
        status, single = await _slot(alice, conversation, PART)  # at the threshold: one PUT
        assert status == 201 and single["parts"] == [] and single["url"]
        status, slot = await _slot(alice, conversation, 2 * PART + 10)
        assert status == 201, slot
        assert (slot["method"], slot["url"], slot["part_bytes"]) == ("", "", PART)
        assert [(p["number"], p["size"]) for p in slot["parts"]] == [
            (1, PART), (2, PART), (3, 10)]
        # straight to the storage: a part of another size than signed is refused
        last = slot["parts"][2]
        assert (await _put_part(last, b"x" * 11))[0] in (403, 413)
        assert (await _put_part(last, b"x" * 9))[0] in (403, 422)
        bodies = [secrets.token_bytes(PART), secrets.token_bytes(PART), b"y" * 10]
        etags = []
        for part, body in zip(slot["parts"], bodies, strict=True):
            status, etag = await _put_part(part, body)
            assert status == 200 and etag
            etags.append({"number": part["number"], "etag": etag})
        # not sendable before the completion
        with pytest.raises(ClientError) as refused:
            await alice.send(bob_id, b"too soon", blobs=[slot["blob"]])
        assert refused.value.code == "invalid"
        assert await _complete(alice, slot["blob"], etags) == (
            200, {"blob": slot["blob"], "size": 2 * PART + 10})
        assert media.stored(slot["blob"]) == b"".join(bodies)
        # completing again (a retry whose answer was lost) succeeds
        assert (await _complete(alice, slot["blob"], etags))[0] == 200
        await alice.send(bob_id, b"now", blobs=[slot["blob"]])
    finally:
        await alice.close()
        await bob.close()


async def test_a_large_file_goes_in_parts_end_to_end(media: MediaSystem,
                                                     tmp_path: Path) -> None:
    alice, bob = await _secure_pair(media, tmp_path / "e2ee")
    marker = b"COURIER-MULTIPART-MARKER-91c2"
    path = tmp_path / "film.bin"
    path.write_bytes(secrets.token_bytes(PART) + marker * 1000 + secrets.token_bytes(PART))
    try:
        await send_file(alice, bob.user, path)
        body = file_body(await next_text(bob))
        assert body is not None and body.file.size > 2 * PART  # three parts
        saved = await download(bob.client, body, tmp_path / "received")
        assert saved.read_bytes() == path.read_bytes()  # the hash covered the whole file
        stored = media.stored(body.file.blob)
        assert stored is not None and marker not in stored
    finally:
        await close_all(alice, bob)


async def test_a_failed_part_is_retried(media: MediaSystem) -> None:
    """Through a real proxy that fails the first try of every part (503, or a dropped
    connection): the client retries each and the upload completes."""
    alice, bob, alice_id, bob_id = await _pair(media)
    tries: dict[str, int] = {}

    async def flaky(request: web.Request) -> web.StreamResponse:
        target = request.query["to"]
        tries[target] = tries.get(target, 0) + 1
        body = await request.read()
        if tries[target] == 1:
            if target.endswith("drop"):
                assert request.transport is not None
                request.transport.close()
            return web.Response(status=503, text="try again")
        async with aiohttp.ClientSession() as session, session.put(
                target.removesuffix("#drop"), data=io.BytesIO(body),
                headers={k: v for k, v in request.headers.items()
                         if k.lower() == "content-type"}) as response:
            return web.Response(status=response.status, body=await response.read(),
                                headers={"ETag": response.headers.get("ETag", "")})

    app = web.Application(client_max_size=2 * PART)
    app.router.add_put("/", flaky)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    proxy = f"http://127.0.0.1:{runner.addresses[0][1]}/"
    try:
        size = PART + 5000
        status, reply = await _slot(alice, direct_conversation(alice_id, bob_id), size)
        assert status == 201
        slot = msgspec.convert(reply, UploadSlot)
        routed = msgspec.structs.replace(slot, parts=[msgspec.structs.replace(
            part, url=proxy + "?" + urllib.parse.urlencode(
                {"to": part.url + ("#drop" if part.number == 2 else "")}))
            for part in slot.parts])
        data = secrets.token_bytes(size)
        async with aiohttp.ClientSession() as session:
            parts = await upload_parts(session, routed, data)
        assert sorted(tries.values()) == [2, 2]  # each part failed once, then went through
        assert (await _complete(alice, slot.blob, msgspec.to_builtins(parts)))[0] == 200
        assert media.stored(slot.blob) == data
    finally:
        await runner.cleanup()
        await alice.close()
        await bob.close()


async def test_completions_refuse_bad_part_lists(media: MediaSystem) -> None:
    alice, bob, alice_id, bob_id = await _pair(media)
    conversation = direct_conversation(alice_id, bob_id)
    try:
        status, slot = await _slot(alice, conversation, PART + 1)
        assert status == 201
        blob = slot["blob"]
        etags = []
        for part, body in zip(slot["parts"], [b"p" * PART, b"q"], strict=True):
            status, etag = await _put_part(part, body)
            assert status == 200
            etags.append({"number": part["number"], "etag": etag})
        one, two = etags
        for parts in ([], None, [one],  # missing the last part
                      [two, one], [one, one, two],  # reordered, twice
                      [one, two, {"number": 3, "etag": NEVER}],  # past the slot
                      [{"number": 0, "etag": NEVER}, two], [one, {**two, "number": 10_001}],
                      [one, {"number": 2, "etag": "zz"}], [one, {"number": 2}],
                      [one, {**two, "extra": 1}], [one, {"number": "2", "etag": two["etag"]}],
                      [one, {"number": 2, "etag": NEVER}],  # the storage refuses the ETag
                      [{"number": 1, "etag": two["etag"]}, {"number": 2,
                                                            "etag": one["etag"]}]):
            assert (await _complete(alice, blob, parts))[0] == 422, parts
        status, reply = await alice.api("POST", f"/v1/media/uploads/{blob}/complete",
                                        {"parts": etags, "more": 1})
        assert status == 422, reply
        # bad and other blobs
        assert (await _complete(alice, "nope", etags))[0] == 422
        assert (await _complete(alice, "b" + "1" * 32, etags))[0] == 404
        assert (await _complete(bob, blob, etags))[0] == 404  # not bob's
        status, single = await _slot(alice, conversation, 10)
        assert (await _complete(alice, single["blob"], etags))[0] == 409
        assert (await _complete(alice, blob, etags))[0] == 200  # the right list still works
    finally:
        await alice.close()
        await bob.close()


async def test_an_upload_given_up_or_never_completed_leaves_nothing(
        media: MediaSystem) -> None:
    alice, bob, alice_id, bob_id = await _pair(media)
    conversation = direct_conversation(alice_id, bob_id)
    try:
        given_up, forgotten = [], []
        for kept in (given_up, forgotten):
            status, slot = await _slot(alice, conversation, PART + 1)
            assert status == 201
            assert (await _put_part(slot["parts"][0], b"r" * PART))[0] == 200
            kept.append(slot)
        blob = given_up[0]["blob"]
        assert (await bob.api("DELETE", f"/v1/media/uploads/{blob}"))[0] == 404  # not bob's
        assert (await alice.api("DELETE", "/v1/media/uploads/nope"))[0] == 422
        assert (await alice.api("DELETE", f"/v1/media/uploads/{blob}"))[0] == 204
        assert (await alice.api("DELETE", f"/v1/media/uploads/{blob}"))[0] == 404  # gone
        assert (await _complete(alice, blob, [{"number": 1, "etag": NEVER},
                                              {"number": 2, "etag": NEVER}]))[0] == 404
        # a sent blob follows its message, it cannot be given up
        status, single = await _slot(alice, conversation, 10)
        async with aiohttp.ClientSession() as session, session.put(
                single["url"], data=b"s" * 10, headers=single["headers"]) as response:
            assert response.status in (200, 204)
        await alice.send(bob_id, b"sent", blobs=[single["blob"]])
        assert (await alice.api("DELETE", f"/v1/media/uploads/{single['blob']}"))[0] == 409

        async def swept() -> bool:
            return not any(_held_of(media, slot["blob"])
                           for slot in given_up + forgotten)

        assert _held_of(media, forgotten[0]["blob"])  # its part is held until the sweep
        await wait_for(swept, within=UNREFERENCED_TTL_S + 30)
        for slot in given_up + forgotten:
            assert (await alice.api("GET", f"/v1/media/{slot['blob']}/download"))[0] == 404
    finally:
        await alice.close()
        await bob.close()


async def test_multipart_slots_at_and_past_the_bounds(media: MediaSystem) -> None:
    alice, bob, alice_id, bob_id = await _pair(media)
    conversation = direct_conversation(alice_id, bob_id)
    try:
        status, slot = await _slot(alice, conversation, MAX_BYTES)
        assert status == 201
        assert [p["size"] for p in slot["parts"]] == [PART, PART, PART, 1024]
        assert (await _slot(alice, conversation, MAX_BYTES + 1))[0] == 413
        assert (await _slot(alice, conversation, PART + 1))[0] == 201
    finally:
        await alice.close()
        await bob.close()


async def test_local_part_urls_refuse_bad_queries(media: MediaSystem) -> None:
    """The local store's part route: 422 for a malformed part number or query, 403 for a
    wrong signature, 404 for an upload that is not open; on S3 it is not served (404)."""
    alice, bob, alice_id, bob_id = await _pair(media)
    try:
        status, slot = await _slot(alice, direct_conversation(alice_id, bob_id), PART + 1)
        assert status == 201
        local = "/v1/media/local/" in slot["parts"][0]["url"]
        base = f"{media.system.url}/v1/media/local/default/{slot['blob']}/parts"
        signed = f"upload={'0' * 32}&expires=9999999999&size=1"
        cases = [(f"1?{signed}&sig={'0' * 64}", 403), (f"0?{signed}&sig={'0' * 64}", 422),
                 (f"10001?{signed}&sig={'0' * 64}", 422), (f"x?{signed}&sig={'0' * 64}", 422),
                 (f"1?upload=zz&expires=1&size=1&sig={'0' * 64}", 422),
                 (f"1?expires=1&size=1&sig={'0' * 64}", 422), (f"1?{signed}", 422)]
        async with aiohttp.ClientSession() as session:
            for query, expected in cases:
                async with session.put(f"{base}/{query}", data=b"z") as response:
                    assert response.status == (expected if local else 404), (
                        query, await response.text())
            if local:  # a well-signed part of an upload given up: not found
                assert (await alice.api("DELETE", f"/v1/media/uploads/{slot['blob']}"))[0] == 204
                assert (await _put_part(slot["parts"][1], b"z"))[0] == 404
    finally:
        await alice.close()
        await bob.close()
