"""``python -m bench --quick`` end to end: every scenario at smoke sizes against real systems,
counting right (no timing thresholds: this only proves the harness works)."""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.report import COMMON_FIELDS
from bench.scenarios import SCENARIOS
from bench.sizes import SMOKE
from bench.system import SERVER_PROCESSES

REPO = Path(__file__).resolve().parents[2]
#: Scenarios in which every accepted message must reach its devices exactly once, in order.
EXACT = ("floor-nats", "direct-latency", "direct-throughput", "group-fanout", "group-paced",
         "offline-catchup")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("bench")
    finished = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=270, check=False)
    assert finished.returncode == 0, finished.stderr[-4000:]
    return json.loads((out / "latest.json").read_text()), out


def test_every_scenario_reports_the_common_fields(smoke: tuple[dict[str, Any], Path]) -> None:
    result, _ = smoke
    assert result["size"] == "smoke"
    assert list(result["scenarios"]) == list(SCENARIOS)
    for name, entry in result["scenarios"].items():
        assert entry["status"] in ("ok", "unavailable"), (name, entry)
        assert set(COMMON_FIELDS) <= set(entry), name
    assert result["targets"] == []  # smoke sizes are not judged


@pytest.mark.parametrize("name", EXACT)
def test_messages_all_arrive_once_and_in_order(name: str,
                                               smoke: tuple[dict[str, Any], Path]) -> None:
    entry = smoke[0]["scenarios"][name]
    if entry["status"] == "unavailable":
        assert name in ("group-fanout", "group-paced") and entry["reason"]
        return
    assert entry["sent"] > 0
    assert entry["delivered"] >= entry["sent"]
    assert (entry["lost"], entry["duplicates"], entry["out_of_order"]) == (0, 0, 0)
    assert entry["p50_ms"] is not None and entry["p50_ms"] <= entry["p99_ms"]


def test_scenario_specific_fields(smoke: tuple[dict[str, Any], Path]) -> None:
    scenarios = smoke[0]["scenarios"]
    assert scenarios["floor-nats"]["max_per_s"] > 0
    latency = scenarios["direct-latency"]
    assert latency["sent"] == latency["delivered"]
    assert latency["server_cpu_us_per_msg"] > 0
    assert set(SERVER_PROCESSES) <= set(latency["cpu_pct"])
    throughput = scenarios["direct-throughput"]
    assert throughput["stored_to_delivered"] > 0 and throughput["server_cpu_us_per_msg"] > 0
    assert throughput["storage_keeps_up"] == (throughput["stored_to_delivered"] >= 0.95)
    paced = scenarios["group-paced"]
    assert paced["offered_per_s"] == SMOKE.group_paced_rate_per_s
    assert paced["window"] is None and paced["members"] == SMOKE.group_members
    history = scenarios["history"]
    assert history["lost"] == 0 and history["archived"] == history["messages"] // 2 > 0
    assert history["hot_p50_ms"] > 0 and history["archive_p50_ms"] > 0
    catchup = scenarios["offline-catchup"]
    assert catchup["sent"] == catchup["messages"] == catchup["delivered"]
    assert 0 < catchup["seconds"]
    idle = scenarios["connections"]
    assert idle["connections"] == idle["requested"] and idle["lost"] == 0
    assert idle["rss_mb"] > 0 and idle["kb_per_connection"] is not None
    assert idle["heartbeat_cpu_pct"] >= 0


def test_markdown_and_plots_are_written(smoke: tuple[dict[str, Any], Path]) -> None:
    _, out = smoke
    table = (out / "latest.md").read_text()
    assert all(f"| {name} |" in table for name in SCENARIOS)
    assert (out / "latency-direct-latency.png").stat().st_size > 0
    assert (out / "throughput-direct-throughput.png").stat().st_size > 0


def test_partition_scaling_measures_each_configuration(
        smoke: tuple[dict[str, Any], Path]) -> None:
    entry = smoke[0]["scenarios"]["partition-scaling"]
    assert entry["status"] == "ok", entry
    rows = entry["rows"]
    configurations = [(row["storage_workers"], row["partitions"]) for row in rows]
    assert configurations == list(SMOKE.partition_matrix) == [(2, 1), (2, 4)]
    one, four = rows
    assert sorted(one["leases"]) == [0, 1]  # P = 1: the second storage worker holds nothing
    assert one["stored_per_worker_s"] == one["stored_per_s"]  # counted over the active one
    assert four["leases"] == [2, 2]  # P = 4: both consume, half each
    for row in rows:
        assert row["sent"] > 0 and row["delivered"] >= row["sent"]
        assert (row["lost"], row["duplicates"], row["out_of_order"]) == (0, 0, 0)
        assert row["stored_per_s"] > 0 and row["storage_lag_s"] >= 0
        assert row["server_cpu_ms_per_msg"] > 0
        assert {"storage_worker-1", "storage_worker-2", "router", "gateway"} <= set(
            row["cpu_pct"]) and set(row["cpu_pct"]) - {"generators"} == set(row["idle_cpu_pct"])
    assert entry["sent"] == sum(row["sent"] for row in rows)
    assert entry["lost"] == 0
