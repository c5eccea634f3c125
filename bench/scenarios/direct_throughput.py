"""direct-throughput: the highest sustained delivered 1:1 rate, with persistence on.

The same pairs as direct-latency, in a closed loop: every sender keeps a window of sends
awaiting ``accepted`` (4 by default) for 20 s, so the system runs as fast as it can take them.
``delivered_per_s`` counts deliveries received inside the load window. Persistence is the
storage worker consuming the same stream: once every delivery arrived, the scenario waits
until the worker has applied every envelope (messages and the recipients' acknowledgements)
and reports ``stored_per_s`` (messages over the time from the first send to that point),
``storage_lag_s`` (how long after the load the store caught up) and ``stored_to_delivered``
(the stored rate over the delivered rate: storage keeps up when it is at least
``KEEPS_UP``, and only then is the delivered rate a rate the system sustains), and
``server_cpu_us_per_msg`` as direct-latency does.

``measure`` is the measurement alone, on any system: partition-scaling runs it once per
configuration.
"""

from dataclasses import dataclass
from typing import Any, Final

from bench.observe import wait_consumed
from bench.scenario import Context, Outcome, TrafficRun, drive_traffic
from bench.scenarios.direct_latency import pair_plans
from bench.stats import (
    Tally,
    message_figures,
    rate_between,
    server_cpu_us_per_msg,
    stored_to_delivered,
    tally,
    timeline,
)
from bench.system import SERVER_PROCESSES

NAME: Final = "direct-throughput"
STORE_TIMEOUT_S: Final = 300.0
#: Storage keeps up when it stores within 5% of the delivered rate (issue 17).
KEEPS_UP: Final = 0.95


@dataclass
class Throughput:
    """One closed-loop measurement: its figures, the tally and the load window."""

    figures: dict[str, Any]
    counts: Tally
    load: TrafficRun


async def measure(ctx: Context, duration_s: float) -> Throughput:
    """The closed loop of ``ctx.sizes.pairs`` pairs for ``duration_s`` on ``ctx.system``,
    then the wait for the store (see the module docstring)."""
    sizes = ctx.sizes
    plans, recipients = pair_plans(ctx, rate_per_s=None, window=sizes.throughput_window,
                                   duration_s=duration_s)
    stored_at: list[float] = []

    async def wait_for_store() -> None:
        stored_at.append(await wait_consumed(ctx.system, STORE_TIMEOUT_S))

    load = await drive_traffic(ctx, plans, recipients, after_load=wait_for_store)
    counts = tally(load.reports, recipients)
    figures = message_figures(counts, rate_between(counts.recv_ns, load.start_ns, load.end_ns))
    stored_s = stored_at[0] - load.start_ns / 1e9  # one clock: monotonic_ns / 1e9 == monotonic
    stored_per_s = round(counts.sent / stored_s, 1)
    ratio = stored_to_delivered(stored_per_s, figures["delivered_per_s"])
    figures.update(
        duration_s=duration_s, pairs=sizes.pairs, window=sizes.throughput_window,
        stored_per_s=stored_per_s,
        storage_lag_s=round(max(stored_at[0] - load.end_ns / 1e9, 0.0), 2),
        stored_to_delivered=ratio,
        storage_keeps_up=ratio is not None and ratio >= KEEPS_UP,
        server_cpu_us_per_msg=server_cpu_us_per_msg(
            ctx.measured["cpu_pct"], figures["delivered_per_s"], SERVER_PROCESSES),
    )
    return Throughput(figures, counts, load)


async def run(ctx: Context) -> Outcome:
    result = await measure(ctx, ctx.sizes.throughput_s)
    return Outcome(result.figures, latencies_ms=result.counts.latencies_ms,
                   timeline=timeline(result.counts.recv_ns, result.load.start_ns,
                                     ctx.sizes.bin_s))
