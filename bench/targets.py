"""The targets of the 2-core machine, as ratios to the floor measured in the same run or as
absolute figures, and the ratios themselves. Only standard-size runs are judged."""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from bench.scenarios.direct_throughput import KEEPS_UP

Figures = Mapping[str, Mapping[str, Any]]


@dataclass(frozen=True)
class Target:
    scenario: str
    field: str
    text: str
    #: The bound, from every scenario's figures (None when it cannot be computed).
    bound: Callable[[Figures], float | None]
    at_least: bool = False
    #: Judged only when this holds of the figures; else the verdict says why not (``note``).
    judged_if: Callable[[Figures], str | None] | None = None


def _floor(field: str, factor: float) -> Callable[[Figures], float | None]:
    def bound(figures: Figures) -> float | None:
        value = figures.get("floor-nats", {}).get(field)
        return None if value is None else factor * float(value)
    return bound


def _fixed(value: float) -> Callable[[Figures], float | None]:
    return lambda figures: value


def _exact(scenario: str, *fields: str) -> list[Target]:
    return [Target(scenario, field, f"{field} = 0", _fixed(0)) for field in fields]


def _storage_keeps_up(figures: Figures) -> str | None:
    """None when direct-throughput's store kept up with its deliveries, else why not."""
    ratio = figures["direct-throughput"].get("stored_to_delivered")
    if ratio is not None and ratio >= KEEPS_UP:
        return None
    return f"not judged: storage did not keep up (stored/delivered {ratio} < {KEEPS_UP})"


#: Issue 17's targets (2 cores, the generator on the same machine), and the correctness ones.
TARGETS: Final[list[Target]] = [
    Target("direct-latency", "p50_ms", "p50 <= 1.5x floor p50", _floor("p50_ms", 1.5)),
    Target("direct-latency", "p99_ms", "p99 <= 3x floor p99", _floor("p99_ms", 3)),
    Target("direct-latency", "server_cpu_us_per_msg",
           "server CPU (every server process) <= 300 µs per message", _fixed(300.0)),
    *_exact("direct-latency", "lost", "duplicates", "out_of_order"),
    Target("direct-throughput", "stored_to_delivered", "stored rate within 5% of delivered",
           _fixed(KEEPS_UP), at_least=True),
    Target("direct-throughput", "delivered_per_s",
           ">= 50% of the floor's max rate, with storage keeping up",
           _floor("max_per_s", 0.5), at_least=True, judged_if=_storage_keeps_up),
    *_exact("direct-throughput", "lost"),
    Target("group-fanout", "delivered_per_s", ">= 150,000 deliveries/s", _fixed(150_000),
           at_least=True),
    Target("group-paced", "p99_ms", "p99 <= 100 ms", _fixed(100.0)),
    *_exact("group-paced", "lost", "duplicates", "out_of_order"),
    Target("offline-catchup", "seconds", "10,000 messages in <= 2 s", _fixed(2.0)),
    *_exact("offline-catchup", "lost", "duplicates", "out_of_order"),
    Target("connections", "connections", ">= 20,000 idle on one gateway", _fixed(20_000),
           at_least=True),
    Target("connections", "kb_per_connection", "<= 20 KB each (gateway RSS)", _fixed(20.0)),
    Target("connections", "heartbeat_cpu_pct", "heartbeats <= 5% of a core", _fixed(5.0)),
    Target("connections", "p50_ms", "connect to welcome p50 <= 30 ms", _fixed(30.0)),
]

#: ``(name, scenario, field, floor field)``: figures divided by the floor's.
RATIOS: Final = [
    ("direct-latency p50 / floor p50", "direct-latency", "p50_ms", "p50_ms"),
    ("direct-latency p99 / floor p99", "direct-latency", "p99_ms", "p99_ms"),
    ("direct-throughput / floor max rate", "direct-throughput", "delivered_per_s", "max_per_s"),
]


def judge(figures: Figures) -> list[dict[str, Any]]:
    """Every target of a scenario that ran: its bound, the measured value, met or not (None
    when the scenario did not produce the figure, or the target's condition does not hold:
    then ``note`` says why)."""
    verdicts = []
    for target in TARGETS:
        if target.scenario not in figures:
            continue
        measured = figures[target.scenario].get(target.field)
        bound = target.bound(figures)
        note = target.judged_if(figures) if target.judged_if is not None else None
        met = None
        if measured is not None and bound is not None and note is None:
            met = measured >= bound if target.at_least else measured <= bound
        verdict = {"scenario": target.scenario, "target": target.text, "field": target.field,
                   "bound": _round(bound), "measured": measured, "met": met}
        if note is not None:
            verdict["note"] = note
        verdicts.append(verdict)
    return verdicts


def ratios(figures: Figures) -> dict[str, float | None]:
    """Each ratio to the floor (None if either figure is missing)."""
    result: dict[str, float | None] = {}
    for name, scenario, field, floor_field in RATIOS:
        if scenario not in figures:
            continue
        value = figures[scenario].get(field)
        floor = figures.get("floor-nats", {}).get(floor_field)
        result[name] = round(value / floor, 2) if value is not None and floor else None
    return result


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
