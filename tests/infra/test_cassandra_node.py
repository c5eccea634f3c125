"""Tests for infra.cassandra_node: a real Cassandra node that keeps its data across a restart."""

from pathlib import Path

import pytest

from infra.cassandra_node import CassandraNode, fetch, main

KEYSPACE_CQL = (
    "CREATE KEYSPACE chat WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}"
)
TABLE_CQL = "CREATE TABLE chat.messages (room text, seq int, body text, PRIMARY KEY (room, seq))"
INSERT_CQL = "INSERT INTO chat.messages (room, seq, body) VALUES (%s, %s, %s)"
SELECT_CQL = "SELECT seq, body FROM chat.messages WHERE room = %s"


@pytest.mark.cassandra
@pytest.mark.timeout(900)  # a cold fetch() downloads ~70 MB with Maven first
def test_node_serves_cql_and_keeps_data_across_restart(tmp_path: Path) -> None:
    lib_dir = fetch()
    with CassandraNode(tmp_path / "cassandra", lib_dir=lib_dir) as node:
        host, port = node.contact_point.split(":")
        assert (host, int(port)) == ("127.0.0.1", node.native_port)
        with node.session() as session:
            session.execute(KEYSPACE_CQL)
            session.execute(TABLE_CQL)
            session.execute(INSERT_CQL, ("room-1", 1, "hello"))
            rows = list(session.execute(SELECT_CQL, ("room-1",)))
        assert [(row.seq, row.body) for row in rows] == [(1, "hello")]

        ports = (node.native_port, node.storage_port)
        node.stop()
        assert not node.is_running
        assert node.pid is None
        node.start()
        assert node.wait_ready().startswith("5.0.")
        assert (node.native_port, node.storage_port) == ports

        with node.session("chat") as session:
            rows = list(session.execute(SELECT_CQL, ("room-1",)))
        assert [(row.seq, row.body) for row in rows] == [(1, "hello")]
    assert not node.is_running


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--port", "notanumber"], "not a port number: 'notanumber'"),
        (["--port", "70000"], "port must be 1-65535, got 70000"),
        (["--storage-port", "0"], "port must be 1-65535, got 0"),
        (["--heap", "lots"], "heap must look like 1G or 768M, got 'lots'"),
    ],
)
def test_run_rejects_bad_flag_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--data-dir", str(tmp_path), *flags])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_run_requires_a_data_dir(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["run"])
    assert exit_info.value.code == 2
    assert "--data-dir" in capsys.readouterr().err


def test_node_picks_two_distinct_free_ports_without_starting(tmp_path: Path) -> None:
    node = CassandraNode(tmp_path)
    assert node.native_port != node.storage_port
    assert node.contact_point == f"127.0.0.1:{node.native_port}"
    assert not node.is_running


def test_node_rejects_a_bad_heap(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="heap must look like"):
        CassandraNode(tmp_path, heap="1 gigabyte")
