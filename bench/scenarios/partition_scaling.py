"""partition-scaling: direct-throughput with 1 and 2 storage workers and P = 1, 4, 16 (issue 13).

For each (storage workers, partitions) of ``sizes.partition_matrix`` the scenario starts a
fresh system of its own (one gateway, one router; ``--storage-workers N`` and
``COURIER_PARTITIONS_COUNT=P``, on the run's store), waits until the storage leases are spread
(every partition held, nobody above its fair share ``ceil(P / N)``), measures the services'
CPU while the system is idle for ``partition_idle_s`` (the cost of the partitions' pull loops
and lease ticks alone), then runs direct-throughput's measurement (``measure``: the same
closed loop of pairs, ``partition_s`` long, and the wait until the store has caught up).

Per configuration (``rows``): ``leases`` (partitions each storage worker held; with P = 1 a
second worker holds none, and stays idle: the point of the row), ``delivered_per_s``,
``stored_per_s``, ``stored_per_worker_s`` (over the workers that held a partition),
``storage_lag_s``, latencies, ``cpu_pct`` under load and ``idle_cpu_pct``, and
``server_cpu_ms_per_msg``: the CPU time the services and nats-server spent per delivered
message (less sensitive to other load on the machine than the rates). The common fields
(sent, delivered, lost, ...) are the sums over the configurations.
"""

import asyncio
import dataclasses
from typing import Any, Final

from bench.observe import CpuMeter, wait_leases_spread
from bench.scenario import Context, Outcome
from bench.scenarios.direct_throughput import measure
from bench.system import SERVER_PROCESSES, SystemUnderTest

NAME: Final = "partition-scaling"
#: Leases spread within a tick or two of the last member's start (2 s ticks by default).
LEASE_WAIT_S: Final = 60.0
SUMMED: Final = ("sent", "delivered", "lost", "duplicates", "out_of_order", "unanswered")
#: The figures of a row taken from the measurement as they are.
KEPT: Final = ("delivered_per_s", "stored_per_s", "storage_lag_s", "p50_ms", "p99_ms",
               "sent", "delivered", "lost", "duplicates", "out_of_order", "unanswered",
               "errors")


async def run(ctx: Context) -> Outcome:
    rows = [await _configuration(ctx, workers, partitions)
            for workers, partitions in ctx.sizes.partition_matrix]
    figures: dict[str, Any] = {key: sum(row[key] for row in rows) for key in SUMMED}
    figures.update(
        duration_s=ctx.sizes.partition_s, pairs=ctx.sizes.pairs, rows=rows,
        summary="; ".join(f"w{row['storage_workers']} P{row['partitions']} "
                          f"{row['delivered_per_s']:,.0f}/{row['stored_per_s']:,.0f}"
                          for row in rows) + " (delivered/stored msg/s)")
    return Outcome(figures)


async def _configuration(ctx: Context, workers: int, partitions: int) -> dict[str, Any]:
    system = SystemUnderTest(ctx.system.store, storage_workers=workers, partitions=partitions)
    system.start()
    try:
        held = await wait_leases_spread(system.nats_credentials, system.nats_url, "storage",
                                        partitions, workers, LEASE_WAIT_S)
        leases = [held.get(pid, 0) for pid in system.pids("storage_worker")]
        idle = CpuMeter(system.service_pids())
        idle.start()
        await asyncio.sleep(ctx.sizes.partition_idle_s)
        idle_cpu = idle.stop()
        step = dataclasses.replace(ctx, system=system, measured={})
        result = await measure(step, ctx.sizes.partition_s)
    except BaseException:
        # the runner keeps ctx.system's logs of a failed scenario: this system's go with them
        system.keep_logs(ctx.system.log_dir / f"w{workers}-p{partitions}")
        raise
    finally:
        system.stop()
    active = sum(1 for count in leases if count)
    cpu_pct = step.measured["cpu_pct"]
    server_pct = sum(cpu_pct[name] for name in SERVER_PROCESSES)
    row: dict[str, Any] = {"storage_workers": workers, "partitions": partitions,
                           "leases": leases}
    row.update({key: result.figures[key] for key in KEPT})
    delivered_per_s = result.figures["delivered_per_s"]
    row.update(stored_per_worker_s=round(result.figures["stored_per_s"] / active, 1),
               server_cpu_ms_per_msg=(round(server_pct * 10 / delivered_per_s, 3)
                                      if delivered_per_s else None),
               cpu_pct=cpu_pct, idle_cpu_pct=idle_cpu)
    return row
