"""Several processes opening one new SQLite file at once (storage workers and the archive
worker of ``make run --storage-workers 2``): each migration is applied once. Before, two
read the same version and both applied the next one ("no such column: floor" at start)."""

import sqlite3
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OPEN = """
import asyncio, sys
from storage_worker.store.sqlite import SqliteStore
async def main():
    store = SqliteStore(sys.argv[1], partitions=4)
    await store.open()
    await store.close()
asyncio.run(main())
"""


def test_processes_opening_one_new_file_migrate_it_once(tmp_path: Path) -> None:
    path = tmp_path / "courier.db"
    for _ in range(3):  # a race can be lucky: several rounds on fresh files
        path.unlink(missing_ok=True)
        starts = [subprocess.Popen([sys.executable, "-c", OPEN, str(path)], cwd=REPO,
                                   stderr=subprocess.PIPE, text=True) for _ in range(4)]
        try:
            for process in starts:
                _, err = process.communicate(timeout=120)
                assert process.returncode == 0, err
        finally:  # a migration that deadlocked must not outlive the test
            for process in starts:
                if process.poll() is None:
                    process.kill()
                    process.communicate()
        with sqlite3.connect(path) as db:
            versions = [row[0] for row in db.execute("SELECT version FROM schema_version")]
        assert versions == sorted(set(versions)) and versions[0] == 1
