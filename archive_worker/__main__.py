"""``python -m archive_worker``: run the archive worker until SIGINT/SIGTERM."""

from archive_worker.service import ArchiveWorker
from runtime.service import main

if __name__ == "__main__":
    main("archive_worker", ArchiveWorker, metrics_port="archive_port")
