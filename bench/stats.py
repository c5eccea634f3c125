"""Figures from the generator reports: what was lost, duplicated or out of order, latency
percentiles, and the delivered rate over time.

A delivery is named by ``(recipient device, sender, counter)``. Every message the server
accepted is due to each device ``recipients[sender]`` lists; ``lost`` counts the deliveries
due that never arrived, ``delivered`` those that did.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from bench.traffic import TrafficReport

Int64s = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]

_SENDER_SHIFT = 24  # counters below 2**24 per sender
_RECIPIENT_SHIFT = 42  # senders below 2**18


@dataclass
class Tally:
    """Counts and samples of one scenario, merged over every generator process."""

    sent: int
    delivered: int
    lost: int
    duplicates: int
    out_of_order: int
    unanswered: int
    latencies_ms: Floats
    recv_ns: Int64s
    errors: dict[str, int] = field(default_factory=dict)
    closed: dict[str, int] = field(default_factory=dict)


def delivery_keys(recipient: Int64s | int, sender: Int64s | int, counter: Int64s) -> Int64s:
    """One integer per delivery ``(recipient, sender, counter)``."""
    return ((np.int64(recipient) << _RECIPIENT_SHIFT) | (np.int64(sender) << _SENDER_SHIFT)
            | counter.astype(np.int64))


def tally(reports: Sequence[TrafficReport], recipients: Mapping[int, Sequence[int]]) -> Tally:
    """Merge the reports and account for every delivery due."""
    acc_sender = np.concatenate([r.accepted_sender for r in reports])
    acc_counter = np.concatenate([r.accepted_counter for r in reports])
    due = [np.empty(0, dtype=np.int64)]
    for sender in np.unique(acc_sender):
        counters = acc_counter[acc_sender == sender]
        due.extend(delivery_keys(recipient, int(sender), counters)
                   for recipient in recipients[int(sender)])
    due_keys = np.concatenate(due)
    rx = {name: np.concatenate([getattr(r, name) for r in reports])
          for name in ("rx_recipient", "rx_sender", "rx_counter", "rx_sent_ns", "rx_recv_ns")}
    rx_keys = delivery_keys(rx["rx_recipient"], rx["rx_sender"], rx["rx_counter"])
    delivered = int(np.isin(due_keys, rx_keys).sum())
    errors: dict[str, int] = {}
    closed: dict[str, int] = {}
    for report in reports:
        for target, counts in ((errors, report.errors), (closed, report.closed)):
            for key, count in counts.items():
                target[key] = target.get(key, 0) + count
    return Tally(
        sent=len(acc_sender), delivered=delivered, lost=len(due_keys) - delivered,
        duplicates=sum(r.duplicates for r in reports),
        out_of_order=sum(r.out_of_order for r in reports),
        unanswered=sum(r.unanswered for r in reports),
        latencies_ms=(rx["rx_recv_ns"] - rx["rx_sent_ns"]) / 1e6,
        recv_ns=rx["rx_recv_ns"], errors=errors, closed=closed,
    )


def percentiles(latencies_ms: Floats) -> dict[str, float | None]:
    """``p50_ms``, ``p95_ms``, ``p99_ms`` (None without samples)."""
    if len(latencies_ms) == 0:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None}
    p50, p95, p99 = np.percentile(latencies_ms, [50, 95, 99])
    return {"p50_ms": round(float(p50), 3), "p95_ms": round(float(p95), 3),
            "p99_ms": round(float(p99), 3)}


def rate_between(recv_ns: Int64s, start_ns: int, end_ns: int) -> float:
    """Deliveries per second received within ``[start_ns, end_ns)``."""
    inside = int(((recv_ns >= start_ns) & (recv_ns < end_ns)).sum())
    return inside / ((end_ns - start_ns) / 1e9)


def timeline(recv_ns: Int64s, start_ns: int, bin_s: float) -> tuple[Floats, Floats]:
    """Delivered per second in bins of ``bin_s`` from ``start_ns`` to the last receipt:
    ``(bin start in seconds, rate)``."""
    if len(recv_ns) == 0:
        return np.empty(0), np.empty(0)
    offsets = (recv_ns - start_ns) / 1e9
    edges = np.arange(0.0, max(float(offsets.max()), 0.0) + bin_s, bin_s)
    counts, _ = np.histogram(offsets, bins=edges)
    return edges[:-1], counts / bin_s


def message_figures(t: Tally, delivered_per_s: float) -> dict[str, Any]:
    """The fields every message scenario reports."""
    return {
        **percentiles(t.latencies_ms),
        "delivered_per_s": round(delivered_per_s, 1),
        "sent": t.sent, "delivered": t.delivered, "lost": t.lost,
        "duplicates": t.duplicates, "out_of_order": t.out_of_order,
        "unanswered": t.unanswered, "errors": t.errors, "closed": t.closed,
    }


def server_cpu_us_per_msg(cpu_pct: Mapping[str, float], messages_per_s: float,
                          processes: Sequence[str]) -> float | None:
    """CPU time of ``processes`` together per message, in microseconds, from their CPU use
    over a load (percent of one core each, as ``CpuMeter`` reports it) and that load's rate;
    None without a rate. A process missing from ``cpu_pct`` is an error: the sum would be
    too low."""
    if messages_per_s <= 0:
        return None
    missing = [name for name in processes if name not in cpu_pct]
    if missing:
        raise KeyError(f"no CPU figure of {', '.join(missing)}")
    return round(sum(cpu_pct[name] for name in processes) * 1e4 / messages_per_s, 1)


def stored_to_delivered(stored_per_s: float, delivered_per_s: float) -> float | None:
    """The stored rate as a fraction of the delivered rate (None without deliveries)."""
    return round(stored_per_s / delivered_per_s, 3) if delivered_per_s > 0 else None
