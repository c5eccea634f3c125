"""The bench's own arithmetic: delivery accounting, targets and profile summaries."""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from bench.profiling import summarize
from bench.stats import percentiles, server_cpu_us_per_msg, stored_to_delivered, tally
from bench.system import SERVER_PROCESSES
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
        "direct-latency": {"p50_ms": 0.75, "p99_ms": 7.0, "lost": 0, "duplicates": 0,
                           "out_of_order": 1, "server_cpu_us_per_msg": 300.1},
        "direct-throughput": {"delivered_per_s": 10_000.0, "lost": 0,
                              "stored_to_delivered": 0.95},
    }
    verdicts = {(v["scenario"], v["field"]): v["met"] for v in judge(figures)}
    assert verdicts[("direct-latency", "p50_ms")] is True  # 1.5x the floor, at the bound
    assert verdicts[("direct-latency", "p99_ms")] is False
    assert verdicts[("direct-latency", "out_of_order")] is False
    assert verdicts[("direct-latency", "server_cpu_us_per_msg")] is False  # past 300 µs
    assert verdicts[("direct-throughput", "stored_to_delivered")] is True  # within 5%
    assert verdicts[("direct-throughput", "delivered_per_s")] is True  # half the floor's
    assert ratios(figures)["direct-latency p99 / floor p99"] == 3.5


def test_throughput_is_judged_only_when_storage_keeps_up() -> None:
    figures = {"floor-nats": {"max_per_s": 20_000.0},
               "direct-throughput": {"delivered_per_s": 15_000.0, "lost": 0,
                                     "stored_to_delivered": 0.949}}
    verdicts = {v["field"]: v for v in judge(figures)}
    assert verdicts["stored_to_delivered"]["met"] is False
    rate = verdicts["delivered_per_s"]
    assert rate["met"] is None and "did not keep up" in rate["note"]
    assert rate["bound"] == 10_000.0 and rate["measured"] == 15_000.0


def test_group_and_connection_targets_of_issue_17() -> None:
    figures = {
        "group-fanout": {"delivered_per_s": 149_999.0},
        "group-paced": {"p99_ms": 100.0, "lost": 0, "duplicates": 0, "out_of_order": 0},
        "connections": {"connections": 20_000, "kb_per_connection": 20.01,
                        "heartbeat_cpu_pct": 5.0, "p50_ms": 30.5},
    }
    verdicts = {(v["scenario"], v["field"]): v["met"] for v in judge(figures)}
    assert verdicts == {
        ("group-fanout", "delivered_per_s"): False,
        ("group-paced", "p99_ms"): True, ("group-paced", "lost"): True,
        ("group-paced", "duplicates"): True, ("group-paced", "out_of_order"): True,
        ("connections", "connections"): True, ("connections", "kb_per_connection"): False,
        ("connections", "heartbeat_cpu_pct"): True, ("connections", "p50_ms"): False,
    }


def test_server_cpu_per_message_sums_every_server_process() -> None:
    cpu_pct = {name: 10.0 for name in SERVER_PROCESSES} | {"generators": 90.0,
                                                           "storage_worker-1": 10.0}
    # Six processes at 10% of a core each: 0.6 CPU-seconds per second over 1,000 msg/s.
    assert server_cpu_us_per_msg(cpu_pct, 1000.0, SERVER_PROCESSES) == 600.0
    assert server_cpu_us_per_msg(cpu_pct, 0.0, SERVER_PROCESSES) is None
    with pytest.raises(KeyError, match="nats-server"):
        server_cpu_us_per_msg({"gateway": 1.0}, 1000.0, ("gateway", "nats-server"))


def test_stored_to_delivered() -> None:
    assert stored_to_delivered(950.0, 1000.0) == 0.95
    assert stored_to_delivered(10.0, 0.0) is None


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
