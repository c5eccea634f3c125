"""What a scenario gets (``Context``) and returns (``Outcome``), and the orchestrator's side of
the message load every message scenario shares (``drive_traffic``)."""

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from bench.observe import CpuMeter
from bench.pacing import sleep_until
from bench.profiling import Profiler
from bench.sizes import Sizes
from bench.stats import Floats
from bench.system import SERVICES, SystemUnderTest
from bench.traffic import DeviceSpec, TrafficPlan, TrafficReport, run_traffic
from bench.workers import Generators

#: Time between the go and the first send, so every process starts together.
START_DELAY_NS: Final = 300_000_000


@dataclass
class Context:
    """One scenario's system, sizes and options."""

    name: str
    system: SystemUnderTest
    sizes: Sizes
    workers: int
    profile_dir: Path | None = None
    #: Figures measured around the load (CPU use, profiles), added to the scenario's figures.
    measured: dict[str, Any] = field(default_factory=dict)

    def cpu_meter(self, generators: list[int]) -> CpuMeter:
        """CPU use of the services, nats-server and the generator processes; a service with
        several processes also each of them (``storage_worker-1``, ``storage_worker-2``)."""
        return CpuMeter({**self.system.service_pids(), "generators": generators})

    def profiler(self) -> Profiler | None:
        """A py-spy recorder of the services, when ``--profile`` asked for one."""
        if self.profile_dir is None:
            return None
        return Profiler(self.profile_dir, self.name,
                        {service: self.system.pid(service) for service in SERVICES})


@dataclass
class Outcome:
    """A scenario's figures for ``latest.json`` and the samples for its plots."""

    figures: dict[str, Any]
    latency_label: str = "send to receipt"
    latencies_ms: Floats | None = None
    timeline: tuple[Floats, Floats] | None = None
    status: str = "ok"
    reason: str | None = None


@dataclass
class TrafficRun:
    """A message load as the orchestrator saw it: the generator reports and the load window."""

    reports: list[TrafficReport]
    start_ns: int
    end_ns: int


def split(items: Sequence[Any], parts: int) -> list[list[Any]]:
    """``items`` in ``parts`` round-robin shares (some may be empty)."""
    return [list(items[index::parts]) for index in range(parts)]


def warmup_rx(devices: Sequence[DeviceSpec], recipients: Mapping[int, Sequence[int]],
              per_sender: int) -> int:
    """Warm-up messages due to ``devices`` from every sender."""
    mine = {spec.index for spec in devices}
    return per_sender * sum(len(mine.intersection(r)) for r in recipients.values())


async def drive_traffic(ctx: Context, plans: Sequence[TrafficPlan],
                        recipients: Mapping[int, Sequence[int]],
                        after_load: Callable[[], Awaitable[None]] | None = None,
                        profile: bool = True) -> TrafficRun:
    """Step the generator processes through the load (see ``bench.traffic``); ``after_load``
    runs once every delivery arrived, before the devices disconnect. The services' CPU use
    over the load goes into ``ctx.measured`` (and py-spy profiles, if asked and ``profile``)."""
    duration_s = max(plan.duration_s for plan in plans)
    profiler = ctx.profiler() if profile else None
    with Generators(run_traffic, plans) as generators:
        await generators.gather("connected")
        generators.release()
        await generators.gather("warm")
        start_ns = time.monotonic_ns() + START_DELAY_NS
        generators.release([start_ns] * len(plans))
        meter = ctx.cpu_meter(generators.pids)
        await sleep_until(start_ns)
        meter.start()
        if profiler is not None:
            profiler.start(duration_s)
        accepted: list[dict[int, int]] = await generators.gather(
            "sent", wait_s=duration_s + plans[0].drain_timeout_s + 60)
        ctx.measured["cpu_pct"] = meter.stop()
        counts = {sender: n for share in accepted for sender, n in share.items()}
        generators.release([_due(plan.devices, counts, recipients) for plan in plans])
        await generators.gather("drained")
        if after_load is not None:
            await after_load()
        generators.release()
        reports = await generators.results()
    if profiler is not None:
        ctx.measured["profile"] = profiler.finish()
    return TrafficRun(reports, start_ns, start_ns + int(duration_s * 1e9))


def _due(devices: Sequence[DeviceSpec], accepted: Mapping[int, int],
         recipients: Mapping[int, Sequence[int]]) -> int:
    mine = {spec.index for spec in devices}
    return sum(n * len(mine.intersection(recipients[sender]))
               for sender, n in accepted.items())
