"""``python -m infra.cluster``: bad subcommands and flags exit 2 with the reason; ``status`` of
a cluster that is not running exits 1 and says so; the pure parts (ring tokens, layout, PIDs)."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from infra.cassandra_node import ring_token
from infra.cluster import (
    LAYOUT_FILE,
    STATE_FILE,
    UsageError,
    alive,
    load_layout,
    new_layout,
    process_start,
)
from infra.nats_server import ClusterSettings

REPO = Path(__file__).resolve().parents[2]


def cluster(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "infra.cluster", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("args", "message"), [
    ((), "the following arguments are required"),
    (("start",), "invalid choice: 'start'"),
    (("up", "--balancer-port", "65536"), "must be within 0-65535"),
    (("up", "--balancer-port", "-1"), "must be within 0-65535"),
    (("up", "--balancer-port", "80a"), "not a port number: '80a'"),
    (("status", "--bogus"), "unrecognized arguments: --bogus"),
    (("down", "--balancer-port", "8090"), "unrecognized arguments: --balancer-port"),
])
def test_bad_command_line_exits_2(args: tuple[str, ...], message: str) -> None:
    result = cluster(*args)
    assert result.returncode == 2, result
    assert message in result.stderr


def test_status_of_a_stopped_cluster_exits_1(tmp_path: Path) -> None:
    result = cluster("status", "--data-dir", str(tmp_path))
    assert result.returncode == 1
    assert "no cluster is running in" in result.stderr


def test_status_with_a_stale_state_file_exits_1(tmp_path: Path) -> None:
    """The state of a supervisor that died (here: a PID whose start time does not match)."""
    stale = {"supervisor_pid": os.getpid(), "supervisor_started": 1, "phase": "ready",
             "processes": [], "nats_urls": [], "nats_monitors": [],
             "cassandra_contact_points": [], "keyspace": "courier", "partitions": 4,
             "credentials": str(tmp_path), "gateway_urls": []}
    (tmp_path / STATE_FILE).write_bytes(msgspec.json.encode(stale))
    result = cluster("status", "--data-dir", str(tmp_path))
    assert result.returncode == 1
    assert "no cluster is running in" in result.stderr


def test_down_of_a_stopped_cluster_says_so(tmp_path: Path) -> None:
    result = cluster("down", "--data-dir", str(tmp_path))
    assert result.returncode == 0
    assert "nothing to stop" in result.stdout


def test_up_with_a_kept_port_taken_exits_2(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        taken = sock.getsockname()[1]
        layout = msgspec.structs.replace(new_layout(0), balancer_port=taken)
        (tmp_path / LAYOUT_FILE).write_bytes(msgspec.json.encode(layout))
        result = cluster("up", "--data-dir", str(tmp_path), "--balancer-port", "0")
    assert result.returncode == 2, result
    assert f"port {taken} of the balancer (--balancer-port) is taken" in result.stderr
    assert not (tmp_path / STATE_FILE).exists()  # nothing was started


def test_layout_is_kept_between_ups(tmp_path: Path) -> None:
    first = load_layout(tmp_path, 0)
    assert load_layout(tmp_path, 0) == first
    ports = [first.cql_port, first.storage_port, first.balancer_port, *first.ports.values(),
             *(p for node in first.nats for p in (node.client, node.route, node.monitor))]
    assert len(set(ports)) == len(ports)


def test_layout_refuses_a_taken_port(tmp_path: Path) -> None:
    layout = load_layout(tmp_path, 0)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", layout.nats[1].route))
        sock.listen()
        with pytest.raises(UsageError, match=f"port {layout.nats[1].route} of NATS node 2"):
            load_layout(tmp_path, 0)


def test_ring_tokens_are_evenly_spaced() -> None:
    tokens = [ring_token(index, 3) for index in range(3)]
    assert tokens[0] == -2**63
    assert tokens[1] - tokens[0] == tokens[2] - tokens[1] == 2**64 // 3
    assert tokens[2] < 2**63
    with pytest.raises(ValueError, match="outside a ring of 3"):
        ring_token(3, 3)
    with pytest.raises(ValueError, match="outside a ring of 3"):
        ring_token(-1, 3)


def test_a_reused_pid_is_not_ours() -> None:
    started = process_start(os.getpid())
    assert started is not None
    assert alive(os.getpid(), started)
    assert not alive(os.getpid(), started + 1)
    assert not alive(None, started)


def test_nats_cluster_block_routes_to_every_node() -> None:
    block = ClusterSettings(server_name="n2", port=6002, routes=(6001, 6002, 6003)).block(
        "127.0.0.1")
    assert 'server_name: "n2"' in block
    assert 'listen: "127.0.0.1:6002"' in block
    for port in (6001, 6002, 6003):
        assert f'"nats-route://127.0.0.1:{port}"' in block
