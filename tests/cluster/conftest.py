"""The cluster of the failover tests (``make test-cluster``): started once per session with
``python -m infra.cluster up`` in a directory of its own (free ports, the balancer's too),
stopped with ``down`` at the end; each test first waits until ``status`` says the whole
cluster is healthy (a process killed by the test before has been restarted by the
supervisor, the Cassandra node is back in the ring).

``COURIER_TEST_CLUSTER_DIR=<data dir>`` runs the tests on a cluster already running there
(``make cluster``) and leaves it running (for working on the tests).

At the end of the session the results of the tests that ran are written into the cluster
results block of docs/reliability.md (``tests.cluster.report``).
"""

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chaos.run import FaultResult
from tests.cluster.report import write_results
from tests.cluster.running import RunningCluster

REPO = Path(__file__).resolve().parents[2]
UP_TIMEOUT_S = 1800.0
DOWN_TIMEOUT_S = 400.0
HEALTHY_TIMEOUT_S = 300.0
HEALTHY_POLL_S = 2.0


def cluster_command(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "infra.cluster", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    given = os.environ.get("COURIER_TEST_CLUSTER_DIR")
    if given:
        yield RunningCluster(Path(given).resolve())
        return
    data_dir = tmp_path_factory.mktemp("cluster")
    up = cluster_command("up", "--data-dir", str(data_dir), "--balancer-port", "0",
                         timeout=UP_TIMEOUT_S)
    try:
        assert up.returncode == 0, f"make cluster failed:\n{up.stdout}\n{up.stderr}"
        yield RunningCluster(data_dir)
    finally:
        down = cluster_command("down", "--data-dir", str(data_dir), timeout=DOWN_TIMEOUT_S)
        assert down.returncode == 0, down


@pytest.fixture
def healthy(cluster: RunningCluster) -> RunningCluster:
    """The cluster, once ``status`` says every part of it is healthy."""
    deadline = time.monotonic() + HEALTHY_TIMEOUT_S
    while True:
        result = cluster_command("status", "--data-dir", str(cluster.data_dir), timeout=120)
        if result.returncode == 0:
            return cluster
        if time.monotonic() > deadline:
            pytest.fail(f"the cluster is not healthy after {HEALTHY_TIMEOUT_S:.0f} s:\n"
                        f"{result.stdout}\n{result.stderr}")
        time.sleep(HEALTHY_POLL_S)


@pytest.fixture(scope="session")
def results() -> Iterator[list[FaultResult]]:
    """Every failover test appends its figures; written into docs/reliability.md at the end."""
    collected: list[FaultResult] = []
    yield collected
    if collected:
        write_results(REPO / "docs" / "reliability.md", collected)
