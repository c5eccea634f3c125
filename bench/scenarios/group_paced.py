"""group-paced: the group of group-fanout at a fixed offered rate well below saturation.

The same group (100 members, one device each) and senders (10) as group-fanout, but open
loop: 50 messages per second together (about 4,950 deliveries per second, a small share of
the saturated rate group-fanout measures), paced in 5 ms ticks, for 15 s, with no window.
Measures send-to-receipt p50/p95/p99 over every delivery, so the latency a group sees when
the system is not overloaded, and lost, duplicate and out-of-order counts.
"""

from typing import Final

from bench.scenario import Context, Outcome
from bench.scenarios.group_fanout import measure

NAME: Final = "group-paced"


async def run(ctx: Context) -> Outcome:
    sizes = ctx.sizes
    return await measure(ctx, rate_per_s=sizes.group_paced_rate_per_s, window=None,
                         duration_s=sizes.group_paced_s)
