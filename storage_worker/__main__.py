"""``python -m storage_worker``: run the storage worker until SIGINT/SIGTERM."""

from runtime.config import load_config_or_exit
from runtime.logging import configure_logging
from runtime.metrics import serve_metrics
from runtime.service import run
from storage_worker.service import StorageWorker
from storage_worker.store.base import retention_policy
from storage_worker.store.factory import create_store


def main() -> None:
    config = load_config_or_exit()
    configure_logging(config.log, "storage_worker")
    serve_metrics(config.metrics.host, config.metrics.storage_port)
    store = create_store(config.store, retention_policy(config.retention))
    run(StorageWorker(config, store))


if __name__ == "__main__":
    main()
