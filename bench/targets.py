"""The targets of the 2-core machine, as ratios to the floor measured in the same run or as
absolute figures, and the ratios themselves. Only standard-size runs are judged."""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

Figures = Mapping[str, Mapping[str, Any]]


@dataclass(frozen=True)
class Target:
    scenario: str
    field: str
    text: str
    #: The bound, from every scenario's figures (None when it cannot be computed).
    bound: Callable[[Figures], float | None]
    at_least: bool = False


def _floor(field: str, factor: float) -> Callable[[Figures], float | None]:
    def bound(figures: Figures) -> float | None:
        value = figures.get("floor-nats", {}).get(field)
        return None if value is None else factor * float(value)
    return bound


def _fixed(value: float) -> Callable[[Figures], float | None]:
    return lambda figures: value


def _exact(scenario: str, *fields: str) -> list[Target]:
    return [Target(scenario, field, f"{field} = 0", _fixed(0)) for field in fields]


TARGETS: Final[list[Target]] = [
    Target("direct-latency", "p50_ms", "p50 <= 2x floor p50", _floor("p50_ms", 2)),
    Target("direct-latency", "p99_ms", "p99 <= 3x floor p99", _floor("p99_ms", 3)),
    *_exact("direct-latency", "lost", "duplicates", "out_of_order"),
    Target("direct-throughput", "delivered_per_s", ">= 25% of the floor's max rate",
           _floor("max_per_s", 0.25), at_least=True),
    *_exact("direct-throughput", "lost"),
    Target("group-fanout", "delivered_per_s", ">= 20,000 deliveries/s", _fixed(20_000),
           at_least=True),
    Target("offline-catchup", "seconds", "10,000 messages in <= 2 s", _fixed(2.0)),
    *_exact("offline-catchup", "lost", "duplicates", "out_of_order"),
    Target("connections", "connections", ">= 20,000 idle on one gateway", _fixed(20_000),
           at_least=True),
    Target("connections", "kb_per_connection", "<= 25 KB each", _fixed(25.0)),
]

#: ``(name, scenario, field, floor field)``: figures divided by the floor's.
RATIOS: Final = [
    ("direct-latency p50 / floor p50", "direct-latency", "p50_ms", "p50_ms"),
    ("direct-latency p99 / floor p99", "direct-latency", "p99_ms", "p99_ms"),
    ("direct-throughput / floor max rate", "direct-throughput", "delivered_per_s", "max_per_s"),
]


def judge(figures: Figures) -> list[dict[str, Any]]:
    """Every target of a scenario that ran: its bound, the measured value, met or not (None
    when the scenario did not produce the figure)."""
    verdicts = []
    for target in TARGETS:
        if target.scenario not in figures:
            continue
        measured = figures[target.scenario].get(target.field)
        bound = target.bound(figures)
        met = None
        if measured is not None and bound is not None:
            met = measured >= bound if target.at_least else measured <= bound
        verdicts.append({"scenario": target.scenario, "target": target.text,
                         "field": target.field, "bound": _round(bound),
                         "measured": measured, "met": met})
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
