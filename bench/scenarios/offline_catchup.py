"""offline-catchup: a device offline while messages arrive, then reconnecting.

The device connects once (so it is registered) and goes away; 50 senders then send it 10,000
messages in total (closed loop, a window of 8 each). Once the storage worker has stored them
all and the router has routed them all (nothing is in flight; ``settle_s`` is how long that
took after the last send), the device reconnects, sends ``sync``, acknowledges as it goes (SDK
batches) and counts. ``seconds`` is the time from the start of the reconnect to the last
message; the percentiles are reconnect-to-receipt times of the messages, ``delivered_per_s``
the catch-up rate. Lost, duplicate and out-of-order (by ``seq``) counts cover the backlog as
received.
"""

import os
import time
from typing import Final

import aiohttp
import numpy as np

from bench.client import Device, Handler
from bench.observe import wait_consumed
from bench.pacing import wait_until
from bench.scenario import Context, Outcome, drive_traffic, split
from bench.stats import message_figures, percentiles, tally, timeline
from bench.system import mint_token
from bench.traffic import DeviceSpec, Recorder, SenderSpec, TrafficPlan
from schemas.subjects import ROUTER_CONSUMER, STORAGE_CONSUMER

NAME: Final = "offline-catchup"
SENDER_WINDOW: Final = 8
SEND_TIMEOUT_S: Final = 120.0
CATCHUP_TIMEOUT_S: Final = 120.0
#: py-spy's window for the catch-up (``--profile``): it takes about a second or less.
PROFILE_S: Final = 2.0
TIMELINE_BIN_S: Final = 0.05


async def run(ctx: Context) -> Outcome:
    sizes = ctx.sizes
    target = DeviceSpec(0, "catchup", "catchup-d")
    await _register(ctx, target)
    senders = [DeviceSpec(i + 1, f"c{i}", f"c{i}-d") for i in range(sizes.catchup_senders)]
    recipients = {s.index: [target.index] for s in senders}
    plans = [
        TrafficPlan(
            ws_url=ctx.system.ws_url, secret=ctx.system.secret, devices=tuple(share),
            senders=tuple(SenderSpec(s.index, "user", target.user) for s in share),
            rate_per_s=None, window=SENDER_WINDOW, duration_s=SEND_TIMEOUT_S,
            messages_per_sender=sizes.catchup_messages // sizes.catchup_senders,
            warmup_per_sender=0)
        for share in split(senders, ctx.workers) if share
    ]
    load = await drive_traffic(ctx, plans, recipients, profile=False)
    ctx.measured["cpu_pct_sending"] = ctx.measured.pop("cpu_pct")
    sent_at = time.monotonic()
    settled_at = await wait_consumed(ctx.system, CATCHUP_TIMEOUT_S,
                                    (STORAGE_CONSUMER, ROUTER_CONSUMER))
    expected = sum(len(r.accepted_sender) for r in load.reports)
    recorder = Recorder()
    device = Device(target.index, target.user, target.device, recorder)
    meter, profiler = ctx.cpu_meter([os.getpid()]), ctx.profiler()  # this process reconnects
    if profiler is not None:
        profiler.start(PROFILE_S)
    meter.start()
    async with aiohttp.ClientSession() as session:
        reconnect_ns = time.monotonic_ns()
        await device.connect(session, ctx.system.ws_url,
                             mint_token(ctx.system.secret, target.user, target.device))
        try:
            await device.sync(CATCHUP_TIMEOUT_S)
            synced_ns = time.monotonic_ns()
            await wait_until(lambda: recorder.received >= expected, CATCHUP_TIMEOUT_S)
        finally:
            await device.close()
    ctx.measured["cpu_pct"] = meter.stop()
    if profiler is not None:
        ctx.measured["profile"] = profiler.finish()
    counts = tally([*load.reports, recorder.report([device])], recipients)
    since_reconnect_ms = (counts.recv_ns - reconnect_ns) / 1e6
    seconds = float(since_reconnect_ms.max()) / 1e3 if len(since_reconnect_ms) else None
    figures = message_figures(counts, counts.delivered / seconds if seconds else 0.0)
    figures.update(percentiles(since_reconnect_ms))
    figures.update(seconds=None if seconds is None else round(seconds, 3),
                   synced_s=round((synced_ns - reconnect_ns) / 1e9, 3),
                   settle_s=round(settled_at - sent_at, 3),
                   messages=sizes.catchup_messages, senders=sizes.catchup_senders)
    return Outcome(figures, latency_label="reconnect to receipt",
                   latencies_ms=since_reconnect_ms.astype(np.float64),
                   timeline=timeline(counts.recv_ns, reconnect_ns, TIMELINE_BIN_S))


async def _register(ctx: Context, target: DeviceSpec) -> None:
    """Connect the device once: the gateway registers it; then it goes offline."""
    device = Device(target.index, target.user, target.device, Handler(), ack=False)
    async with aiohttp.ClientSession() as session:
        await device.connect(session, ctx.system.ws_url,
                             mint_token(ctx.system.secret, target.user, target.device))
        await device.close()
