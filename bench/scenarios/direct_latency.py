"""direct-latency: 1:1 messages between connected pairs at a fixed offered rate.

Each pair is two users with one device each; the first sends to the second (``to: user``).
The offered rate (1,000 msg/s for 30 s by default) is spread evenly over the pairs, paced in
5 ms ticks; each generator process owns whole pairs. Measures send to receipt (the sender's
clock stamp in the body to the recipient's receipt of the ``message`` frame): p50/p95/p99, and
lost, duplicate and out-of-order counts. Recipients acknowledge in batches, as the SDK does,
so receipts and delivery state flow as they would in an app. ``server_cpu_us_per_msg`` is the
CPU time every server process (the services and nats-server, from ``/proc``) used over the
load, per delivered message.
"""

from typing import Final

from bench.scenario import Context, Outcome, drive_traffic, split, warmup_rx
from bench.stats import message_figures, rate_between, server_cpu_us_per_msg, tally, timeline
from bench.system import SERVER_PROCESSES
from bench.traffic import DeviceSpec, SenderSpec, TrafficPlan

NAME: Final = "direct-latency"


def pair_plans(ctx: Context, *, rate_per_s: float | None, window: int | None,
               duration_s: float) -> tuple[list[TrafficPlan], dict[int, list[int]]]:
    """Plans for ``ctx.sizes.pairs`` sender -> recipient pairs (sender ``2p``, recipient
    ``2p + 1``) spread over the generator processes, and each sender's recipients."""
    pairs = list(range(ctx.sizes.pairs))
    shares = [share for share in split(pairs, ctx.workers) if share]
    recipients = {2 * p: [2 * p + 1] for p in pairs}
    plans = []
    for share in shares:
        devices = tuple(spec for p in share for spec in (
            DeviceSpec(2 * p, f"s{p}", f"s{p}-d"), DeviceSpec(2 * p + 1, f"r{p}", f"r{p}-d")))
        plans.append(TrafficPlan(
            ws_url=ctx.system.ws_url, secret=ctx.system.secret, devices=devices,
            senders=tuple(SenderSpec(2 * p, "user", f"r{p}") for p in share),
            rate_per_s=None if rate_per_s is None else rate_per_s * len(share) / len(pairs),
            window=window, duration_s=duration_s,
            expected_warmup_rx=warmup_rx(devices, recipients, 1)))
    return plans, recipients


async def run(ctx: Context) -> Outcome:
    sizes = ctx.sizes
    plans, recipients = pair_plans(ctx, rate_per_s=sizes.rate_per_s, window=None,
                                   duration_s=sizes.latency_s)
    load = await drive_traffic(ctx, plans, recipients)
    counts = tally(load.reports, recipients)
    figures = message_figures(counts, rate_between(counts.recv_ns, load.start_ns, load.end_ns))
    figures.update(offered_per_s=sizes.rate_per_s, duration_s=sizes.latency_s,
                   pairs=sizes.pairs,
                   server_cpu_us_per_msg=server_cpu_us_per_msg(
                       ctx.measured["cpu_pct"], figures["delivered_per_s"], SERVER_PROCESSES))
    return Outcome(figures, latencies_ms=counts.latencies_ms,
                   timeline=timeline(counts.recv_ns, load.start_ns, sizes.bin_s))
