"""The bench's own arithmetic: delivery accounting, targets and profile summaries."""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from bench.profiling import summarize
from bench.stats import percentiles, tally
from bench.targets import judge, ratios
from bench.traffic import TrafficReport


def _report(accepted: list[tuple[int, int]], received: list[tuple[int, int, int]],
            duplicates: int = 0) -> TrafficReport:
    def column(rows: Sequence[tuple[int, ...]], index: int) -> npt.NDArray[np.int64]:
        return np.array([row[index] for row in rows], dtype=np.int64)

    return TrafficReport(
        accepted_sender=column(accepted, 0), accepted_counter=column(accepted, 1),
        rx_recipient=column(received, 0), rx_sender=column(received, 1),
        rx_counter=column(received, 2), rx_sent_ns=np.zeros(len(received), dtype=np.int64),
        rx_recv_ns=np.full(len(received), 2_000_000, dtype=np.int64),
        duplicates=duplicates, out_of_order=0, unanswered=0)


def test_tally_counts_every_delivery_due_to_every_recipient() -> None:
    # Sender 0 -> devices 1 and 2 (a group of three); sender 3 -> device 4.
    recipients = {0: [1, 2], 3: [4]}
    senders = _report([(0, 0), (0, 1), (3, 0)], [])
    device_1 = _report([], [(1, 0, 0), (1, 0, 1)])
    device_2 = _report([], [(2, 0, 1)], duplicates=1)  # missed counter 0
    device_4 = _report([], [(4, 3, 0), (4, 3, 7)])  # counter 7 was never accepted
    counts = tally([senders, device_1, device_2, device_4], recipients)
    assert (counts.sent, counts.delivered, counts.lost, counts.duplicates) == (3, 4, 1, 1)
    assert counts.latencies_ms.tolist() == [2.0] * 5


def test_percentiles_without_samples_are_none() -> None:
    assert percentiles(np.empty(0)) == {"p50_ms": None, "p95_ms": None, "p99_ms": None}
    assert percentiles(np.arange(1.0, 101.0))["p50_ms"] == 50.5


def test_targets_are_judged_against_the_floor_of_the_same_run() -> None:
    figures = {
        "floor-nats": {"p50_ms": 0.5, "p99_ms": 2.0, "max_per_s": 20_000.0},
        "direct-latency": {"p50_ms": 0.9, "p99_ms": 7.0, "lost": 0, "duplicates": 0,
                           "out_of_order": 1},
        "direct-throughput": {"delivered_per_s": 6_000.0, "lost": 0},
    }
    verdicts = {(v["scenario"], v["field"]): v["met"] for v in judge(figures)}
    assert verdicts[("direct-latency", "p50_ms")] is True
    assert verdicts[("direct-latency", "p99_ms")] is False
    assert verdicts[("direct-latency", "out_of_order")] is False
    assert verdicts[("direct-throughput", "delivered_per_s")] is True
    assert ratios(figures)["direct-latency p99 / floor p99"] == 3.5


def test_profile_summary_ranks_functions_without_line_numbers(tmp_path: Path) -> None:
    stacks = tmp_path / "stacks.txt"
    stacks.write_text(
        "main (gateway/__main__.py:3);send (gateway/messaging.py:10);write (x.py:1) 6\n"
        "main (gateway/__main__.py:3);send (gateway/messaging.py:12) 2\n"
        "main (gateway/__main__.py:3);idle (y.py:5) 2\n")
    samples, spots = summarize(stacks)
    assert samples == 10
    assert [(s.function, s.self_pct) for s in spots[:2]] == [("write (x.py)", 60.0),
                                                             ("send (gateway/messaging.py)", 20.0)]
    _, own = summarize(stacks, by_total_in=("gateway/",))
    assert [(s.function, s.total_pct) for s in own] == [("send (gateway/messaging.py)", 80.0)]
