"""media: upload and download throughput of attachments through Courier, beside raw SeaweedFS
in the same run.

Courier: the embedded system's path a client takes (local blob store): ``POST
/v1/media/uploads`` then the signed ``PUT`` to the gateway; ``GET /v1/media/{blob}/download``
then the signed ``GET``. Raw SeaweedFS: a ``weed mini`` started for the scenario, a SigV4
presigned ``PUT`` and ``GET`` straight to its S3 port (what an S3 deployment's clients do
after the gateway signed). Each size (1 MB and 20 MB; 1 and 2 MB at smoke sizes) is moved
``media_rounds`` times one after the other; ``<path>_<up|down>_mb_s_<size>mb`` is the mean
MB/s (MB = 10^6 bytes), each transfer timed from the first request to the last byte. Bodies
are random (the client's encryption is not timed); every download is compared with what was
uploaded (``lost`` counts mismatches). The percentiles are Courier 1 MB upload times.
"""

import io
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final

import aiohttp
import numpy as np

from bench.scenario import Context, Outcome
from bench.stats import percentiles
from bench.system import mint_token
from blobs.s3 import S3BlobStore
from infra.seaweedfs import SeaweedFs

NAME: Final = "media"
MB: Final = 1_000_000
URL_TTL_S: Final = 300
Transfer = Callable[[bytes], Awaitable[tuple[float, float, bool]]]


async def _put(session: aiohttp.ClientSession, method: str, url: str,
               headers: dict[str, str], body: bytes) -> None:
    async with session.request(method, url, data=io.BytesIO(body),
                               headers=headers) as response:
        await response.read()
        if response.status not in (200, 204):
            raise RuntimeError(f"upload refused: {response.status}")


async def _get(session: aiohttp.ClientSession, url: str) -> bytes:
    async with session.get(url) as response:
        if response.status != 200:
            raise RuntimeError(f"download refused: {response.status}")
        return await response.read()


def _courier(session: aiohttp.ClientSession, base: str, token: str, user: str) -> Transfer:
    auth = {"Authorization": f"Bearer {token}"}

    async def transfer(body: bytes) -> tuple[float, float, bool]:
        started = time.perf_counter()
        async with session.post(f"{base}/v1/media/uploads", headers=auth, json={
                "size": len(body), "content_type": "application/octet-stream",
                "conversation": f"d:{user}:{user}"}) as response:
            slot = await response.json()
            if response.status != 201:
                raise RuntimeError(f"no slot: {slot}")
        await _put(session, slot["method"], slot["url"], slot["headers"], body)
        uploaded = time.perf_counter()
        async with session.get(f"{base}/v1/media/{slot['blob']}/download",
                               headers=auth) as response:
            grant = await response.json()
        got = await _get(session, grant["url"])
        return uploaded - started, time.perf_counter() - uploaded, got == body

    return transfer


def _raw(session: aiohttp.ClientSession, store: S3BlobStore) -> Transfer:
    async def transfer(body: bytes) -> tuple[float, float, bool]:
        key = f"bench/b{secrets.token_hex(16)}"
        started = time.perf_counter()
        upload = store.upload(key, len(body), "application/octet-stream", URL_TTL_S)
        await _put(session, upload.method, upload.url, upload.headers, body)
        uploaded = time.perf_counter()
        got = await _get(session, store.download_url(key, URL_TTL_S))
        return uploaded - started, time.perf_counter() - uploaded, got == body

    return transfer


async def run(ctx: Context) -> Outcome:
    sizes_mb, rounds = ctx.sizes.media_sizes_mb, ctx.sizes.media_rounds
    figures: dict[str, object] = {"rounds": rounds}
    mismatched = transfers = 0
    upload_ms: list[float] = []
    user = "media-bench"
    token = mint_token(ctx.system.secret, user, "media-bench-d")
    with SeaweedFs(Path(ctx.system.data_dir) / "seaweedfs") as server:
        store = S3BlobStore("bench", endpoint_url=server.endpoint_url,
                            access_key=server.access_key, secret_key=server.secret_key,
                            create_bucket=True)
        await store.open()
        try:
            async with aiohttp.ClientSession() as session:
                paths = {"courier": _courier(session, ctx.system.http_url, token, user),
                         "seaweedfs": _raw(session, store)}
                for size_mb in sizes_mb:
                    body = secrets.token_bytes(size_mb * MB)
                    for path, transfer in paths.items():
                        up, down = [], []
                        for _ in range(rounds):
                            up_s, down_s, same = await transfer(body)
                            up.append(up_s)
                            down.append(down_s)
                            transfers += 1
                            mismatched += not same
                            if path == "courier" and size_mb == sizes_mb[0]:
                                upload_ms.append(up_s * 1000)
                        figures[f"{path}_up_mb_s_{size_mb}mb"] = round(
                            size_mb / float(np.mean(up)), 1)
                        figures[f"{path}_down_mb_s_{size_mb}mb"] = round(
                            size_mb / float(np.mean(down)), 1)
        finally:
            await store.close()
    latencies = np.array(upload_ms, dtype=np.float64)
    figures.update(percentiles(latencies))
    figures.update({"sent": transfers, "delivered": transfers - mismatched,
                    "lost": mismatched, "duplicates": 0, "out_of_order": 0})
    return Outcome(figures, latency_label=f"Courier upload of {sizes_mb[0]} MB",
                   latencies_ms=latencies)
