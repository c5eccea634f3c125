"""docs/reliability.md: the suite rewrites only its results block; the store-outage lock
really makes the SQLite store unavailable to every other connection, and only while held."""

import datetime
import sqlite3
from pathlib import Path

import pytest

from chaos.accounting import Tally
from chaos.faults import lock_database
from chaos.report import BEGIN, END, TITLE, block, write
from chaos.run import FaultResult, Settings


def result(fault: str, lost: int = 0) -> FaultResult:
    tally = Tally(accepted=10, unanswered=1, expected=20, delivered=20 - lost, lost=lost,
                  duplicates=0, out_of_order=2, recovery_s=1.25,
                  missing=((("s0", 3), "r0-off"),) if lost else ())
    return FaultResult(fault, tally, ["a note"], logs=Path("/tmp/x") if lost else None)


def test_block_has_the_table_the_settings_and_each_faults_meaning() -> None:
    text = block([result("router-kill"), result("nats-kill", lost=1)], Settings(),
                 "python -m chaos", now=datetime.datetime(2026, 1, 2, tzinfo=datetime.UTC))
    assert text.startswith(BEGIN) and text.rstrip().endswith(END)
    assert "Command: `python -m chaos`" in text and "2026-01-02T00:00:00+00:00" in text
    assert "| router-kill | 10 | 20 / 20 | 0 | 0 | 2 | 1.25 |" in text
    assert "| nats-kill | 10 | 19 / 20 | 1 | 0 | 2 | 1.25 |" in text
    assert "**router-kill**: SIGKILL the router" in text
    assert "s0#3 on r0-off" in text and "`/tmp/x`" in text and "1 send(s) never accepted" in text


def test_write_creates_the_file_then_replaces_only_the_block(tmp_path: Path) -> None:
    doc = tmp_path / "reliability.md"
    first = block([result("router-kill")], Settings(), "one")
    write(doc, first)
    assert doc.read_text() == TITLE + first
    doc.write_text("# Mine\n\nintro\n\n" + first + "\n## Findings\n\nhand-written\n")
    second = block([result("push-kill")], Settings(), "two")
    write(doc, second)
    text = doc.read_text()
    assert text == "# Mine\n\nintro\n\n" + second + "\n## Findings\n\nhand-written\n"
    assert "router-kill" not in text


def test_write_appends_the_block_to_a_file_without_markers(tmp_path: Path) -> None:
    doc = tmp_path / "reliability.md"
    doc.write_text("# Notes\n")
    text = block([result("router-kill")], Settings(), "one")
    write(doc, text)
    assert doc.read_text() == "# Notes\n\n" + text


def test_the_store_lock_refuses_reads_and_writes_until_released(tmp_path: Path) -> None:
    path = tmp_path / "courier.db"
    with sqlite3.connect(path) as setup:
        setup.execute("PRAGMA journal_mode=WAL")
        setup.execute("CREATE TABLE t (x INTEGER)")
        setup.execute("INSERT INTO t VALUES (1)")
    setup.close()
    holder = lock_database(path)
    other = sqlite3.connect(path, timeout=0.1)
    try:
        for statement in ("SELECT x FROM t", "INSERT INTO t VALUES (2)"):
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute(statement)
        holder.close()
        other.execute("INSERT INTO t VALUES (2)")
        assert other.execute("SELECT x FROM t ORDER BY x").fetchall() == [(1,), (2,)]
    finally:
        holder.close()
        other.close()


def test_the_store_lock_fails_while_another_connection_holds_the_database(
        tmp_path: Path) -> None:
    path = tmp_path / "courier.db"
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("CREATE TABLE t (x INTEGER)")
    writer.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(sqlite3.OperationalError):
            lock_database(path, timeout_s=0.1).close()
    finally:
        writer.close()
