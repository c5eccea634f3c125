"""The scenarios, in the order the suite runs them (the floor first: the others are compared
with it). Each module states what it measures; its ``run(ctx)`` returns an ``Outcome``.
The runner starts a fresh system for each, except for those in ``OWN_SYSTEMS``, which start
the systems they measure themselves (``ctx.system`` is then not started: only its store
counts)."""

from collections.abc import Awaitable, Callable
from typing import Final

from bench.scenario import Context, Outcome
from bench.scenarios import (
    connections,
    direct_latency,
    direct_throughput,
    e2ee_cost,
    floor_nats,
    group_fanout,
    group_paced,
    history,
    media,
    offline_catchup,
    partition_scaling,
)

ScenarioRun = Callable[[Context], Awaitable[Outcome]]

SCENARIOS: Final[dict[str, ScenarioRun]] = {
    module.NAME: module.run
    for module in (floor_nats, direct_latency, direct_throughput, group_fanout, group_paced,
                   offline_catchup, connections, media, history, e2ee_cost,
                   partition_scaling)
}
OWN_SYSTEMS: Final = frozenset({partition_scaling.NAME})
