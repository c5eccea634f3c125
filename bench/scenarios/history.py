"""history: REST history page latency from the hot store and from the archive.

One conversation gets ``history_messages`` messages in two halves, the second sent after the
clock passed the first's newest timestamp; an ``archive.run`` (as an operator's tool sends it)
archives the first half into the embedded system's local blob store and purges it from
SQLite. Then ``history_pages`` pages of 50 are read one after the other, at random positions,
from each side: ``hot`` pages lie wholly above the archived position, ``archive`` pages wholly
at or below it (through the storage worker's chunk cache: a chunk is decoded once per worker,
``archive_cold_ms`` is the first page's time, before any chunk was cached). Every page is
checked for its 50 messages in order (``lost`` counts pages that were not). The percentiles
are the archive pages'; ``hot_*`` and ``archive_*`` both sides'.
"""

import asyncio
import random
import time
from typing import Any, Final

import aiohttp
import msgspec
import numpy as np

from bench.scenario import Context, Outcome
from bench.stats import percentiles
from bench.system import mint_token
from client.sdk import CourierClient, Credentials
from schemas.archive import ARCHIVE_RUN
from schemas.ids import direct_conversation

NAME: Final = "history"
PAGE: Final = 50
SEND_WINDOW: Final = 50
ARCHIVE_TIMEOUT_S: Final = 300.0


async def run(ctx: Context) -> Outcome:
    total, pages = ctx.sizes.history_messages, ctx.sizes.history_pages
    conversation = direct_conversation("hist-a", "hist-b")
    secret = ctx.system.secret
    sender, recipient = (CourierClient(ctx.system.http_url, Credentials(
        user=user, device=f"{user}-d", token=mint_token(secret, user, f"{user}-d")))
        for user in ("hist-a", "hist-b"))
    reader = recipient.credentials.token
    await recipient.connect()  # registers the recipient
    await recipient.close()
    await sender.connect()
    try:
        await _send(sender, "old", total // 2)
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {reader}"}) as http:
            url = f"{ctx.system.http_url}/v1/conversations/{conversation}/messages"
            cutoff = await _newest_ts(http, url) + 1
            await asyncio.sleep(max(0.0, cutoff / 1000 - time.time()) + 0.002)
            await _send(sender, "new", total - total // 2)
            report = await _archive(ctx, cutoff)
            seqs = await _all_seqs(http, url)  # the archive holds a prefix of them
            archived, hot = seqs[:report["messages"]], seqs[report["messages"]:]
            rng = random.Random(1)
            cold_ms, _ = await _page(http, url, archived[-1] + 1, archived)
            timings: dict[str, list[float]] = {"hot": [], "archive": []}
            wrong = 0
            for _ in range(pages):
                for side, side_seqs in (("hot", hot), ("archive", archived)):
                    before = side_seqs[rng.randrange(PAGE, len(side_seqs))]
                    elapsed_ms, ok = await _page(http, url, before, side_seqs)
                    timings[side].append(elapsed_ms)
                    wrong += not ok
    finally:
        await sender.close()
    archive_ms = np.array(timings["archive"], dtype=np.float64)
    figures: dict[str, Any] = {**percentiles(archive_ms), "delivered_per_s": None,
                               "sent": total, "delivered": None, "lost": wrong,
                               "duplicates": None, "out_of_order": None,
                               "messages": total, "archived": report["messages"],
                               "chunks": report["chunks"], "pages": pages,
                               "archive_cold_ms": round(cold_ms, 3)}
    for side, values in timings.items():
        side_figures = percentiles(np.array(values, dtype=np.float64))
        figures.update({f"{side}_{key}": value for key, value in side_figures.items()})
    return Outcome(figures, latency_label="archive history page", latencies_ms=archive_ms)


async def _send(client: CourierClient, label: str, count: int) -> None:
    for start in range(0, count, SEND_WINDOW):
        batch = range(start, min(count, start + SEND_WINDOW))
        await asyncio.gather(*(client.send("hist-b", f"{label}-{i}".encode()) for i in batch))


async def _newest_ts(http: aiohttp.ClientSession, url: str) -> int:
    async with http.get(f"{url}?limit=1") as response:
        page = await response.json()
    return int(page["items"][0]["message"]["ts"])


async def _archive(ctx: Context, cutoff: int) -> dict[str, Any]:
    """Run the archive up to ``cutoff``; its report."""
    nc = await ctx.system.nats_credentials.connect(ctx.system.nats_url, "admin")
    try:
        reply = msgspec.json.decode((await nc.request(
            ARCHIVE_RUN, msgspec.json.encode({"before_ts": cutoff}),
            timeout=ARCHIVE_TIMEOUT_S)).data)
    finally:
        await nc.close()
    if reply.get("r") != "ok":
        raise RuntimeError(f"archive run failed: {reply}")
    report: dict[str, Any] = reply["value"]
    return report


async def _all_seqs(http: aiohttp.ClientSession, url: str) -> list[int]:
    seqs: list[int] = []
    cursor = 0
    while True:
        async with http.get(f"{url}?limit=200&after={cursor}") as response:
            page = await response.json()
        seqs.extend(item["message"]["seq"] for item in page["items"])
        if page["next_after"] is None:
            return seqs
        cursor = page["next_after"]


async def _page(http: aiohttp.ClientSession, url: str, before: int,
                side: list[int]) -> tuple[float, bool]:
    """One backward page's time (ms) and whether it held the 50 messages below ``before``."""
    started = time.perf_counter()
    async with http.get(f"{url}?limit={PAGE}&before={before}") as response:
        page = await response.json()
    elapsed_ms = (time.perf_counter() - started) * 1000
    got = [item["message"]["seq"] for item in page["items"]]
    return elapsed_ms, got == [seq for seq in side if seq < before][-PAGE:]
